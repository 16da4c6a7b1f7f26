package sandbox

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Forker starts a process by forking a warm parent rather than executing a
// program (see scrapyrun.Zygote). The child it forks must end up a child of
// this process (which is a child subreaper, so the warm parent's own child
// hands it over by exiting) and exactly where an executed process would
// be: in its own process group, in the job directory, with the command's
// environment and output, and, sandboxed, inside ForkSpec.Sandbox.
type Forker interface {
	// Fork returns the child's pid, or an error once the child is gone.
	Fork(ForkSpec) (pid int, err error)
}

// ForkSpec is what a Forker's child becomes.
type ForkSpec struct {
	// Command's Args, Env, Stdout and Stderr are the child's; Path is the
	// program an executed process would run.
	Command
	// Dir is the working directory.
	Dir string
	// Sandbox is the sandbox to enter; nil with the sandbox off (then the
	// child takes a parent-death SIGKILL, as an executed process has).
	Sandbox *ForkSandbox
}

// ForkSandbox is a job's sandbox as its init built it from the job's
// Policy. The child enters it: it joins Cgroups, copies the init's
// rlimits, enters the init's namespaces (so it sees the root, /proc and
// job directory the init built), and drops to UID:GID for good (no
// capabilities, no_new_privs, no supplementary groups) before it runs
// anything of the job's.
type ForkSandbox struct {
	InitPID  int // the init, as this process sees it
	UID, GID int
	Cgroups  []string
	// Binds are the policy's: a warm parent started outside the sandbox
	// finds its own files (a version's environment) at their Target.
	Binds []Mount
}

// StartForked starts c under p as Start does, but has f fork it from a warm
// parent instead of executing c.Path. With the sandbox on, the job's init
// builds the sandbox from p exactly as for Start (one policy, applied in
// one place) and holds it open; the forked child enters it, and Wait ends
// the init once the child is gone. An error from f (the warm parent is
// gone, say) leaves nothing behind: the caller may Start c instead.
func (l *Launcher) StartForked(p Policy, c Command, f Forker) (*Process, error) {
	if !l.cfg.Enabled {
		dir, err := os.MkdirTemp("", "scrapethis-job-")
		if err != nil {
			return nil, fmt.Errorf("job directory: %w", err)
		}
		pid, err := f.Fork(ForkSpec{Command: c, Dir: dir})
		if err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		return &Process{forked: pid, tempDir: dir}, nil
	}
	proc, err := l.sandboxed(p, func(p Policy, cg *jobCgroup) (*Process, error) { return l.startAdoptingInit(p, c, cg) })
	if err != nil {
		return nil, err
	}
	sp := proc.policy
	pid, err := f.Fork(ForkSpec{Command: c, Dir: sp.Dir, Sandbox: &ForkSandbox{
		InitPID: proc.cmd.Process.Pid, UID: sp.UID, GID: sp.GID, Cgroups: proc.cg.dirs, Binds: sp.Binds,
	}})
	if err != nil {
		proc.endInit()
		proc.cg.remove()
		proc.lease.release()
		return nil, err
	}
	proc.forked = pid
	return proc, nil
}

// initReadyTimeout bounds how long an init may take to build a sandbox.
const initReadyTimeout = 30 * time.Second

// startAdoptingInit starts the job's init as startInit does, with Adopt
// set, and waits until it has built the sandbox.
func (l *Launcher) startAdoptingInit(p Policy, c Command, cg *jobCgroup) (*Process, error) {
	proc, err := l.startInitRequest(p, c, cg, true)
	if err != nil {
		return nil, err
	}
	proc.statusLines = bufio.NewReader(proc.status)
	proc.status.SetReadDeadline(time.Now().Add(initReadyTimeout))
	line, err := proc.statusLines.ReadString('\n')
	proc.status.SetReadDeadline(time.Time{})
	if strings.TrimSpace(line) == "ready" && err == nil {
		return proc, nil
	}
	proc.endInit()
	if why, ok := strings.CutPrefix(strings.TrimSpace(line), "error "); ok {
		return nil, fmt.Errorf("sandbox: %s", why)
	}
	return nil, fmt.Errorf("sandbox: the init did not build the sandbox: %v", err)
}

// endInit ends an adopting init that has no spider (yet): it kills it and
// reaps it.
func (p *Process) endInit() {
	p.cmd.Process.Kill()
	p.cmd.Wait()
	p.policyW.Close()
	p.status.Close()
	p.net.remove()
}

// waitForked waits for a forked process, the worker's child by adoption,
// and, sandboxed, then ends its init (and with it whatever the spider left
// in its namespace).
func (p *Process) waitForked() Result {
	res := Result{Err: waitChild(p.forked)}
	if p.cg == nil {
		os.RemoveAll(p.tempDir)
		return res
	}
	defer p.lease.release()
	p.policyW.Close() // the init's cue to end
	p.cmd.Wait()
	p.status.Close()
	res.OOMKills = p.cg.oomKills()
	res.MemoryPeak = p.cg.memoryPeak()
	if err := p.cg.release(res.OOMKills); err != nil && res.Err == nil {
		res.Err = err
	}
	return res
}

// waitChild waits for the child pid: nil for exit status 0, else an
// *ExitError.
func waitChild(pid int) error {
	for {
		var ws unix.WaitStatus
		_, err := unix.Wait4(pid, &ws, 0, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("wait for forked process %d: %w", pid, err)
		}
		if ws.Exited() && ws.ExitStatus() == 0 {
			return nil
		}
		return &ExitError{Status: syscall.WaitStatus(ws)}
	}
}
