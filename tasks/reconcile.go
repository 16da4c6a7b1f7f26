package tasks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/scrapethis/scrapethis"
)

// taskKey is where asynq keeps a task's hash (asynq internal/base.TaskKey).
func taskKey(queue, id string) string { return "asynq:{" + queue + "}:t:" + id }

// pendingLister pages through committed queued pending jobs, lets go the
// held jobs of users that have room, and says which jobs' tasks live
// workers hold (*db.DB is one).
type pendingLister interface {
	PendingJobs(ctx context.Context, after scrapethis.JobCursor, olderThan time.Time, limit int) ([]scrapethis.Job, error)
	HeldUsers(ctx context.Context, limit int) ([]string, error)
	AdmitHeld(ctx context.Context, userID string) ([]scrapethis.Job, error)
	HeldJobs(ctx context.Context, liveWithin time.Duration) (map[string]bool, error)
}

// Reconciler makes Redis agree with Postgres: every committed pending job
// has a runnable task. It covers a crash between a job's commit and its
// enqueue, Redis losing its data (flush, restart without persistence), and
// tasks archived while their job was handed back. Running it in several
// processes at once is safe: a task id is unique in Redis.
type Reconciler struct {
	jobs     pendingLister
	queuer   *Queuer
	log      *slog.Logger
	interval time.Duration
	minAge   time.Duration
	page     int

	// stuckAfter > 0 recovers tasks stuck between pull and start: a pending
	// job whose task is active in Redis, held by no worker that beat within
	// stuckAfter, for stuckAfter, was pulled by a worker that died before
	// starting it. asynq would give it back only when the dead worker's
	// lease runs out (about a minute); a second task of another id is
	// enqueued instead (the job starts once, whichever task comes first).
	stuckAfter time.Duration
	unheld     map[string]time.Time // job id -> first pass that saw it stuck
	recovered  map[string]bool
}

// RecoverStuck turns on the recovery of tasks stuck between pull and
// start (see stuckAfter); the worker's LostAfter is the natural value.
func (r *Reconciler) RecoverStuck(after time.Duration) *Reconciler {
	r.stuckAfter = after
	r.unheld = map[string]time.Time{}
	r.recovered = map[string]bool{}
	return r
}

// NewReconciler checks every interval for pending jobs older than minAge.
func NewReconciler(jobs pendingLister, q *Queuer, log *slog.Logger, interval, minAge time.Duration) *Reconciler {
	return &Reconciler{jobs: jobs, queuer: q, log: log, interval: interval, minAge: minAge, page: 1000}
}

// Run reconciles until ctx ends.
func (r *Reconciler) Run(ctx context.Context) {
	t := time.NewTicker(r.interval)
	defer t.Stop()
	for {
		if n, err := r.Pass(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn("reconcile pass failed", "err", err)
		} else if n > 0 {
			r.log.Info("re-enqueued pending jobs missing from Redis", "count", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Pass first lets go the held jobs that have room (after a process died
// between a job's end and the admission that should have followed it, or a
// cap was raised), then walks all queued pending jobs once, a page at a
// time: one Postgres query and one pipelined Redis round trip per page,
// then an enqueue for each job whose task is missing or will never run.
// Held jobs are not Redis's and are never enqueued here. It returns how
// many it enqueued.
func (r *Reconciler) Pass(ctx context.Context) (int, error) {
	olderThan := time.Now().Add(-r.minAge)
	users, err := r.jobs.HeldUsers(ctx, r.page)
	if err != nil {
		return 0, err
	}
	enqueued := 0
	var held map[string]bool
	stuckNow := map[string]bool{}
	defer func() {
		for id := range r.unheld {
			if !stuckNow[id] {
				delete(r.unheld, id)
			}
		}
	}()
	for _, u := range users {
		let, err := r.jobs.AdmitHeld(ctx, u)
		if err != nil {
			return 0, err
		}
		for _, j := range let {
			// A failure leaves the job queued in Postgres: the walk enqueues it.
			if ok, err := r.queuer.EnsureQueued(ctx, j); err == nil && ok {
				enqueued++
			}
		}
	}
	cursor := scrapethis.JobCursor{ID: "00000000-0000-0000-0000-000000000000"}
	for {
		jobs, err := r.jobs.PendingJobs(ctx, cursor, olderThan, r.page)
		if err != nil {
			return enqueued, err
		}
		if len(jobs) == 0 {
			return enqueued, nil
		}
		states, err := r.taskStates(ctx, jobs)
		if err != nil {
			return enqueued, err
		}
		for i, j := range jobs {
			switch states[i] {
			case "active":
				if r.stuckAfter <= 0 || r.recovered[j.ID] {
					continue
				}
				if held == nil {
					if held, err = r.jobs.HeldJobs(ctx, r.stuckAfter); err != nil {
						return enqueued, err
					}
				}
				if held[j.ID] {
					continue
				}
				stuckNow[j.ID] = true
				first, seen := r.unheld[j.ID]
				if !seen {
					r.unheld[j.ID] = time.Now()
					continue
				}
				if time.Since(first) < r.stuckAfter {
					continue
				}
				if err := r.queuer.EnqueueAgain(ctx, j); err != nil {
					return enqueued, err
				}
				r.recovered[j.ID] = true
				r.log.Warn("task stuck between pull and start on a worker that is gone; enqueued again", "job_id", j.ID, "spider", j.SpiderName, "user_id", j.UserID)
				enqueued++
				continue
			case "pending", "scheduled", "retry", "aggregating":
				continue
			}
			ok, err := r.queuer.EnsureQueued(ctx, j)
			if err != nil {
				return enqueued, err
			}
			if ok {
				enqueued++
			}
		}
		last := jobs[len(jobs)-1]
		cursor = scrapethis.JobCursor{CreatedAt: last.CreatedAt, ID: last.ID}
	}
}

func (r *Reconciler) taskStates(ctx context.Context, jobs []scrapethis.Job) ([]string, error) {
	pipe := r.queuer.rdb.Pipeline()
	cmds := make([]*redis.StringCmd, len(jobs))
	for i, j := range jobs {
		cmds[i] = pipe.HGet(ctx, taskKey(QueueFor(j.Priority), j.ID), "state")
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("read task states: %w", err)
	}
	out := make([]string, len(jobs))
	for i, c := range cmds {
		out[i] = c.Val()
	}
	return out, nil
}
