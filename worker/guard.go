package worker

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
)

// guard is the worker's side of its guardian: a small process started once
// per worker, which learns the process group of every spider as it starts
// and ends. When the worker dies, however it dies (SIGKILL, OOM), the
// kernel closes the guardian's stdin; the guardian then SIGKILLs every
// group still registered, so no spider's children outlive the worker. The
// spider itself also has a parent-death SIGKILL.
type guard struct {
	mu  sync.Mutex
	in  io.WriteCloser
	cmd *exec.Cmd
	err error
}

// startGuard starts the guardian with argv; an empty argv means none.
func startGuard(argv []string) (*guard, error) {
	if len(argv) == 0 {
		return &guard{}, nil
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	// Its own group, so that a Ctrl-C meant for the worker does not reach it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("start spider guard: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start spider guard %s: %w", argv[0], err)
	}
	return &guard{in: in, cmd: cmd}, nil
}

func (g *guard) send(op byte, pgid int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.in == nil || g.err != nil {
		return
	}
	_, g.err = g.in.Write(append(strconv.AppendInt([]byte{op}, int64(pgid), 10), '\n'))
}

func (g *guard) add(pgid int)    { g.send('+', pgid) }
func (g *guard) remove(pgid int) { g.send('-', pgid) }

// close ends the guardian; it kills whatever is still registered.
func (g *guard) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.in != nil {
		g.in.Close()
		g.cmd.Wait()
		g.in = nil
	}
}

// RunGuard is the guardian process: it reads "+PGID" and "-PGID" lines from
// r until EOF, then SIGKILLs every process group still registered. It
// ignores SIGINT and SIGTERM: only its worker's end ends it.
func RunGuard(r io.Reader) int {
	signal.Ignore(syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	groups := map[int]bool{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if len(line) < 2 {
			continue
		}
		pgid, err := strconv.Atoi(line[1:])
		if err != nil || pgid <= 1 {
			continue
		}
		switch line[0] {
		case '+':
			groups[pgid] = true
		case '-':
			delete(groups, pgid)
		}
	}
	for pgid := range groups {
		syscall.Kill(-pgid, syscall.SIGKILL)
	}
	return 0
}
