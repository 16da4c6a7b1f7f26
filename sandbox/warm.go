package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Warm sandboxes (Config.Warm): the launcher keeps spare inits, started
// ahead in new PID, mount, IPC and UTS namespaces with the system part of
// the root built and /proc mounted, still root inside and holding nothing
// of any tenant (no job, no uid, the same scrubbed environment), each in
// cgroups of its own for its life (so that no job moves it: a cgroup v1
// migration costs a grace period of the kernel's). A job takes one (or,
// none being ready, starts a cold init as without Warm): the launcher
// sets the job's limits on the init's cgroups, then sends the job
// (uid, limits, argv, env, its stdout and stderr, and its code as detached
// read-only mounts made with open_tree on the host, since after
// pivot_root the init has no way to the host's paths and must not keep
// one; or, when the code is what the init's last job ran, nothing: it is
// still mounted). The init gives its job directory and /tmp (one tmpfs,
// emptied after every job) to the job's uid, moves the code under /spider
// (unmounting the last job's first, if other), sets the job's rlimits and
// forks the spider, which runs in the init's IPC namespace as the job's uid
// with no capabilities and no_new_privs: it inherits the cgroups and
// rlimits, so nothing of the job's ever runs outside them. When the spider
// ends the init reports its status, kills and reaps every process of the
// namespace, removes every SysV IPC object and POSIX message queue, empties
// the job directory and checks it is as built, and only then says "clean";
// the launcher checks that its cgroups hold nothing but the init, and gives
// it the next job (another tenant's, perhaps). An init retires after warmMaxJobs jobs, on any
// error, or if anything of a job is left; its cgroups go with it (back to
// the pool once empty).
//
// Not warm: the isolated network (a network namespace per job), the fork
// runner (StartForked), probes, CPU limits under warmMinCPUSeconds (the
// init's own CPU time counts against RLIMIT_CPU), and binds outside
// /spider other than the configured ones (bound into every warm root).

// warmSpares is how many idle warm inits a launcher keeps ready.
const warmSpares = 2

// warmMaxIdle bounds the idle inits: those the filler started and those
// that came back from a job. Up to it, as many stay as jobs have run at
// once, plus warmSpares: a burst of jobs that ends gives its inits to the
// next burst rather than retiring them for new ones.
const warmMaxIdle = 32

// warmMaxJobs is how many jobs one warm init runs before it retires.
const warmMaxJobs = 64

// warmMinCPUSeconds: a job with a lower RLIMIT_CPU gets a cold init.
const warmMinCPUSeconds = 600

// warmInit is one warm init, the launcher's child.
type warmInit struct {
	cmd *exec.Cmd
	// The launcher's end of the SOCK_SEQPACKET pair, non-blocking: a wait
	// for the init (a job's whole run) parks a goroutine in the runtime's
	// poller rather than holding a thread, and its P, in recvmsg.
	sock *os.File
	cg   *jobCgroup // the init's for its life, and its jobs'
	jobs int
	// code is what the init has mounted of the last job's code (it stays
	// until a job with other code comes).
	code []codeKey
	// retired: killed and reaped, with waitErr (see retire).
	retired bool
	waitErr error
}

// warmPool keeps up to warmSpares idle inits; its filler goroutine starts
// them, and Close waits for it.
type warmPool struct {
	l   *Launcher
	log *slog.Logger

	mu     sync.Mutex
	idle   []*warmInit
	busy   int       // inits running a job
	next   *warmInit // the one the next take gives if idle (PreferWarmInit, for tests)
	peak   int       // the most busy at once so far
	closed bool
	kick   chan struct{}
	stop   chan struct{}
	done   chan struct{}
}

