// Package retention deletes the items and logs of jobs that ended longer
// ago than the operator's SCRAPETHIS_RETENTION, in small batches (each a
// short statement of its own, so no lock is held for long), and marks each
// job purged_at; the job rows stay. It also sweeps Idempotency-Keys past
// their 24 hours.
package retention

import (
	"context"
	"log/slog"
	"time"

	"github.com/scrapethis/scrapethis/db"
)

// Metrics is what a sweep reports; *metrics.Metrics implements it.
type Metrics interface {
	RetentionDeleted(kind string, n int64)
}

// Sweeper runs sweeps. Age 0 deletes no items or logs (keys are swept
// all the same).
type Sweeper struct {
	DB      *db.DB
	Age     time.Duration
	Every   time.Duration    // between sweeps (default 1m)
	Batch   int              // rows per statement (default 1000)
	Jobs    int              // jobs per sweep (default 100)
	Now     func() time.Time // the clock (default time.Now)
	Log     *slog.Logger
	Metrics Metrics // may be nil
}

// Result is what one sweep removed.
type Result struct {
	Jobs, Items, Logs, Keys int64
}

// Run sweeps every Every until ctx ends.
func (s *Sweeper) Run(ctx context.Context) error {
	every := s.Every
	if every <= 0 {
		every = time.Minute
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if _, err := s.Sweep(ctx); err != nil && ctx.Err() == nil {
			s.Log.Warn("retention sweep failed; the next one carries on", "err", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Sweep purges up to Jobs jobs that ended before now - Age, each fully
// before it is marked, so a sweep cut short is finished by the next.
func (s *Sweeper) Sweep(ctx context.Context) (Result, error) {
	batch, jobs := s.Batch, s.Jobs
	if batch <= 0 {
		batch = 1000
	}
	if jobs <= 0 {
		jobs = 100
	}
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	var res Result
	defer func() { s.report(res) }()
	for {
		n, err := s.DB.DeleteExpiredIdempotencyKeys(ctx, batch)
		res.Keys += n
		if err != nil {
			return res, err
		}
		if n < int64(batch) {
			break
		}
	}
	if s.Age <= 0 {
		return res, nil
	}
	ids, err := s.DB.PurgeCandidates(ctx, now().Add(-s.Age), jobs)
	if err != nil {
		return res, err
	}
	for _, id := range ids {
		for _, table := range []string{"job_items", "job_logs"} {
			for {
				n, err := s.DB.DeleteJobRows(ctx, table, id, batch)
				if table == "job_items" {
					res.Items += n
				} else {
					res.Logs += n
				}
				if err != nil {
					return res, err
				}
				if n < int64(batch) {
					break
				}
			}
		}
		if err := s.DB.MarkPurged(ctx, id); err != nil {
			return res, err
		}
		res.Jobs++
	}
	return res, nil
}

func (s *Sweeper) report(r Result) {
	if r == (Result{}) {
		return
	}
	s.Log.Info("retention sweep", "jobs_purged", r.Jobs, "items_deleted", r.Items, "log_lines_deleted", r.Logs, "idempotency_keys_deleted", r.Keys)
	if s.Metrics != nil {
		s.Metrics.RetentionDeleted("jobs", r.Jobs)
		s.Metrics.RetentionDeleted("items", r.Items)
		s.Metrics.RetentionDeleted("log_lines", r.Logs)
		s.Metrics.RetentionDeleted("idempotency_keys", r.Keys)
	}
}
