package bench

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"time"
)

// child is the API or the worker, run from the real binary.
type child struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error
}

func (b *Benchmarker) startChild(name string, args ...string) (*child, error) {
	logPath := filepath.Join(b.dir, name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(b.bin, args...)
	cmd.Env = b.env
	cmd.Stdout = logf
	cmd.Stderr = logf
	// Own process group for clean signalling; and it dies with the bench.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		logf.Close()
		close(c.done)
	}()
	if len(args) > 0 && args[0] == "worker" && !slices.Contains(b.env, "SCRAPETHIS_SCRAPY_RUNNER=exec") {
		c.awaitWarmParent()
	}
	return c, nil
}

// awaitWarmParent waits, at most 30 s, until a worker has its warm Python
// parent (or said it has none): building it, Python imports Scrapy and
// Twisted, about a second of a core, which would otherwise fall on
// whatever the bench measures first after a worker's start.
func (c *child) awaitWarmParent() {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) && !c.exited() {
		b, _ := os.ReadFile(c.logPath)
		if bytes.Contains(b, []byte("warm Python parent ready")) || bytes.Contains(b, []byte("no warm Python parent")) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (c *child) pid() int { return c.cmd.Process.Pid }

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// stop asks the child to shut down gracefully, then kills it.
func (c *child) stop(grace time.Duration) {
	if c == nil || c.exited() {
		return
	}
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(grace):
		c.cmd.Process.Kill()
		<-c.done
	}
}

// tail is the end of the child's log, for error messages.
func (c *child) tail() string {
	b, _ := os.ReadFile(c.logPath)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

func (b *Benchmarker) stopChildren() {
	// The worker first: it hands back or finishes what it runs.
	b.worker.stop(30 * time.Second)
	b.api.stop(15 * time.Second)
}

func (b *Benchmarker) startAPI(ctx context.Context) error {
	var err error
	if b.api, err = b.startChild("api", "api"); err != nil {
		return err
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		st, _, err := b.client.do(ctx, http.MethodGet, "/api/v1/jobs?limit=1", nil)
		if err == nil && st == http.StatusOK {
			b.say("API up on %s (pid %d)", b.client.base, b.api.pid())
			return nil
		}
		if b.api.exited() || time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("the API did not come up (status %d, %v); its log:\n%s", st, err, b.api.tail())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startWorker runs the worker and waits until it has run a job.
func (b *Benchmarker) startWorker(ctx context.Context) error {
	var err error
	if b.worker, err = b.startChild("worker", "worker"); err != nil {
		return fmt.Errorf("%w: %w", errFatal, err)
	}
	id, err := b.postJob(ctx, "noop", nil)
	if err != nil {
		return fmt.Errorf("%w: %w", errFatal, err)
	}
	if _, err := b.waitFinal(ctx, id, 20*time.Second); err != nil {
		return fmt.Errorf("%w: the worker did not run a job: %w; its log:\n%s", errFatal, err, b.worker.tail())
	}
	b.say("worker up (pid %d, concurrency %d)", b.worker.pid(), b.concurrency)
	return nil
}
