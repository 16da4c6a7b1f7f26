package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// InitCommand is the argv[1] that makes the binary run RunInit.
const InitCommand = "sandbox-init"

// Init runs the sandbox init and exits if this process was started as one
// (argv[1] is InitCommand); otherwise it returns. main calls it first.
func Init() {
	if len(os.Args) > 1 && os.Args[1] == InitCommand {
		os.Exit(RunInit())
	}
}

// The init's pipes, as the launcher passes them.
const (
	policyFD = 3
	statusFD = 4
)

// RunInit is the sandbox's init. Started by the launcher in new namespaces,
// it reads its request on fd 3, builds the sandbox, runs the spider as the
// job's uid, forwards SIGTERM/SIGINT/SIGHUP to every process of the
// sandbox, reaps them all, and reports how the spider ended on fd 4 as soon
// as the spider itself ends. Its exit then ends the PID namespace: the
// kernel kills every process left in it.
func RunInit() int {
	// Privileges are dropped for this thread (no_new_privs, capability
	// bounding set), and the spider is forked from it.
	runtime.LockOSThread()
	syscall.CloseOnExec(policyFD)
	if isSocket(policyFD) {
		return runWarm(policyFD) // a warm init (see warm.go)
	}
	syscall.CloseOnExec(statusFD)
	status := os.NewFile(statusFD, "status")
	report := func(format string, args ...any) {
		fmt.Fprintf(status, format, args...)
	}
	fail := func(step string, err error) int {
		msg := fmt.Sprintf("%s: %v", step, err)
		fmt.Fprintln(os.Stderr, "[sandbox] "+msg)
		report("error %s", msg)
		return 125
	}
	var req request
	f := os.NewFile(policyFD, "policy")
	dec := json.NewDecoder(f)
	err := dec.Decode(&req)
	isolated := req.Policy.Network == NetworkIsolated
	if !req.Adopt && !isolated {
		f.Close()
	}
	if err != nil {
		return fail("read policy", err)
	}
	if os.Getpid() != 1 {
		return fail("start", errors.New("the init is not PID 1 of a new PID namespace"))
	}
	p := req.Policy
	if err := build(p, req.Root); err != nil {
		return fail("build sandbox", err)
	}
	if err := limit(p.Limits); err != nil {
		return fail("set limits", err)
	}
	if err := lockDown(); err != nil {
		return fail("drop privileges", err)
	}
	if isolated {
		// Nothing of the job's runs before the launcher has wired its
		// network namespace.
		if err := awaitNetwork(io.MultiReader(dec.Buffered(), f)); err != nil {
			return fail("network", err)
		}
		if !req.Adopt {
			f.Close()
		}
	}
	if p.Probe {
		if err := becomeUser(p.UID, p.GID); err != nil {
			return fail("drop privileges", err)
		}
		report("exit 0")
		return 0
	}
	if req.Adopt {
		return adopt(f, report)
	}

	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	cmd := &exec.Cmd{
		Path:   req.Path,
		Args:   req.Args,
		Env:    req.Env,
		Dir:    p.Dir,
		Stdin:  os.Stdin,
		Stdout: os.Stdout,
		Stderr: os.Stderr,
		SysProcAttr: &syscall.SysProcAttr{
			Credential: &syscall.Credential{Uid: uint32(p.UID), Gid: uint32(p.GID), Groups: []uint32{}},
			// Its own group: the worker's SIGTERM to the init's group
			// reaches the init alone, which forwards it once to all.
			Setpgid:   true,
			Pdeathsig: syscall.SIGKILL,
		},
	}
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "[sandbox] start failed:", err)
		report("exit 127")
		return 127
	}
	spider := cmd.Process.Pid
	go func() {
		for sig := range sigs {
			unix.Kill(-1, sig.(syscall.Signal)) // every process of the namespace but the init
		}
	}()
	// PID 1 reaps every orphan of the namespace; the spider's status is the
	// job's.
	ws, err := reapUntil(spider)
	if err != nil {
		return fail("wait", err)
	}
	if ws.Signaled() {
		report("signal %d", int(ws.Signal()))
		return 128 + int(ws.Signal())
	}
	report("exit %d", ws.ExitStatus())
	return ws.ExitStatus()
}