// newWarmPool starts the pool's filler, or says why warm inits cannot
// work here.
func newWarmPool(l *Launcher, log *slog.Logger) (*warmPool, error) {
	fd, err := unix.OpenTree(unix.AT_FDCWD, "/", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("open_tree (Linux 5.2): %w", err)
	}
	unix.Close(fd)
	if err := unix.MountSetattr(unix.AT_FDCWD, "/", 0, &unix.MountAttr{}); err != nil {
		return nil, fmt.Errorf("mount_setattr (Linux 5.12): %w", err)
	}
	w := &warmPool{l: l, log: log, kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	// The first init is started before the launcher is used, so that the
	// first job is warm too; if it cannot start, no job will be.
	first := make(chan error, 1)
	go w.fill(first)
	if err := <-first; err != nil {
		w.close()
		return nil, err
	}
	return w, nil
}

// fill keeps warmSpares idle inits, until close. It starts them from one
// locked thread: an init's parent-death signal follows the thread that
// forked it, and this one lives until close.
func (w *warmPool) fill(first chan<- error) {
	defer close(w.done)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	wi, err := w.l.startWarm()
	first <- err
	if err != nil {
		return
	}
	w.put(wi)
	for {
		w.mu.Lock()
		need := !w.closed && len(w.idle) < warmSpares
		w.mu.Unlock()
		if !need {
			select {
			case <-w.stop:
				return
			case <-w.kick:
			}
			continue
		}
		wi, err := w.l.startWarm()
		if err == nil {
			w.put(wi)
			continue
		}
		w.log.Warn("sandbox: cannot start a warm init; jobs start cold meanwhile", "err", err)
		t := time.NewTimer(time.Second)
		select {
		case <-w.stop:
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// take is an idle init, or nil.
func (w *warmPool) take(code []Mount) *warmInit {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed || len(w.idle) == 0 {
		return nil
	}
	// One that has this code mounted (its sources are checked when the job
	// is sent), else the last one back unless it has other code and one
	// without any is idle: code a job may run again stays where it is.
	top := len(w.idle) - 1
	i, fresh := slices.Index(w.idle, w.next), -1
	for j := top; j >= 0 && i < 0; j-- {
		if w.idle[j].hasBinds(code) {
			i = j
			break
		}
		if fresh < 0 && len(w.idle[j].code) == 0 {
			fresh = j
		}
	}
	switch {
	case i >= 0:
	case len(w.idle[top].code) > 0 && fresh >= 0:
		i = fresh
	default:
		i = top
	}
	w.next = nil
	wi := w.idle[i]
	w.idle = append(w.idle[:i], w.idle[i+1:]...)
	w.busy++
	w.peak = max(w.peak, w.busy)
	select {
	case w.kick <- struct{}{}:
	default:
	}
	return wi
}

// giveBack takes back an init that take gave: idle again if the job left it
// clean, else retired.
func (w *warmPool) giveBack(wi *warmInit, clean bool) {
	w.mu.Lock()
	w.busy--
	w.mu.Unlock()
	if !clean {
		wi.retire()
		return
	}
	w.put(wi)
}

// put makes an init idle (on top: the next job takes it, and the filler
// need not start one), or retires it.
func (w *warmPool) put(wi *warmInit) {
	w.mu.Lock()
	if w.closed || wi.jobs >= warmMaxJobs || len(w.idle) >= min(warmSpares+w.peak, warmMaxIdle) {
		w.mu.Unlock()
		wi.retire()
		return
	}
	w.idle = append(w.idle, wi)
	w.mu.Unlock()
}

// close ends the idle inits and the filler; busy ones retire as their
// jobs end.
func (w *warmPool) close() {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return
	}
	w.closed = true
	idle := w.idle
	w.idle = nil
	w.mu.Unlock()
	close(w.stop)
	<-w.done
	for _, wi := range idle {
		wi.retire()
	}
}

// retire kills the init (and with it its namespace) and reaps it, then
// gives back its cgroups, once: again, it returns the same.
func (wi *warmInit) retire() error {
	if !wi.retired {
		wi.retired = true
		wi.sock.Close()
		wi.cmd.Process.Kill()
		wi.waitErr = wi.cmd.Wait()
		if wi.cg != nil {
			wi.cg.release(0)
		}
	}
	return wi.waitErr
}

// send sends a message with fds.
func (wi *warmInit) send(msg []byte, fds []int) error {
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	rc, err := wi.sock.SyscallConn()
	if err != nil {
		return err
	}
	var sendErr error
	if err := rc.Write(func(fd uintptr) bool {
		sendErr = unix.Sendmsg(int(fd), msg, oob, nil, 0)
		return sendErr != unix.EAGAIN
	}); err != nil {
		return err
	}
	return sendErr
}

// recv is the init's next message; errWarmGone when it is gone.
func (wi *warmInit) recv() (string, error) {
	msg, _, err := wi.recvCreds()
	return msg, err
}

// recvCreds is the init's next message and the pid of its credentials
// (SO_PASSCRED), as this process sees it: 0 if none.
func (wi *warmInit) recvCreds() (string, int, error) {
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(unix.SizeofUcred))
	rc, err := wi.sock.SyscallConn()
	if err != nil {
		return "", 0, fmt.Errorf("%w: %v", errWarmGone, err)
	}
	var n, oobn int
	var recvErr error
	err = rc.Read(func(fd uintptr) bool {
		n, oobn, _, _, recvErr = unix.Recvmsg(int(fd), buf, oob, 0)
		return recvErr != unix.EAGAIN && recvErr != unix.EINTR
	})
	if err == nil {
		err = recvErr
	}
	if err != nil {
		return "", 0, fmt.Errorf("%w: %v", errWarmGone, err)
	}
	if n == 0 {
		return "", 0, errWarmGone
	}
	pid := 0
	if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
		for _, m := range msgs {
			if c, err := unix.ParseUnixCredentials(&m); err == nil {
				pid = int(c.Pid)
			}
		}
	}
	return string(buf[:n]), pid, nil
}

var errWarmGone = errors.New("the warm init is gone")

// startWarm starts one warm init and waits until it has built its root.
func (l *Launcher) startWarm() (*warmInit, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socketpair: %w", err)
	}
	child := os.NewFile(uintptr(fds[1]), "warm")
	cmd := &exec.Cmd{
		Path: l.cfg.InitArgv[0],
		Args: l.cfg.InitArgv,
		// Nothing of the worker's, as startInitRequest. Two Ps: with one,
		// every blocking syscall of the init (and it mostly waits) has
		// sysmon take the P back and poll every 20us for a while after;
		// the second P's start-up is paid once per warmMaxJobs jobs.
		Env:        []string{"GOMAXPROCS=2"},
		ExtraFiles: []*os.File{child}, // fd 3
		SysProcAttr: &syscall.SysProcAttr{
			Cloneflags: syscall.CLONE_NEWPID | syscall.CLONE_NEWNS | syscall.CLONE_NEWIPC | syscall.CLONE_NEWUTS,
			Setpgid:    true,
			Pdeathsig:  syscall.SIGKILL,
		},
	}
	err = cmd.Start()
	child.Close()
	if err != nil {
		unix.Close(fds[0])
		return nil, fmt.Errorf("start warm init: %w", err)
	}
	wi := &warmInit{cmd: cmd}
	err = unix.SetsockoptInt(fds[0], unix.SOL_SOCKET, unix.SO_PASSCRED, 1)
	if err == nil {
		err = unix.SetNonblock(fds[0], true)
	}
	wi.sock = os.NewFile(uintptr(fds[0]), "warm-init")
	if err != nil {
		wi.retire()
		return nil, fmt.Errorf("warm init socket: %w", err)
	}
	// Its cgroups, before it does anything: what it builds is charged there.
	cg, err := l.cg.create(cgroupName("warm", cmd.Process.Pid), l.cfg.Defaults)
	if err != nil {
		wi.retire()
		return nil, err
	}
	wi.cg = cg
	if err := cg.join(cmd.Process.Pid); err != nil {
		wi.retire()
		return nil, err
	}
	base := Policy{Name: "warm", Network: NetworkHost, Limits: l.cfg.Defaults, Dir: JobDir}
	for _, b := range l.cfg.Binds {
		base.Binds = append(base.Binds, Mount{Source: b, Target: b})
	}
	body, err := json.Marshal(warmStart{Root: l.root, Policy: base})
	if err == nil {
		err = wi.send(body, nil)
	}
	if err != nil {
		wi.retire()
		return nil, fmt.Errorf("send warm init its root: %w", err)
	}
	wi.sock.SetReadDeadline(time.Now().Add(initReadyTimeout))
	msg, err := wi.recv()
	wi.sock.SetReadDeadline(time.Time{})
	if err != nil || msg != "ready" {
		wi.retire()
		if why, ok := strings.CutPrefix(msg, "error "); ok {
			return nil, fmt.Errorf("sandbox: %s", why)
		}
		return nil, fmt.Errorf("sandbox: the warm init did not build its root: %v", err)
	}
	return wi, nil
}

