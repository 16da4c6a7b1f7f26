package sandbox

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
)

// Launcher starts sandboxed processes: every spider, whichever way it is
// started, goes through Start.
type Launcher struct {
	cfg  Config
	uids *uidPool
	cg   *cgroups
	net  *hostNetwork // the isolated network; nil for the host's
	// root: the system part of every sandbox's root, resolved once.
	root []source
	warm *warmPool // nil unless Config.Warm (and the host's network)
}

// NewLauncher checks cfg and prepares what the sandbox needs (uid locks,
// the parent cgroups). A disabled Config gives a launcher that runs
// processes directly, in their own process group.
func NewLauncher(cfg Config) (*Launcher, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Network == "" {
		cfg.Network = NetworkHost
	}
	l := &Launcher{cfg: cfg}
	if !cfg.Enabled {
		return l, nil
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("the spider sandbox needs the worker to run as root (to create namespaces, cgroups and switch to the job uids); run it as root or set SCRAPETHIS_SANDBOX=off")
	}
	var err error
	if l.uids, err = newUIDPool(cfg.LockDir, cfg.UIDFirst, cfg.UIDLast); err != nil {
		return nil, fmt.Errorf("the spider sandbox cannot keep uid locks: %w", err)
	}
	if l.cg, err = detectCgroups(); err != nil {
		return nil, fmt.Errorf("the spider sandbox cannot limit memory and processes: %w", err)
	}
	if cfg.Network == NetworkIsolated {
		log := cfg.Log
		if log == nil {
			log = slog.Default()
		}
		if l.net, err = setupHostNetwork(cfg, l.uids.dir, log); err != nil {
			return nil, fmt.Errorf("%w; set SCRAPETHIS_SANDBOX_NETWORK=host to share the host's network", err)
		}
	}
	if cfg.Network == NetworkHost && (len(cfg.PlatformPorts) > 0 || len(cfg.NetworkDeny) > 0) {
		if err := guardPlatform(cfg, l.uids.dir); err != nil {
			return nil, fmt.Errorf("%w; the sandbox cannot keep jobs from the platform's Postgres and Redis", err)
		}
	}
	if l.root, err = systemRoot(); err != nil {
		return nil, fmt.Errorf("the spider sandbox cannot find the system directories: %w", err)
	}
	if cfg.Warm && l.net == nil {
		log := cfg.Log
		if log == nil {
			log = slog.Default()
		}
		if l.warm, err = newWarmPool(l, log); err != nil {
			log.Warn("sandbox: no warm sandboxes here; every job starts its own init", "err", err)
		}
	}
	return l, nil
}

// Close removes what the launcher keeps between jobs (its idle cgroups and
// warm inits); cgroups and inits of running jobs go when their jobs end.
// Starting more after Close works, without reuse.
func (l *Launcher) Close() error {
	if l.cg == nil {
		return nil
	}
	if l.warm != nil {
		l.warm.close()
	}
	return l.cg.close()
}

// Enabled reports whether processes run sandboxed.
func (l *Launcher) Enabled() bool { return l.cfg.Enabled }

// Command is what to run: an absolute Path as seen inside the sandbox (the
// system directories and the policy's binds are at their host paths), its
// argv and its whole environment.
type Command struct {
	Path string
	Args []string
	Env  []string
	// Stdout and Stderr receive the process's output; nil is /dev/null.
	Stdout, Stderr *os.File
}

// request is what the launcher sends the init on its policy pipe.
type request struct {
	Policy Policy
	// Root is the system part of the sandbox's root (Launcher.root).
	Root []source
	Path string
	Args []string
	Env  []string
	// Adopt: run nothing; once the sandbox is built, say "ready" and hold
	// it (reaping, forwarding signals) until the policy pipe closes. The
	// spider is forked into it (see StartForked).
	Adopt bool
}

// Process is one started sandbox (or, with the sandbox off, one process
// group).
type Process struct {
	cmd     *exec.Cmd
	policy  Policy
	status  *os.File // the init's report of how the spider ended
	cg      *jobCgroup
	lease   *uidLease
	net     *jobNet // the isolated network's veth pair
	tempDir string  // sandbox off: the job directory on the host

	// Forked (StartForked): the spider's pid, the worker's child by
	// adoption; with the sandbox on, the open policy pipe whose close ends
	// the init, and the init's status lines.
	forked      int
	policyW     *os.File
	statusLines *bufio.Reader

	// Warm (see warm.go): the init that runs the job, the spider's pid
	// (its process group's), the pool the init goes back to, and whether
	// the job's code was the init's last job's, still mounted.
	warm     *warmInit
	warmPid  int
	pool     *warmPool
	keptCode bool
}

