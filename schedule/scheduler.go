package schedule

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/scrapethis/scrapethis"
	"github.com/scrapethis/scrapethis/cronspec"
	"github.com/scrapethis/scrapethis/db"
)

// Config is how a scheduler runs.
type Config struct {
	// Interval is how often the scheduler looks for due schedules; it
	// bounds how late a fire starts its job.
	Interval time.Duration
	// Batch is the most schedules one transaction fires; a full batch is
	// followed at once by another.
	Batch int
	// EnqueueTimeout bounds each Redis enqueue after a commit.
	EnqueueTimeout time.Duration
	// Clock tells the time that decides which schedules are due and for
	// which fire time; nil is time.Now. Tests hold a stub clock and move
	// it forward instead of waiting for real fire times. It only decides
	// due-ness: Run still waits Interval of real time between ticks.
	Clock func() time.Time
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{Interval: 250 * time.Millisecond, Batch: 100, EnqueueTimeout: 3 * time.Second}
}

// Metrics is what the scheduler reports; nil reports nothing.
type Metrics interface {
	// JobsScheduled counts jobs started by schedules (committed).
	JobsScheduled(n int)
	// FiresSkipped counts fires that started no job because no_overlap
	// held them back. Fire times missed while no scheduler ran are not
	// counted: the missed-fire policy coalesces them into one fire.
	FiresSkipped(n int)
	// EnqueueFailed counts committed jobs the scheduler could not hand to
	// Redis; the workers' reconciler enqueues them.
	EnqueueFailed()
}

type noMetrics struct{}

func (noMetrics) JobsScheduled(int) {}
func (noMetrics) FiresSkipped(int)  {}
func (noMetrics) EnqueueFailed()    {}

// enqueuer hands a committed job to the queue; *tasks.Queuer is one.
type enqueuer interface {
	Enqueue(ctx context.Context, j scrapethis.Job) error
}

// Scheduler turns due schedules into jobs. Several may run at once, in
// one process or many: Postgres row locks share the due schedules between
// them and UNIQUE (schedule_id, scheduled_for) forbids a second job for a
// fire time.
type Scheduler struct {
	db      *db.DB
	queue   enqueuer
	log     *slog.Logger
	cfg     Config
	metrics Metrics
}

