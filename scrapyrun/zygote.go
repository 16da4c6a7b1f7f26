package scrapyrun

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/scrapethis/scrapethis/sandbox"
)

// ErrZygoteGone says a zygote can fork no more: it crashed, was killed or
// was closed. A job that gets it may start a fresh Python instead.
var ErrZygoteGone = errors.New("scrapyrun: the warm Python parent is gone")

// ZygoteConfig is how a zygote runs.
type ZygoteConfig struct {
	// Python is the interpreter, as this process sees it.
	Python string
	// Env is the zygote's whole environment: a fresh spider's, less what
	// names its job (each child gets its job's own).
	Env []string
	// Log receives what the zygote itself writes to stderr.
	Log *slog.Logger
}

// Zygote is a warm Python parent for Scrapy runs: an interpreter that has
// imported Scrapy, Twisted, the runner and the components Scrapy's
// default settings name (no reactor installed), and forks one child per
// run (runner.py, ZYGOTE, says how). It implements sandbox.Forker for the
// runs Run.Argv describes. A child is handed over to this process (which
// must be a child subreaper) as it starts, so closing or losing the zygote
// leaves running children alone.
type Zygote struct {
	cfg     ZygoteConfig
	cmd     *exec.Cmd
	control *os.File // SOCK_SEQPACKET, non-blocking
	started time.Duration
	done    chan struct{} // closed once the process is reaped
	logDone chan struct{}

	mu     sync.Mutex // one fork at a time; guards dead
	dead   bool
	closed bool
}

// zygoteReadyTimeout bounds a zygote's start (its imports).
const zygoteReadyTimeout = 60 * time.Second

// forkTimeout bounds one fork, from the request to the child's "ok".
const forkTimeout = 30 * time.Second

// StartZygote starts a zygote and waits until it is warm (or ctx ends).
func StartZygote(ctx context.Context, cfg ZygoteConfig) (*Zygote, error) {
	if cfg.Python == "" {
		return nil, errors.New("scrapyrun: no Python interpreter")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("zygote socket: %w", err)
	}
	if err := unix.SetNonblock(fds[0], true); err != nil {
		unix.Close(fds[0])
		unix.Close(fds[1])
		return nil, fmt.Errorf("zygote socket: %w", err)
	}
	control := os.NewFile(uintptr(fds[0]), "zygote")
	theirs := os.NewFile(uintptr(fds[1]), "zygote-child")
	errR, errW, err := os.Pipe()
	if err != nil {
		control.Close()
		theirs.Close()
		return nil, fmt.Errorf("zygote pipe: %w", err)
	}
	cmd := &exec.Cmd{
		Path:       cfg.Python,
		Args:       []string{cfg.Python, "-B", "-c", runnerScript, "--mode", "zygote", "--"},
		Env:        cfg.Env,
		Dir:        "/",
		Stderr:     errW,
		ExtraFiles: []*os.File{theirs}, // fd 3
		// Its own group, away from a Ctrl-C meant for the worker; gone
		// with the worker.
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL},
	}
	begin := time.Now()
	err = cmd.Start()
	errW.Close() // the zygote's alone: its end is EOF once the zygote and its children are gone
	// Ours closed now, not at return: a zygote that dies while it
	// imports is EOF on control at once, not a wait for the deadline.
	theirs.Close()
	if err != nil {
		control.Close()
		errR.Close()
		return nil, fmt.Errorf("start zygote %s: %w", cfg.Python, err)
	}
	z := &Zygote{cfg: cfg, cmd: cmd, control: control, done: make(chan struct{}), logDone: make(chan struct{})}
	go func() {
		defer close(z.logDone)
		defer errR.Close()
		sc := bufio.NewScanner(io.LimitReader(errR, 1<<20))
		for sc.Scan() {
			cfg.Log.Warn("zygote: "+strings.ToValidUTF8(sc.Text(), "?"), "python", cfg.Python)
		}
		io.Copy(io.Discard, errR)
	}()
	go func() {
		cmd.Wait()
		z.mu.Lock()
		z.dead = true
		z.mu.Unlock()
		close(z.done)
	}()

	deadline := time.Now().Add(zygoteReadyTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	control.SetReadDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { control.SetReadDeadline(time.Now()) })
	buf := make([]byte, 64)
	n, err := control.Read(buf)
	stop()
	control.SetReadDeadline(time.Time{})
	if err != nil || !strings.HasPrefix(string(buf[:n]), "ready ") {
		z.Close()
		<-z.logDone
		if err == nil || errors.Is(err, io.EOF) {
			err = fmt.Errorf("it exited (%s)", z.cmd.ProcessState)
		}
		return nil, fmt.Errorf("scrapyrun: zygote %s did not start: %w", cfg.Python, err)
	}
	z.started = time.Since(begin)
	return z, nil
}

// Pid is the zygote's process id.
func (z *Zygote) Pid() int { return z.cmd.Process.Pid }

// StartTime is how long the zygote took to be warm.
func (z *Zygote) StartTime() time.Duration { return z.started }

// Python is the zygote's interpreter.
func (z *Zygote) Python() string { return z.cfg.Python }

// Alive reports whether the zygote can still fork.
func (z *Zygote) Alive() bool {
	z.mu.Lock()
	defer z.mu.Unlock()
	return !z.dead && !z.closed
}

// Close ends the zygote and waits for it; its children live on.
func (z *Zygote) Close() error {
	z.mu.Lock()
	if !z.closed {
		z.closed = true
		z.control.Close() // EOF: the zygote exits
	}
	z.mu.Unlock()
	select {
	case <-z.done:
	case <-time.After(5 * time.Second):
		z.cmd.Process.Kill()
		<-z.done
	}
	<-z.logDone
	return nil
}