// Start starts c under p. With the sandbox on, it takes a uid for the job,
// creates its cgroups, starts the init in new namespaces as the leader of a
// new process group, moves it into the cgroups, and only then hands it the
// policy, so the spider never runs outside its limits.
func (l *Launcher) Start(p Policy, c Command) (*Process, error) {
	if !l.cfg.Enabled {
		return l.startDirect(c)
	}
	if proc, ok, err := l.startWarmJob(p, c); ok {
		return proc, err
	}
	return l.sandboxed(p, func(p Policy, cg *jobCgroup) (*Process, error) { return l.startInit(p, c, cg) })
}

// sandboxed takes a uid for the job and creates its cgroups, then starts
// its init with start; on failure it gives both back.
func (l *Launcher) sandboxed(p Policy, start func(Policy, *jobCgroup) (*Process, error)) (*Process, error) {
	lease, err := l.uids.acquire()
	if err != nil {
		return nil, err
	}
	p.UID, p.GID = lease.uid, lease.uid
	cg, err := l.cg.create(cgroupName(p.Name, lease.uid), p.Limits)
	if err != nil {
		lease.release()
		return nil, err
	}
	proc, err := start(p, cg)
	if err != nil {
		cg.remove()
		lease.release()
		return nil, err
	}
	proc.lease = lease
	return proc, nil
}

func cgroupName(name string, uid int) string {
	clean := strings.Map(func(r rune) rune {
		if r == '/' || r == '.' || r < ' ' {
			return '_'
		}
		return r
	}, name)
	return clean + "-" + strconv.Itoa(uid)
}

func (l *Launcher) startInit(p Policy, c Command, cg *jobCgroup) (*Process, error) {
	return l.startInitRequest(p, c, cg, false)
}

// startInitRequest starts the init; an adopting one keeps its policy pipe
// open in Process.policyW.
func (l *Launcher) startInitRequest(p Policy, c Command, cg *jobCgroup, adopt bool) (*Process, error) {
	policyR, policyW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("sandbox pipe: %w", err)
	}
	defer policyR.Close()
	keepW := false
	defer func() {
		if !keepW {
			policyW.Close()
		}
	}()
	statusR, statusW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("sandbox pipe: %w", err)
	}
	defer statusW.Close()
	flags := uintptr(syscall.CLONE_NEWPID | syscall.CLONE_NEWNS | syscall.CLONE_NEWIPC | syscall.CLONE_NEWUTS)
	if l.net != nil {
		flags |= syscall.CLONE_NEWNET
	}
	cmd := &exec.Cmd{
		Path: l.cfg.InitArgv[0],
		Args: l.cfg.InitArgv,
		// Nothing of the worker's environment: the init's own environment
		// is readable in its /proc/1 (by root only, but still). One P: the
		// init waits for one process and forwards the odd signal, and a
		// Go runtime with fewer Ps starts and stops fewer threads (about
		// 0.3 ms of CPU a job on 2 cores).
		Env:        []string{"GOMAXPROCS=1"},
		Stdout:     c.Stdout,
		Stderr:     c.Stderr,
		ExtraFiles: []*os.File{policyR, statusW}, // fds 3 and 4
		SysProcAttr: &syscall.SysProcAttr{
			Cloneflags: flags,
			Setpgid:    true,
			Pdeathsig:  syscall.SIGKILL,
		},
	}
	if c.Stdout == nil {
		cmd.Stdout = nil
	}
	if c.Stderr == nil {
		cmd.Stderr = nil
	}
	if err := cmd.Start(); err != nil {
		statusR.Close()
		return nil, fmt.Errorf("start sandbox: %w", err)
	}
	proc := &Process{cmd: cmd, policy: p, status: statusR, cg: cg}
	fail := func(err error) (*Process, error) {
		cmd.Process.Kill()
		cmd.Wait()
		statusR.Close()
		return nil, err
	}
	if err := cg.join(cmd.Process.Pid); err != nil {
		return fail(err)
	}
	body, err := json.Marshal(request{Policy: p, Root: l.root, Path: c.Path, Args: c.Args, Env: c.Env, Adopt: adopt})
	if err != nil {
		return fail(fmt.Errorf("sandbox policy: %w", err))
	}
	policyR.Close()
	if _, err := policyW.Write(body); err != nil {
		return fail(fmt.Errorf("send sandbox policy: %w", err))
	}
	if l.net != nil {
		// The init builds the sandbox meanwhile, and waits for this.
		if proc.net, err = l.net.setupJobNetwork(cmd.Process.Pid, p.UID); err != nil {
			return fail(err)
		}
		if _, err := policyW.Write([]byte{netReady}); err != nil {
			proc.net.remove()
			return fail(fmt.Errorf("send sandbox network ready: %w", err))
		}
	}
	if adopt {
		keepW = true
		proc.policyW = policyW
	}
	return proc, nil
}

func (l *Launcher) startDirect(c Command) (*Process, error) {
	dir, err := os.MkdirTemp("", "scrapethis-job-")
	if err != nil {
		return nil, fmt.Errorf("job directory: %w", err)
	}
	cmd := &exec.Cmd{
		Path: c.Path,
		Args: c.Args,
		Env:  c.Env,
		Dir:  dir,
		// Its own process group, so that a stop reaches every child; and
		// SIGKILL if the worker dies.
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL},
	}
	if c.Stdout != nil {
		cmd.Stdout = c.Stdout
	}
	if c.Stderr != nil {
		cmd.Stderr = c.Stderr
	}
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return &Process{cmd: cmd, tempDir: dir}, nil
}

