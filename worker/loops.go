package worker

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"
)

// heartbeatLoop tells Postgres this worker is alive.
func (w *Worker) heartbeatLoop(ctx context.Context) {
	host, _ := os.Hostname()
	every(ctx, w.cfg.Heartbeat, func() {
		bctx, cancel := context.WithTimeout(ctx, w.cfg.Heartbeat)
		err := w.db.Heartbeat(bctx, w.id, host, os.Getpid(), w.cfg.Concurrency, w.held())
		cancel()
		w.beat(err)
		if err != nil && ctx.Err() == nil {
			w.log.Warn("heartbeat failed", "err", err)
		}
	})
}

// every calls fn every d until ctx ends.
func every(ctx context.Context, d time.Duration, fn func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		fn()
	}
}

// started counts the worker's start as its last failure to reach
// Postgres: a fresh worker judges no other until its own connection has
// been healthy for LostAfter.
func (w *Worker) started(now time.Time) {
	w.healthMu.Lock()
	defer w.healthMu.Unlock()
	w.lastBeatError = now
}

func (w *Worker) beat(err error) {
	w.healthMu.Lock()
	defer w.healthMu.Unlock()
	if err != nil {
		w.lastBeatError = time.Now()
		return
	}
	w.lastBeat = time.Now()
}

// healthy reports whether this worker has reached Postgres steadily for
// longer than LostAfter: only then may it judge other workers dead, since
// after an outage their heartbeats may not have caught up yet.
func (w *Worker) healthy() bool {
	w.healthMu.Lock()
	defer w.healthMu.Unlock()
	now := time.Now()
	return now.Sub(w.lastBeat) < 2*w.cfg.Heartbeat && now.Sub(w.lastBeatError) > w.cfg.LostAfter
}

// controlLoop checks the rows of this worker's running jobs: a cancel that
// asynq's channel did not deliver is seen here within one poll, and a job
// that is no longer ours (reaped after an outage) has its spider stopped.
func (w *Worker) controlLoop(ctx context.Context) {
	every(ctx, w.cfg.ControlPoll, func() {
		w.mu.Lock()
		ids := make([]string, 0, len(w.running))
		for id := range w.running {
			ids = append(ids, id)
		}
		w.mu.Unlock()
		if len(ids) == 0 {
			return
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		controls, err := w.db.JobControls(cctx, ids)
		cancel()
		if err != nil {
			return
		}
		for _, c := range controls {
			w.mu.Lock()
			r := w.running[c.ID]
			w.mu.Unlock()
			switch {
			case r == nil:
			case c.Status != "running" || !c.WorkerID.Valid || c.WorkerID.String != w.id:
				r.requestStop(stopLost)
			case c.CancelRequested:
				r.requestStop(stopCancel)
			}
		}
	})
}

// reapLoop ends jobs whose worker died (see db.ReapLostJobs). Every worker
// runs it; the UPDATE is idempotent.
func (w *Worker) reapLoop(ctx context.Context) {
	every(ctx, max(w.cfg.LostAfter/3, 100*time.Millisecond), func() {
		if !w.healthy() {
			return
		}
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		lost, err := w.db.ReapLostJobs(rctx, w.cfg.LostAfter)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				w.log.Warn("reaping lost jobs failed", "err", err)
			}
			return
		}
		if len(lost) > 0 {
			w.metrics.JobsReaped(len(lost))
			users := map[string]bool{}
			for _, j := range lost {
				w.log.Warn("job's worker is gone; job ended", "job_id", j.ID, "spider", j.Spider, "user_id", j.UserID,
					"status", j.Status, "reason", "worker lost")
				users[j.UserID] = true
			}
			// Their places are free: let their users' held jobs go.
			for u := range users {
				actx, cancel := context.WithTimeout(ctx, 10*time.Second)
				let, err := w.db.AdmitHeld(actx, u)
				if err != nil {
					w.log.Warn("held jobs not let go; the reconciler will", "user_id", u, "err", err)
				}
				w.enqueueLetGo(actx, let)
				cancel()
			}
		}
	})
}

// asynqLogger sends asynq's logs to slog.
type asynqLogger struct{ log *slog.Logger }

func (l asynqLogger) Debug(args ...any) { l.log.Debug(fmt.Sprint(args...), "component", "asynq") }
func (l asynqLogger) Info(args ...any)  { l.log.Info(fmt.Sprint(args...), "component", "asynq") }
func (l asynqLogger) Warn(args ...any)  { l.log.Warn(fmt.Sprint(args...), "component", "asynq") }
func (l asynqLogger) Error(args ...any) { l.log.Error(fmt.Sprint(args...), "component", "asynq") }
func (l asynqLogger) Fatal(args ...any) {
	l.log.Error(fmt.Sprint(args...), "component", "asynq")
	os.Exit(1)
}
