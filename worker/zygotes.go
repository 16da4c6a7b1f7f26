package worker

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/scrapethis/scrapethis/scrapyrun"
)

// Bounds of a worker's zygotes (warm Python parents, see scrapyrun.Zygote).
const (
	maxZygotes        = 4                // per worker; the least recently used goes first
	zygoteIdleAfter   = 10 * time.Minute // a version's zygote unused this long is retired
	zygoteRetryAfter  = 30 * time.Second // after a zygote failed to start
	zygoteStartBudget = time.Minute
)

// zygotes are the worker's warm Python parents, one per interpreter (the
// machine's Python, or a deployed version's environment), each created on
// first use and at most maxZygotes. The first use of an interpreter waits
// for its zygote; a zygote that died (crashed, killed) is started again
// in the background, and meanwhile its jobs start a fresh Python (the
// exec runner). Idle ones are retired, except the worker's own Python's.
type zygotes struct {
	keep string // the worker's own Python: never retired for idleness
	env  []string
	log  *slog.Logger
	now  func() time.Time

	mu     sync.Mutex
	m      map[string]*zygoteEntry
	closed bool
	wg     sync.WaitGroup // starts and retirements in flight
	ctx    context.Context
	cancel context.CancelFunc
}

type zygoteEntry struct {
	python   string
	z        *scrapyrun.Zygote // nil while starting, or after a failed start
	ready    chan struct{}     // closed when the start in flight ends
	restart  bool              // this start replaces a dead zygote: jobs do not wait for it
	failedAt time.Time
	lastUse  time.Time
}

func newZygotes(keep string, env []string, log *slog.Logger, now func() time.Time) *zygotes {
	ctx, cancel := context.WithCancel(context.Background())
	return &zygotes{keep: keep, env: env, log: log, now: now, m: map[string]*zygoteEntry{}, ctx: ctx, cancel: cancel}
}

// warm starts python's zygote in the background, unless there is one.
func (p *zygotes) warm(python string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.m[python]; !ok && !p.closed {
		p.startLocked(python, false)
	}
}

// get returns the warm parent for python, or nil: the job then starts a
// fresh Python.
func (p *zygotes) get(ctx context.Context, python string) *scrapyrun.Zygote {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	e := p.m[python]
	switch {
	case e == nil:
		e = p.startLocked(python, false)
	case e.z != nil && !e.z.Alive():
		p.log.Warn("the warm Python parent is gone; starting it again, jobs start a fresh Python meanwhile",
			"python", python, "pid", e.z.Pid())
		p.closeLater(e.z)
		e = p.startLocked(python, true)
	case e.z == nil && !e.failedAt.IsZero() && p.now().Sub(e.failedAt) >= zygoteRetryAfter:
		e = p.startLocked(python, true)
	}
	e.lastUse = p.now()
	ready, wait := e.ready, !e.restart
	p.mu.Unlock()
	select {
	case <-ready:
	default:
		if !wait {
			return nil
		}
		select {
		case <-ready:
		case <-ctx.Done():
			return nil
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if e.z == nil || !e.z.Alive() {
		return nil
	}
	return e.z
}

// startLocked starts python's zygote in the background, retiring the
// least recently used one when there are maxZygotes already.
func (p *zygotes) startLocked(python string, restart bool) *zygoteEntry {
	if _, ok := p.m[python]; !ok && len(p.m) >= maxZygotes {
		var lru *zygoteEntry
		for _, e := range p.m {
			if e.z != nil && (lru == nil || e.lastUse.Before(lru.lastUse)) {
				lru = e
			}
		}
		if lru != nil {
			p.log.Info("warm Python parent retired: too many", "python", lru.python)
			delete(p.m, lru.python)
			p.closeLater(lru.z)
		}
	}
	e := &zygoteEntry{python: python, ready: make(chan struct{}), restart: restart, lastUse: p.now()}
	p.m[python] = e
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		ctx, cancel := context.WithTimeout(p.ctx, zygoteStartBudget)
		defer cancel()
		z, err := scrapyrun.StartZygote(ctx, scrapyrun.ZygoteConfig{Python: python, Env: p.env, Log: p.log})
		p.mu.Lock()
		defer p.mu.Unlock()
		defer close(e.ready)
		if err != nil {
			p.log.Warn("no warm Python parent; its jobs start a fresh Python", "python", python, "err", err)
			e.failedAt = p.now()
			return
		}
		if p.closed || p.m[python] != e {
			p.closeLater(z)
			return
		}
		e.z = z
		p.log.Info("warm Python parent ready", "python", python, "pid", z.Pid(), "start", z.StartTime().Round(time.Millisecond))
	}()
	return e
}

// closeLater ends z in the background; its children live on.
func (p *zygotes) closeLater(z *scrapyrun.Zygote) {
	p.wg.Add(1)
	go func() { defer p.wg.Done(); z.Close() }()
}

// retireIdle retires the zygotes unused since zygoteIdleAfter, but the
// worker's own Python's.
func (p *zygotes) retireIdle() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for python, e := range p.m {
		if python != p.keep && e.z != nil && p.now().Sub(e.lastUse) >= zygoteIdleAfter {
			p.log.Info("warm Python parent retired: idle", "python", python)
			delete(p.m, python)
			p.closeLater(e.z)
		}
	}
}

// pythons lists the interpreters with a live zygote, sorted.
func (p *zygotes) pythons() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for python, e := range p.m {
		if e.z != nil && e.z.Alive() {
			out = append(out, python)
		}
	}
	slices.Sort(out)
	return out
}

// run retires idle zygotes every minute until ctx ends.
func (p *zygotes) run(ctx context.Context) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			p.retireIdle()
		}
	}
}

// close ends every zygote and waits for them.
func (p *zygotes) close() {
	p.mu.Lock()
	p.closed = true
	p.cancel()
	for python, e := range p.m {
		if e.z != nil {
			p.closeLater(e.z)
		}
		delete(p.m, python)
	}
	p.mu.Unlock()
	p.wg.Wait()
}