// Pid is the process group to signal: the init's (which forwards SIGTERM
// and SIGINT to the whole sandbox, and whose death kills it), or the
// spider's own with the sandbox off.
func (p *Process) Pid() int {
	if p.warm != nil {
		return p.warmPid
	}
	if p.cmd == nil {
		return p.forked
	}
	return p.cmd.Process.Pid
}

// Pids are this process's children of the caller's to wait for: the init
// or the spider, and a forked spider.
func (p *Process) Pids() []int {
	var out []int
	if p.cmd != nil {
		out = append(out, p.cmd.Process.Pid)
	}
	if p.forked > 0 {
		out = append(out, p.forked)
	}
	return out
}

// Forked reports whether the process was forked from a warm parent (see
// StartForked), and its pid.
func (p *Process) Forked() (int, bool) { return p.forked, p.forked > 0 }

// Warm reports whether the process runs in a warm, reused sandbox (see
// Config.Warm).
func (p *Process) Warm() bool { return p.warm != nil }

// UID is the uid the job runs as (0 with the sandbox off).
func (p *Process) UID() int { return p.policy.UID }

// Cgroups are the job's cgroup directories (none with the sandbox off).
// After Wait no process is left in them; they are removed, or kept for
// another job of the launcher (see Close).
func (p *Process) Cgroups() []string {
	if p.cg == nil {
		return nil
	}
	return append([]string(nil), p.cg.dirs...)
}

// Sandboxed reports whether the process runs in a sandbox; then the
// process group is gone as soon as Wait returns.
func (p *Process) Sandboxed() bool { return p.cg != nil }

// Result is how a process ended.
type Result struct {
	// Err is nil for exit status 0, an *ExitError for another status or a
	// signal, or why the sandbox could not run the process.
	Err error
	// OOMKills counts processes the kernel killed for the memory limit.
	OOMKills int
	// MemoryPeak is the most memory the job used, in bytes (0 if unknown).
	MemoryPeak int64
}

// MemoryExceeded reports whether the job hit its memory limit.
func (r Result) MemoryExceeded() bool { return r.OOMKills > 0 }

// ExitError is a process's wait status, as exec.ExitError has it.
type ExitError struct{ Status syscall.WaitStatus }

func (e *ExitError) Error() string {
	if e.Status.Signaled() {
		return "killed by signal " + e.Status.Signal().String()
	}
	return fmt.Sprintf("exit status %d", e.Status.ExitStatus())
}

// Sys is the syscall.WaitStatus, as (*os.ProcessState).Sys has it.
func (e *ExitError) Sys() any { return e.Status }

// Wait waits for the process to end and releases what it held: with the
// sandbox on, by then every process of the sandbox is gone (the init is
// PID 1 of its namespace), its cgroups are removed and its uid is free.
// An isolated job's veth pair goes with its network namespace, which the
// kernel tears down in the background within milliseconds (deleting it
// here would cost ~20 ms a job); the next job of the uid deletes a pair
// still there.
func (p *Process) Wait() Result {
	if p.forked > 0 {
		return p.waitForked()
	}
	if p.warm != nil {
		return p.waitWarm()
	}
	waitErr := p.cmd.Wait()
	if p.cg == nil {
		os.RemoveAll(p.tempDir)
		return Result{Err: waitErr}
	}
	defer p.lease.release()
	report, _ := io.ReadAll(io.LimitReader(p.status, 4096))
	p.status.Close()
	res := Result{Err: parseReport(string(report), waitErr)}
	res.OOMKills = p.cg.oomKills()
	res.MemoryPeak = p.cg.memoryPeak()
	if err := p.cg.release(res.OOMKills); err != nil && res.Err == nil {
		res.Err = err
	}
	return res
}

// parseReport reads the init's last word: "exit N", "signal N" or
// "error MESSAGE". With none (the init was killed), its own status stands.
func parseReport(report string, waitErr error) error {
	kind, rest, _ := strings.Cut(strings.TrimSpace(report), " ")
	n, convErr := strconv.Atoi(rest)
	switch {
	case kind == "exit" && convErr == nil:
		if n == 0 {
			return nil
		}
		return &ExitError{Status: syscall.WaitStatus(n << 8)}
	case kind == "signal" && convErr == nil:
		return &ExitError{Status: syscall.WaitStatus(n)}
	case kind == "error":
		return fmt.Errorf("sandbox: %s", rest)
	}
	var ee *exec.ExitError
	if errors.As(waitErr, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok {
			return &ExitError{Status: ws}
		}
	}
	if waitErr == nil {
		return errors.New("sandbox: the init ended without a report")
	}
	return waitErr
}