// New returns a scheduler firing the schedules in store and enqueueing
// their jobs with q.
func New(cfg Config, store *db.DB, q enqueuer, log *slog.Logger, m Metrics) *Scheduler {
	def := DefaultConfig()
	if cfg.Interval <= 0 {
		cfg.Interval = def.Interval
	}
	if cfg.Batch <= 0 {
		cfg.Batch = def.Batch
	}
	if cfg.EnqueueTimeout <= 0 {
		cfg.EnqueueTimeout = def.EnqueueTimeout
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if m == nil {
		m = noMetrics{}
	}
	return &Scheduler{db: store, queue: q, log: log, cfg: cfg, metrics: m}
}

// Run fires due schedules every Interval until ctx ends. Errors (Postgres
// away, say) are logged and retried with a backoff of up to maxBackoff, so
// an outage neither stops the scheduler nor floods its log.
func (s *Scheduler) Run(ctx context.Context) error {
	s.log.Info("scheduler started", "interval", s.cfg.Interval.String(), "batch", s.cfg.Batch)
	timer := time.NewTimer(0)
	defer timer.Stop()
	failures := 0
	for {
		select {
		case <-ctx.Done():
			s.log.Info("scheduler stopped")
			return nil
		case <-timer.C:
		}
		wait := s.cfg.Interval
		if _, err := s.Tick(ctx); err != nil && ctx.Err() == nil {
			failures++
			wait = min(s.cfg.Interval<<min(failures, 8), maxBackoff)
			s.log.Warn("scheduler tick failed; retrying", "err", err, "failures", failures, "retry_in", wait.String())
		} else if err == nil && failures > 0 {
			s.log.Info("scheduler recovered", "failures", failures)
			failures = 0
		}
		timer.Reset(wait)
	}
}

// maxBackoff is the longest wait between tries while ticks fail.
const maxBackoff = 5 * time.Second

// Tick fires every schedule due at the clock's time, a batch of at most
// Batch per transaction, batch after batch until one is not full: a
// backlog is worked off at once, not one batch per interval. Each batch
// commits its jobs, then enqueues them; a failed enqueue loses nothing
// (the job row is committed and pending, and the workers' reconciler
// enqueues it). Tick returns how many due schedules it handled (started,
// skipped, duplicate or failed), including those of the batches before
// an error. Run calls it every Interval; tests call it directly.
func (s *Scheduler) Tick(ctx context.Context) (handled int, err error) {
	now := s.cfg.Clock()
	for {
		if err := ctx.Err(); err != nil {
			return handled, fmt.Errorf("scheduler tick: %w", err)
		}
		n, err := s.fireBatch(ctx, now)
		handled += n
		if err != nil || n < s.cfg.Batch {
			return handled, err
		}
	}
}

// fireBatch fires one batch of the schedules due at now.
func (s *Scheduler) fireBatch(ctx context.Context, now time.Time) (int, error) {
	outcomes, err := s.db.FireDueSchedules(ctx, now, s.cfg.Batch, s.plan)
	if err != nil {
		return 0, err
	}
	started, skipped := 0, 0
	var held []string // users with jobs a cap held back
	for _, o := range outcomes {
		log := s.log.With("schedule_id", o.Schedule.ID, "spider", o.Schedule.SpiderName, "fire_time", o.Fire.At)
		switch {
		case o.Err != nil:
			log.Error("schedule failed to fire; moved on to its next fire time", "err", o.Err, "next_run_at", o.Fire.Next)
		case o.Skipped:
			skipped++
			log.Info("fire skipped: the schedule's previous job is still pending or running (no_overlap)")
		case o.Duplicate:
			log.Info("a job for this fire time already exists")
		case o.Job != nil:
			started++
			if o.Job.Held {
				if !slices.Contains(held, o.Job.UserID) {
					held = append(held, o.Job.UserID)
				}
			} else {
				s.enqueue(ctx, *o.Job)
			}
			log.Info("scheduled job started", "job_id", o.Job.ID, "held", o.Job.Held)
		}
	}
	// Jobs subject to a cap were inserted held: let go those with room.
	for _, u := range held {
		let, err := s.db.AdmitHeld(ctx, u)
		if err != nil {
			s.log.Warn("held jobs not let go; the workers' reconciler will", "user_id", u, "err", err)
		}
		for _, j := range let {
			s.enqueue(ctx, j)
		}
	}
	if started > 0 {
		s.metrics.JobsScheduled(started)
	}
	if skipped > 0 {
		s.metrics.FiresSkipped(skipped)
	}
	return len(outcomes), nil
}

// plan decides a due schedule's fire time and next due time, with the
// missed-fire policy of cronspec.Spec.Due.
func (s *Scheduler) plan(sc scrapethis.Schedule, now time.Time) db.Fire {
	spec, err := cronspec.Parse(sc.Cron, sc.Timezone)
	if err != nil {
		// Only a row written around the API (or a zone that left the
		// tz database) gets here: stop it rather than fail every tick.
		s.log.Error("schedule has an invalid spec; it stops firing until its cron or timezone is changed",
			"schedule_id", sc.ID, "cron", sc.Cron, "timezone", sc.Timezone, "err", err)
		return db.Fire{}
	}
	fire, next := spec.Due(*sc.NextRunAt, now)
	if next.IsZero() {
		s.log.Warn("schedule never fires again", "schedule_id", sc.ID, "cron", sc.Cron)
	}
	return db.Fire{At: fire, Next: next}
}

func (s *Scheduler) enqueue(ctx context.Context, j scrapethis.Job) {
	// The job is committed: enqueue it even if we are shutting down.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.EnqueueTimeout)
	defer cancel()
	if err := s.queue.Enqueue(ctx, j); err != nil {
		s.metrics.EnqueueFailed()
		s.log.Warn("enqueue failed; the workers' reconciler will enqueue the pending job", "job_id", j.ID, "err", err)
	}
}