// warmable reports whether a job can run in a warm init, and its binds
// that are not in every warm root (the code).
func (l *Launcher) warmable(p Policy) ([]Mount, bool) {
	if l.warm == nil || p.Probe || p.Network != NetworkHost || p.ResolvConf != "" || p.Dir != JobDir {
		return nil, false
	}
	if p.Limits.CPUSeconds > 0 && p.Limits.CPUSeconds < warmMinCPUSeconds {
		return nil, false
	}
	configured := map[string]bool{}
	for _, b := range l.cfg.Binds {
		configured[b] = true
	}
	var code []Mount
	for _, m := range p.Binds {
		if m.Source == m.Target && configured[m.Source] {
			continue
		}
		code = append(code, m)
	}
	for _, m := range code {
		if m.Target == CodeDir {
			if len(code) > 1 {
				return nil, false // nothing may be made inside a bind
			}
			continue
		}
		if !strings.HasPrefix(m.Target, CodeDir+"/") || filepath.Clean(m.Target) != m.Target {
			return nil, false
		}
		for _, o := range code {
			if o.Target != m.Target && strings.HasPrefix(m.Target, o.Target+"/") {
				return nil, false
			}
		}
	}
	return code, true
}

// codeKey is what one code bind of a warm init shows: its source and
// target, and the file or directory the mount holds (a source replaced by
// a rename, or a symbolic link pointed elsewhere, is another).
type codeKey struct {
	Source, Target string
	Dev, Ino       uint64
}