// RunnerArgs returns what a zygote's child needs of a run's argv (as
// Run.Argv builds it): the runner's options and Scrapy's arguments, after
// the interpreter and the runner script.
func RunnerArgs(argv []string) ([]string, bool) {
	if len(argv) < 5 || argv[1] != "-B" || argv[2] != "-c" || argv[3] != runnerScript || argv[4] != "--mode" {
		return nil, false
	}
	return argv[4:], true
}

// forkRequest is what a child reads on its job socket (runner.py, ZYGOTE).
type forkRequest struct {
	Argv      []string    `json:"argv"`
	Env       []string    `json:"env"`
	Dir       string      `json:"dir"`
	WorkerPid int         `json:"worker_pid"`
	Sandbox   *forkInside `json:"sandbox"`
}

type forkInside struct {
	InitPID int             `json:"init_pid"`
	UID     int             `json:"uid"`
	GID     int             `json:"gid"`
	Cgroups []string        `json:"cgroups"`
	Binds   []sandbox.Mount `json:"binds"`
}

// Fork forks a child that runs spec's run (spec.Args as Run.Argv builds
// them); see sandbox.Forker. ErrZygoteGone says the zygote could not fork,
// and that nothing was started.
func (z *Zygote) Fork(spec sandbox.ForkSpec) (int, error) {
	args, ok := RunnerArgs(spec.Args)
	if !ok {
		return 0, errors.New("scrapyrun: a zygote runs only the runner's own argv (Run.Argv)")
	}
	req := forkRequest{Argv: args, Env: spec.Env, Dir: spec.Dir, WorkerPid: os.Getpid()}
	if s := spec.Sandbox; s != nil {
		req.Sandbox = &forkInside{InitPID: s.InitPID, UID: s.UID, GID: s.GID, Cgroups: s.Cgroups, Binds: s.Binds}
	}
	body, err := json.Marshal(req)
	if err != nil {
		return 0, fmt.Errorf("scrapyrun: fork request: %w", err)
	}
	devnull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return 0, err
	}
	defer devnull.Close()
	stdout, stderr := spec.Stdout, spec.Stderr
	if stdout == nil {
		stdout = devnull
	}
	if stderr == nil {
		stderr = devnull
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("scrapyrun: job socket: %w", err)
	}
	theirs := os.NewFile(uintptr(fds[1]), "job-child")
	defer theirs.Close()
	mine := os.NewFile(uintptr(fds[0]), "job")
	conn, err := net.FileConn(mine)
	mine.Close()
	if err != nil {
		return 0, fmt.Errorf("scrapyrun: job socket: %w", err)
	}
	defer conn.Close()
	uc := conn.(*net.UnixConn)

	if err := z.send(int(theirs.Fd()), int(stdout.Fd()), int(stderr.Fd())); err != nil {
		return 0, err
	}
	theirs.Close()
	uc.SetDeadline(time.Now().Add(forkTimeout))
	if _, err := uc.Write(body); err != nil {
		return 0, fmt.Errorf("%w: send the job: %v", ErrZygoteGone, err)
	}
	uc.CloseWrite()
	r := bufio.NewReader(io.LimitReader(uc, 4096))
	first, err := r.ReadString('\n')
	first = strings.TrimSpace(first)
	if err != nil && first == "" {
		// No word from the child: the zygote died under it.
		return 0, fmt.Errorf("%w: no child (%v)", ErrZygoteGone, err)
	}
	if why, ok := strings.CutPrefix(first, "error "); ok {
		return 0, errors.New(why)
	}
	pid, perr := strconv.Atoi(strings.TrimPrefix(first, "pid "))
	if !strings.HasPrefix(first, "pid ") || perr != nil || pid <= 0 {
		return 0, fmt.Errorf("scrapyrun: zygote child said %q", first)
	}
	second, err := r.ReadString('\n')
	second = strings.TrimSpace(second)
	if second == "ok" {
		return pid, nil
	}
	// The child failed (or hangs) before it ran anything of the job's: it
	// is this process's child by now; end it and reap it.
	unix.Kill(pid, unix.SIGKILL)
	reap(pid)
	if why, ok := strings.CutPrefix(second, "error "); ok {
		return 0, errors.New(why)
	}
	return 0, fmt.Errorf("scrapyrun: forked child %d ended before it started (%v)", pid, err)
}

// send hands the zygote one "fork" message with the job's socket, stdout
// and stderr.
func (z *Zygote) send(fds ...int) error {
	z.mu.Lock()
	defer z.mu.Unlock()
	if z.dead || z.closed {
		return ErrZygoteGone
	}
	raw, err := z.control.SyscallConn()
	if err != nil {
		return fmt.Errorf("%w: %v", ErrZygoteGone, err)
	}
	var sendErr error
	z.control.SetWriteDeadline(time.Now().Add(forkTimeout))
	err = raw.Write(func(fd uintptr) bool {
		sendErr = unix.Sendmsg(int(fd), []byte("fork"), unix.UnixRights(fds...), nil, unix.MSG_NOSIGNAL)
		return !errors.Is(sendErr, unix.EAGAIN)
	})
	if err == nil {
		err = sendErr
	}
	if err != nil {
		z.dead = true
		return fmt.Errorf("%w: %v", ErrZygoteGone, err)
	}
	return nil
}

// reap waits for a child that failed to start, if it is this process's.
func reap(pid int) {
	for {
		var ws unix.WaitStatus
		_, err := unix.Wait4(pid, &ws, 0, nil)
		if !errors.Is(err, unix.EINTR) {
			return
		}
	}
}
