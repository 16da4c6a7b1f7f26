package worker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/scrapethis/scrapethis/sandbox"
)

// reaper makes the worker the child subreaper of what it starts
// (PR_SET_CHILD_SUBREAPER): a spider's orphans, a child whose shell was
// killed or a daemon it left, are reparented to the worker rather than to
// PID 1 (which, in a container, may never reap them), and the reaper
// reaps them. It never reaps a child the worker itself waits for, since
// that would take the exit status from os/exec's Wait:
//   - reapGroup reaps a spider's process group once the spider itself has
//     been waited for: what is left of that group are adopted orphans;
//   - sweep reaps the other zombie children that left the worker's session
//     (a daemon's setsid), but never one that start registered (the
//     spiders' leaders, which could setsid themselves). start holds a read
//     lock from before the fork until the pid is registered, and sweep the
//     write lock, so no child is swept between its fork and its
//     registration. The worker's other children (the guard, pip run by the
//     version cache) stay in its session and are left to their Wait.
type reaper struct {
	lock  sync.RWMutex // start (read) against sweep (write)
	mu    sync.Mutex   // ours
	ours  map[int]bool
	sid   int
	wake  chan struct{}
	valid bool // PR_SET_CHILD_SUBREAPER took
}

// newReaper makes this process a child subreaper. Its reaper is usable
// even when that fails (then only reapGroup works, and rarely has work).
func newReaper() (*reaper, error) {
	r := &reaper{ours: map[int]bool{}, wake: make(chan struct{}, 1)}
	sid, err := unix.Getsid(0)
	if err != nil {
		return r, fmt.Errorf("own session: %w", err)
	}
	r.sid = sid
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return r, fmt.Errorf("become child subreaper: %w", err)
	}
	r.valid = true
	return r, nil
}

// start runs fn, which starts children and returns their pids (none when
// it failed), and registers them as the worker's own until done.
func (r *reaper) start(fn func() []int) {
	r.lock.RLock()
	defer r.lock.RUnlock()
	pids := fn()
	r.mu.Lock()
	for _, pid := range pids {
		r.ours[pid] = true
	}
	r.mu.Unlock()
}

// done forgets children the worker has waited for, and sweeps soon.
func (r *reaper) done(pids ...int) {
	r.mu.Lock()
	for _, pid := range pids {
		delete(r.ours, pid)
	}
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// reapGroup reaps every zombie child in process group pgid, whose leader
// the worker has already waited for. It returns how many it reaped.
func (r *reaper) reapGroup(pgid int) int {
	n := 0
	for pgid > 1 {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-pgid, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			break
		}
		n++
	}
	return n
}

// sweepGap is the least time between two sweeps: jobs end hundreds of
// times a second under load, and a sweep reads /proc for every thread and
// child of the worker, so an orphan's zombie waits at most this long.
const sweepGap = 100 * time.Millisecond

// run sweeps on every wake (at most once a sweepGap) and every interval
// until ctx ends.
func (r *reaper) run(ctx context.Context, interval time.Duration) {
	if !r.valid {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	gap := time.NewTimer(0)
	defer gap.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-r.wake:
			select {
			case <-ctx.Done():
				return
			case <-gap.C:
			}
		}
		r.sweep()
		gap.Reset(sweepGap)
	}
}

// sweep reaps the zombie children that are not registered and not of the
// worker's session.
func (r *reaper) sweep() int {
	r.lock.Lock()
	defer r.lock.Unlock()
	// Most sweeps find no zombie child at all: one waitid that reaps
	// nothing says so, without reading /proc.
	var info unix.Siginfo
	// (Linux sets si_signo to SIGCHLD only when it found a child.)
	if err := unix.Waitid(unix.P_ALL, 0, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil); err != nil || info.Signo != int32(unix.SIGCHLD) {
		return 0
	}
	n := 0
	for _, pid := range children() {
		state, sid, ok := procState(pid)
		if !ok || state != "Z" || sid == r.sid {
			continue
		}
		r.mu.Lock()
		own := r.ours[pid]
		r.mu.Unlock()
		if own {
			continue
		}
		var ws unix.WaitStatus
		if got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil); err == nil && got == pid {
			n++
		}
	}
	return n
}

// children lists this process's children, from every thread's
// /proc/self/task/TID/children (an adopted orphan's parent is one of the
// worker's threads).
func children() []int {
	tasks, _ := filepath.Glob("/proc/self/task/*/children")
	var out []int
	for _, f := range tasks {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, s := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(s); err == nil {
				out = append(out, pid)
			}
		}
	}
	return out
}

// procState reads a process's state letter and session.
func procState(pid int) (state string, sid int, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return "", 0, false
	}
	// pid (comm) state ppid pgrp session ...; comm may hold spaces and
	// parentheses.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return "", 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 4 {
		return "", 0, false
	}
	sid, err = strconv.Atoi(f[3])
	return f[0], sid, err == nil
}

// start starts a spider (or an inspection) through the launcher, its
// leader registered with the reaper until wait.
func (w *Worker) start(p sandbox.Policy, c sandbox.Command) (*sandbox.Process, error) {
	var proc *sandbox.Process
	var err error
	w.reaper.start(func() []int {
		if proc, err = w.launcher.Start(p, c); err != nil {
			return nil
		}
		return proc.Pids()
	})
	return proc, err
}

// startForked starts a Scrapy spider forked from a warm parent (see
// sandbox.Launcher.StartForked): the spider becomes the worker's child as
// it starts, registered with the reaper before it can end.
func (w *Worker) startForked(p sandbox.Policy, c sandbox.Command, f sandbox.Forker) (*sandbox.Process, error) {
	var proc *sandbox.Process
	var err error
	w.reaper.start(func() []int {
		if proc, err = w.launcher.StartForked(p, c, f); err != nil {
			return nil
		}
		return proc.Pids()
	})
	return proc, err
}

// wait waits for a process start started, then lets the reaper forget it.
func (w *Worker) wait(proc *sandbox.Process) sandbox.Result {
	res := proc.Wait()
	w.reaper.done(proc.Pids()...)
	return res
}