// hasBinds reports whether wi's code mounts are code's binds (whether
// their sources are still what is mounted is showsCode's to say).
func (wi *warmInit) hasBinds(code []Mount) bool {
	if len(code) == 0 || len(code) != len(wi.code) {
		return false
	}
	for i, m := range code {
		if wi.code[i].Source != m.Source || wi.code[i].Target != m.Target {
			return false
		}
	}
	return true
}

// showsCode reports whether wi has code mounted as a fresh copy of it would
// be: the same binds, each source still the file or directory mounted.
func (wi *warmInit) showsCode(code []Mount) bool {
	if !wi.hasBinds(code) {
		return false
	}
	for i, m := range code {
		var st unix.Stat_t
		if k := wi.code[i]; unix.Stat(m.Source, &st) != nil || uint64(st.Dev) != k.Dev || st.Ino != k.Ino {
			return false
		}
	}
	return true
}

// codeTrees makes a detached read-only copy of each code bind: the warm
// init moves them into its root. keys say what each holds.
func codeTrees(code []Mount) (fds []int, trees []warmTree, keys []codeKey, err error) {
	defer func() {
		if err != nil {
			closeAll(fds)
			fds = nil
		}
	}()
	ro := &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV}
	for _, m := range code {
		fd, err := unix.OpenTree(unix.AT_FDCWD, m.Source, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
		if err != nil {
			return fds, nil, nil, fmt.Errorf("build sandbox: bind %s: %w", m.Source, err)
		}
		fds = append(fds, fd)
		// What the mount holds, not what the path names a moment later.
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return fds, nil, nil, fmt.Errorf("build sandbox: bind %s: %w", m.Source, err)
		}
		if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, ro); err != nil {
			return fds, nil, nil, fmt.Errorf("build sandbox: bind %s read-only: %w", m.Source, err)
		}
		trees = append(trees, warmTree{Target: m.Target, Dir: st.Mode&unix.S_IFMT == unix.S_IFDIR})
		keys = append(keys, codeKey{Source: m.Source, Target: m.Target, Dev: uint64(st.Dev), Ino: st.Ino})
	}
	return fds, trees, keys, nil
}

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// startWarmJob runs c under p in an idle warm init; ok is false when none
// is ready or the job cannot be warm (then Start starts a cold init).
func (l *Launcher) startWarmJob(p Policy, c Command) (proc *Process, ok bool, err error) {
	code, warmOK := l.warmable(p)
	if !warmOK {
		return nil, false, nil
	}
	wi := l.warm.take(code)
	if wi == nil {
		return nil, false, nil
	}
	lease, err := l.uids.acquire()
	if err != nil {
		l.warm.giveBack(wi, true) // nothing of a job reached it
		return nil, true, err
	}
	p.UID, p.GID = lease.uid, lease.uid
	// The init's cgroups take the job's limits; the spider it forks
	// inherits them. An init whose cgroups cannot (a lower memory limit
	// than it holds, say) retires, and a cold init runs the job.
	if err := wi.cg.reset(p.Limits); err != nil {
		lease.release()
		l.warm.giveBack(wi, false)
		return nil, false, nil
	}
	proc, err = l.runWarmJob(wi, p, c, code)
	if err != nil {
		lease.release()
		if errors.Is(err, errWarmGone) {
			return nil, false, nil // it died idle: nothing of the job ran
		}
		return nil, true, err
	}
	proc.lease = lease
	return proc, true, nil
}