// reapUntil reaps every child and orphan of the namespace (the init is
// PID 1) until the spider ends, and returns how it ended.
func reapUntil(spider int) (unix.WaitStatus, error) {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, 0, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || pid == spider {
			return ws, err
		}
	}
}

// limit sets the rlimits the spider inherits. RLIMIT_NPROC counts the
// processes of the job's uid, which no other job shares.
func limit(l Limits) error {
	set := func(res int, n uint64) error {
		if err := syscall.Setrlimit(res, &syscall.Rlimit{Cur: n, Max: n}); err != nil {
			return fmt.Errorf("rlimit %d: %w", res, err)
		}
		return nil
	}
	lims := [][2]uint64{
		{unix.RLIMIT_NPROC, uint64(l.Procs)},
		{unix.RLIMIT_NOFILE, uint64(l.NoFile)},
		{unix.RLIMIT_FSIZE, uint64(l.DiskMB) << 20},
		{unix.RLIMIT_CORE, 0},
	}
	if l.CPUSeconds > 0 {
		lims = append(lims, [2]uint64{unix.RLIMIT_CPU, uint64(l.CPUSeconds)})
	}
	for _, x := range lims {
		if err := set(int(x[0]), x[1]); err != nil {
			return err
		}
	}
	return nil
}

// lockDown sets no_new_privs and empties the capability bounding set of
// this (locked) thread, which the spider is forked from: no setuid binary
// or file capability can give it back anything. Its own capabilities go
// when it switches to the job's uid.
func lockDown() error {
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("no_new_privs: %w", err)
	}
	for c := 0; c <= 63; c++ {
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil {
			if errors.Is(err, unix.EINVAL) {
				break // past the last capability of this kernel
			}
			return fmt.Errorf("drop capability %d: %w", c, err)
		}
	}
	return nil
}

// becomeUser drops the whole init to uid:gid (Probe only).
func becomeUser(uid, gid int) error {
	if err := syscall.Setgroups(nil); err != nil {
		return err
	}
	if err := syscall.Setresgid(gid, gid, gid); err != nil {
		return err
	}
	if err := syscall.Setresuid(uid, uid, uid); err != nil {
		return err
	}
	if os.Getuid() != uid {
		return errors.New("uid " + strconv.Itoa(uid) + " did not stick")
	}
	return nil
}

// adopt holds a built sandbox for a spider forked into it from outside
// (see Launcher.StartForked): that spider is the worker's child, not the
// init's, and the worker waits for it. The init reaps what becomes its
// child (the spider's orphans), forwards SIGTERM/SIGINT/SIGHUP to every
// process of the sandbox, and ends when the launcher closes the policy
// pipe: then the kernel kills whatever is left in the namespace.
func adopt(policy *os.File, report func(string, ...any)) int {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGCHLD)
	report("ready\n")
	closed := make(chan struct{})
	go func() {
		io.Copy(io.Discard, policy)
		close(closed)
	}()
	for {
		select {
		case sig := <-sigs:
			if sig != syscall.SIGCHLD {
				unix.Kill(-1, sig.(syscall.Signal))
				continue
			}
			for {
				var ws unix.WaitStatus
				pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
				if errors.Is(err, unix.EINTR) {
					continue
				}
				if err != nil || pid <= 0 {
					break
				}
			}
		case <-closed:
			report("exit 0")
			return 0
		}
	}
}

// awaitNetwork waits for the launcher's word that the job's network is up
// (the isolated network); the pipe's end instead means it gave up.
func awaitNetwork(policy io.Reader) error {
	var b [1]byte
	if _, err := io.ReadFull(policy, b[:]); err != nil {
		return fmt.Errorf("the launcher did not set up the job's network: %w", err)
	}
	if b[0] != netReady {
		return fmt.Errorf("unexpected %q on the policy pipe", b[0])
	}
	return nil
}