// runWarmJob hands the job to wi, whose cgroups have the job's limits.
func (l *Launcher) runWarmJob(wi *warmInit, p Policy, c Command, code []Mount) (*Process, error) {
	fail := func(err error) (*Process, error) {
		l.warm.giveBack(wi, false)
		return nil, err
	}
	// The same code as the init's last job (a spider run again, a
	// version's next job): it stays mounted, and no unmount (with its RCU
	// grace period) nor mount is paid.
	keep := wi.showsCode(code)
	var fds []int
	var trees []warmTree
	var keys []codeKey
	if !keep {
		var err error
		if fds, trees, keys, err = codeTrees(code); err != nil {
			return fail(err)
		}
	}
	treeFDs := fds
	job := warmJob{Policy: p, Path: c.Path, Args: c.Args, Env: c.Env, Stdout: -1, Stderr: -1, KeepCode: keep}
	for i := range trees {
		trees[i].FD = i
	}
	if c.Stdout != nil {
		job.Stdout = len(fds)
		fds = append(fds, int(c.Stdout.Fd()))
	}
	if c.Stderr != nil {
		job.Stderr = len(fds)
		fds = append(fds, int(c.Stderr.Fd()))
	}
	job.Trees = trees
	body, err := json.Marshal(job)
	if err == nil && len(body) > maxWarmMessage {
		err = fmt.Errorf("%w: the job's request is %d bytes", errWarmGone, len(body))
	}
	if err == nil {
		err = wi.send(body, fds)
	}
	closeAll(treeFDs) // the init has its own copies now
	runtime.KeepAlive(c.Stdout)
	runtime.KeepAlive(c.Stderr)
	if err != nil {
		return fail(fmt.Errorf("%w: send the job: %v", errWarmGone, err))
	}
	if !keep {
		wi.code = keys // or the init fails the job, and retires
	}
	msg, credPid, err := wi.recvCreds()
	if err != nil {
		return fail(err)
	}
	nsText, started := strings.CutPrefix(msg, "started ")
	if !started {
		if why, isErr := strings.CutPrefix(msg, "error "); isErr {
			return fail(fmt.Errorf("sandbox: %s", why))
		}
		return fail(fmt.Errorf("sandbox: the warm init said %q", msg))
	}
	pid := 0
	if ns, _ := strconv.Atoi(nsText); ns > 0 {
		// The kernel translated the pid of the message's credentials;
		// the init may not be trusted more than the spider, so the pid
		// must be the init's child.
		if pid = credPid; pid <= 0 || !childOf(pid, wi.cmd.Process.Pid) {
			return fail(fmt.Errorf("sandbox: the spider (pid %d in its sandbox, %d here) is not the init's child", ns, pid))
		}
	}
	if err := wi.send([]byte("go"), nil); err != nil {
		return fail(fmt.Errorf("sandbox: %v", err))
	}
	wi.jobs++
	return &Process{policy: p, cg: wi.cg, warm: wi, warmPid: pid, pool: l.warm, keptCode: keep}, nil
}

// childOf reports whether pid's parent is ppid.
func childOf(pid, ppid int) bool {
	b, err := readSmall("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return false
	}
	f := strings.Fields(string(b[i+1:])) // state ppid ...
	return len(f) > 1 && f[1] == strconv.Itoa(ppid)
}

// waitWarm waits for a warm job: its report, then the init's word that
// nothing of the job is left, which its cgroups must confirm (they hold
// the init alone); the init goes back to the pool, its cgroups with it.
func (p *Process) waitWarm() Result {
	defer p.lease.release()
	wi := p.warm
	var res Result
	report, err := wi.recv()
	clean := false
	if err != nil {
		res.Err = parseReport("", wi.retire())
	} else {
		res.Err = parseReport(report, nil)
		msg, err := wi.recv()
		switch {
		case err != nil:
		case msg == "clean":
			clean = p.cg.holdsOnly(wi.cmd.Process.Pid)
		default:
			p.pool.log.Warn("sandbox: a warm init retired", "why", strings.TrimPrefix(msg, "retire "))
		}
	}
	res.OOMKills = p.cg.oomKills()
	p.cg.oomBase += res.OOMKills // the next job counts its own
	res.MemoryPeak = p.cg.memoryPeak()
	p.pool.giveBack(wi, clean)
	return res
}
