// Package worker runs jobs: an asynq server whose handler runs each job's
// spider as a subprocess, stores its items and log in Postgres, stops it on
// cancel, timeout or shutdown, and keeps no job stranded in running.
package worker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/scrapethis/scrapethis"
	"github.com/scrapethis/scrapethis/archive"
	"github.com/scrapethis/scrapethis/codecache"
	"github.com/scrapethis/scrapethis/config"
	"github.com/scrapethis/scrapethis/db"
	"github.com/scrapethis/scrapethis/sandbox"
	"github.com/scrapethis/scrapethis/storage"
	"github.com/scrapethis/scrapethis/tasks"
)

// Config is how a worker runs: the settings package config reads from the
// environment (with their documented defaults), and the sandbox spiders
// run in. Every spider starts through the sandbox's launcher; its InitArgv
// is this binary's "sandbox-init".
type Config struct {
	config.Worker
	Sandbox sandbox.Config
	Archive archive.Limits // bounds on unpacking deployed versions
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{Worker: config.DefaultWorker(), Sandbox: sandbox.DefaultConfig()}
}

// Metrics is what the worker reports; see package metrics.
type Metrics interface {
	SpiderStarted()
	SpiderEnded()
	ItemsStored(n int)
	Cancelled(latency time.Duration)
	JobFinished(status string)
	JobsReaped(n int)
	// JobsHeld counts jobs held back by a cap; JobsLetGo held jobs let go.
	JobsHeld(n int)
	JobsLetGo(n int)
}

type noMetrics struct{}

func (noMetrics) SpiderStarted()          {}
func (noMetrics) SpiderEnded()            {}
func (noMetrics) ItemsStored(int)         {}
func (noMetrics) Cancelled(time.Duration) {}
func (noMetrics) JobFinished(string)      {}
func (noMetrics) JobsReaped(int)          {}
func (noMetrics) JobsHeld(int)            {}
func (noMetrics) JobsLetGo(int)           {}

// Worker is one worker process's job runner.
type Worker struct {
	cfg     Config
	id      string
	db      *db.DB
	rdb     redis.UniversalClient
	queuer  *tasks.Queuer
	log     *slog.Logger
	metrics Metrics

	slots    chan struct{} // one per live spider process
	guard    *guard
	reaper   *reaper // reaps the orphans the worker adopts
	launcher *sandbox.Launcher
	cache    *codecache.Cache // deployed versions, unpacked
	zygotes  *zygotes         // warm Python parents; nil with the exec runner

	mu      sync.Mutex
	running map[string]*run
	holding map[string]int // jobs whose tasks this worker has pulled, published with its heartbeat

	// hardCtx ends only when the worker gives up on storing anything more.
	hardCtx    context.Context
	hardCancel context.CancelFunc
	// draining is closed when the worker stops taking jobs.
	draining chan struct{}
	wg       sync.WaitGroup

	healthMu      sync.Mutex
	lastBeat      time.Time
	lastBeatError time.Time
}

// New returns a worker; m may be nil.
func New(cfg Config, store *db.DB, rdb redis.UniversalClient, log *slog.Logger, m Metrics) *Worker {
	if m == nil {
		m = noMetrics{}
	}
	host, _ := os.Hostname()
	b := make([]byte, 4)
	rand.Read(b)
	hard, cancel := context.WithCancel(context.Background())
	id := fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b))
	return &Worker{
		cfg:        cfg,
		id:         id,
		db:         store,
		rdb:        rdb,
		queuer:     tasks.NewQueuer(rdb),
		log:        log.With("worker_id", id),
		metrics:    m,
		slots:      make(chan struct{}, cfg.Concurrency),
		running:    map[string]*run{},
		holding:    map[string]int{},
		hardCtx:    hard,
		hardCancel: cancel,
		draining:   make(chan struct{}),
	}
}

// ID names this worker in job rows and logs.
func (w *Worker) ID() string { return w.id }

// Run serves jobs until ctx ends, then shuts down gracefully: it stops
// taking jobs, lets running ones finish for ShutdownTimeout, hands back the
// rest, and returns.
func (w *Worker) Run(ctx context.Context) error {
	sb := w.cfg.Sandbox
	if sb.Log == nil {
		sb.Log = w.log
	}
	l, err := sandbox.NewLauncher(sb)
	if err != nil {
		return err
	}
	defer func() {
		if err := l.Close(); err != nil {
			w.log.Warn("sandbox cgroups not removed", "err", err)
		}
	}()
	if l.Enabled() {
		if err := l.Check(ctx); err != nil {
			return err
		}
	} else {
		w.log.Warn("SPIDER SANDBOX OFF (SCRAPETHIS_SANDBOX=off): spiders run as the worker's user, see its environment and every process, and have no limits")
	}
	w.launcher = l
	rp, err := newReaper()
	if err != nil {
		w.log.Warn("orphaned spider processes go to PID 1, not to this worker", "err", err)
	}
	w.reaper = rp
	if w.cfg.ScrapyRunner != "exec" {
		if rp.valid {
			w.zygotes = newZygotes(w.cfg.Python, zygoteEnv(l.Enabled()), w.log, time.Now)
			defer w.zygotes.close()
			w.zygotes.warm(w.cfg.Python)
		} else {
			w.log.Warn("Scrapy spiders start a fresh Python each (the fork runner needs the worker to be a child subreaper)")
		}
	}
	cache, err := codecache.New(codecache.Config{
		Dir: w.cacheDir(), MaxBytes: int64(w.cfg.CacheMaxMB) << 20, Python: w.cfg.Python, Limits: w.cfg.Archive,
	}, storage.NewPostgres(w.db), w.log)
	if err != nil {
		return fmt.Errorf("version cache: %w", err)
	}
	w.cache = cache
	defer cache.Close()
	host, _ := os.Hostname()
	if err := w.db.Heartbeat(ctx, w.id, host, os.Getpid(), w.cfg.Concurrency, nil); err != nil {
		return fmt.Errorf("register worker: %w", err)
	}
	w.beat(nil)
	w.started(time.Now())
	g, err := startGuard(w.cfg.Guard)
	if err != nil {
		return err
	}
	w.guard = g
	defer g.close()
	// The spider server polls through a client of its own, whose Waker
	// answers polls of queues known to be empty from memory.
	spiderRedis := w.rdb
	if c, ok := w.rdb.(*redis.Client); ok {
		waker := tasks.NewWaker()
		opt := *c.Options()
		// Redis's maintenance notifications are the main client's.
		opt.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
		wc := redis.NewClient(&opt)
		wc.AddHook(waker)
		defer wc.Close()
		wctx, stopWaker := context.WithCancel(context.Background())
		var wakes sync.WaitGroup
		wakes.Go(func() { waker.Run(wctx, w.rdb) })
		defer wakes.Wait()
		defer stopWaker()
		spiderRedis = wc
	}
	srv := asynq.NewServerFromRedisClient(spiderRedis, asynq.Config{
		Concurrency:              w.cfg.Concurrency,
		Queues:                   tasks.Queues(),
		StrictPriority:           true,
		TaskCheckInterval:        w.cfg.TaskCheckInterval,
		DelayedTaskCheckInterval: time.Second,
		ShutdownTimeout:          w.cfg.ShutdownTimeout + w.cfg.CancelGrace + 10*time.Second,
		RetryDelayFunc: func(n int, _ error, _ *asynq.Task) time.Duration {
			return min(time.Second<<min(n, 6), time.Minute)
		},
		Logger:   asynqLogger{w.log},
		LogLevel: asynq.WarnLevel,
	})
	mux := asynq.NewServeMux()
	mux.HandleFunc(tasks.TypeRunSpider, w.handle)
	if err := srv.Start(mux); err != nil {
		return fmt.Errorf("start asynq server: %w", err)
	}
	// Inspections have a server of their own, one at a time, so that busy
	// spider slots never hold a deploy up.
	builds := asynq.NewServerFromRedisClient(w.rdb, asynq.Config{
		Concurrency:              1,
		Queues:                   map[string]int{tasks.VersionQueue: 1},
		TaskCheckInterval:        w.cfg.TaskCheckInterval * 10,
		DelayedTaskCheckInterval: time.Second,
		ShutdownTimeout:          10 * time.Second,
		RetryDelayFunc: func(n int, _ error, _ *asynq.Task) time.Duration {
			return min(time.Second<<min(n, 6), time.Minute)
		},
		Logger:   asynqLogger{w.log},
		LogLevel: asynq.WarnLevel,
	})
	bmux := asynq.NewServeMux()
	bmux.HandleFunc(tasks.TypeInspectVersion, w.inspect)
	if err := builds.Start(bmux); err != nil {
		srv.Shutdown()
		return fmt.Errorf("start asynq server: %w", err)
	}
	w.log.Info("worker started", "concurrency", w.cfg.Concurrency, "spiders_dir", w.cfg.SpidersDir, "sandbox", l.Enabled(),
		"scrapy_runner", map[bool]string{true: "fork", false: "exec"}[w.zygotes != nil])

	loops, stopLoops := context.WithCancel(context.Background())
	var lwg sync.WaitGroup
	loopFns := []func(context.Context){w.heartbeatLoop, w.controlLoop, w.reapLoop, w.versionsLoop,
		func(ctx context.Context) { w.reaper.run(ctx, time.Second) },
		tasks.NewReconciler(w.db, w.queuer, w.log, w.cfg.Reconcile, 2*time.Second).RecoverStuck(w.cfg.LostAfter).Run}
	if w.zygotes != nil {
		loopFns = append(loopFns, w.zygotes.run)
	}
	for _, loop := range loopFns {
		lwg.Add(1)
		go func() { defer lwg.Done(); loop(loops) }()
	}

	<-ctx.Done()
	w.log.Info("worker stopping: no new jobs; waiting for running ones", "timeout", w.cfg.ShutdownTimeout)
	close(w.draining)
	srv.Stop()
	builds.Shutdown()
	if !w.waitIdle(w.cfg.ShutdownTimeout) {
		w.mu.Lock()
		for _, r := range w.running {
			r.requestStop(stopHandBack)
		}
		w.mu.Unlock()
		if !w.waitIdle(w.cfg.CancelGrace + 10*time.Second) {
			w.log.Error("jobs still running at shutdown; they will be reaped as lost")
		}
	}
	srv.Shutdown()
	stopLoops()
	lwg.Wait()
	w.hardCancel()
	rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := w.db.RemoveWorker(rctx, w.id); err != nil {
		w.log.Warn("could not deregister worker", "err", err)
	}
	w.log.Info("worker stopped")
	return nil
}

func (w *Worker) hold(jobID string) {
	w.mu.Lock()
	w.holding[jobID]++
	w.mu.Unlock()
}

func (w *Worker) unhold(jobID string) {
	w.mu.Lock()
	if w.holding[jobID]--; w.holding[jobID] <= 0 {
		delete(w.holding, jobID)
	}
	w.mu.Unlock()
}

// held lists the jobs whose tasks this worker holds.
func (w *Worker) held() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]string, 0, len(w.holding))
	for id := range w.holding {
		out = append(out, id)
	}
	return out
}

// cacheDir is where deployed versions are cached on this machine.
func (w *Worker) cacheDir() string {
	if w.cfg.CacheDir != "" {
		return w.cfg.CacheDir
	}
	if os.Geteuid() == 0 {
		return "/var/cache/scrapethis/versions"
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "scrapethis", "versions")
	}
	return filepath.Join(os.TempDir(), "scrapethis-versions")
}

// versionsLoop makes sure no version stays building: it enqueues the
// inspection of versions building for a while (12 reconcile periods, a
// minute by default: an enqueue the API could not make, a task lost with
// Redis) and fails those building far longer than any inspection takes.
// An inspection whose worker died is asynq's to deliver again.
func (w *Worker) versionsLoop(ctx context.Context) {
	period := 6 * w.cfg.Reconcile
	every(ctx, period, func() { w.reconcileVersions(ctx, period) })
}

func (w *Worker) reconcileVersions(ctx context.Context, period time.Duration) {
	vs, err := w.db.BuildingVersions(ctx, time.Now().Add(-2*period), 100)
	if err != nil {
		w.log.Debug("building versions not listed", "err", err)
		return
	}
	stale := time.Now().Add(-time.Duration(tasks.InspectRetry+2) * tasks.InspectTimeout)
	for _, v := range vs {
		if v.CreatedAt.Before(stale) {
			if err := w.db.FailVersion(ctx, v.ID, "inspection did not finish; upload the archive again to retry"); err == nil {
				w.log.Warn("version inspection never finished; marked failed", "version_id", v.ID, "project", v.Project)
			}
			continue
		}
		if ok, err := w.queuer.EnqueueInspect(ctx, tasks.InspectPayload{VersionID: v.ID, Project: v.Project, Label: v.Label}); err != nil {
			w.log.Debug("inspection not enqueued", "version_id", v.ID, "err", err)
		} else if ok {
			w.log.Info("inspection enqueued again", "version_id", v.ID, "project", v.Project)
		}
	}
}

// waitIdle waits until no handler is running, or d has passed.
func (w *Worker) waitIdle(d time.Duration) bool {
	done := make(chan struct{})
	go func() { w.wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

// handle is the asynq handler for one job's task.
func (w *Worker) handle(taskCtx context.Context, t *asynq.Task) error {
	p, err := tasks.ParseRunSpiderPayload(t.Payload())
	if err != nil {
		return fmt.Errorf("%w: %w", err, asynq.SkipRetry)
	}
	select {
	case <-w.draining:
		return errors.New("worker is shutting down")
	default:
	}
	w.wg.Add(1)
	defer w.wg.Done()
	w.hold(p.JobID)
	defer w.unhold(p.JobID)

	// A slot is freed only when a spider's whole process group is gone, so
	// a spider still stopping counts against the concurrency.
	select {
	case w.slots <- struct{}{}:
	case <-taskCtx.Done():
		return taskCtx.Err()
	case <-w.draining:
		return errors.New("worker is shutting down")
	}
	released := false
	release := func() {
		if !released {
			released = true
			<-w.slots
		}
	}
	defer release()

	job, started, let, err := w.db.StartJobLetGo(taskCtx, p.JobID, w.id)
	if scrapethis.ErrorCode(err) == scrapethis.ENotFound {
		return fmt.Errorf("job %s has no row: %w", p.JobID, asynq.SkipRetry)
	}
	if err != nil {
		return fmt.Errorf("start job %s: %w", p.JobID, err)
	}
	if !started {
		// Cancelled, final, already running elsewhere, or held back by a
		// cap: nothing to run. A job held back here gave up its place in
		// its caps' queues, or its cap's last free place to a better job:
		// the start let those go.
		w.log.Debug("task skipped", "job_id", job.ID, "status", job.Status, "held", job.Held)
		release()
		if job.Held {
			w.metrics.JobsHeld(1)
		}
		if len(let) > 0 {
			ctx, cancel := context.WithTimeout(w.hardCtx, 10*time.Second)
			w.enqueueLetGo(ctx, let)
			cancel()
		}
		return nil
	}

	r := newRun(w, job)
	w.mu.Lock()
	w.running[job.ID] = r
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		delete(w.running, job.ID)
		w.mu.Unlock()
	}()

	done := make(chan struct{})
	go func() {
		defer close(done)
		r.execute()
		release()
	}()
	select {
	case <-done:
		if r.retryStart {
			return fmt.Errorf("job %s handed back after a failed start; to be tried again", job.ID)
		}
		return nil
	case <-taskCtx.Done():
	}
	// asynq ended the task's context: a cancel through its channel, its
	// deadline, or a lost lease. Only the row says which it is.
	if errors.Is(taskCtx.Err(), context.DeadlineExceeded) {
		r.requestStop(stopTimeout)
	} else if w.cancelRequested(job.ID) {
		r.requestStop(stopCancel)
	}
	<-done
	// asynq has already moved the task to retry; the job is final or
	// handed back, so that retry must not linger.
	w.queuer.Forget(job)
	return nil
}

// release enqueues the held jobs of job's user that its end (or its being
// held back) let go. A failure is logged: the jobs are queued in Postgres,
// and the reconciler enqueues them, or lets them go if that did not happen.
func (w *Worker) release(job scrapethis.Job) {
	ctx, cancel := context.WithTimeout(w.hardCtx, 10*time.Second)
	defer cancel()
	let, err := w.db.Release(ctx, job)
	if err != nil {
		w.log.Warn("held jobs not let go; the reconciler will", "user_id", job.UserID, "err", err)
	}
	w.enqueueLetGo(ctx, let)
}

// enqueueLetGo enqueues held jobs just let go, best first.
func (w *Worker) enqueueLetGo(ctx context.Context, jobs []scrapethis.Job) {
	if len(jobs) == 0 {
		return
	}
	w.metrics.JobsLetGo(len(jobs))
	for _, j := range jobs {
		if err := w.queuer.Enqueue(ctx, j); err != nil {
			w.log.Warn("enqueue of a job let go failed; the reconciler will retry", "job_id", j.ID, "err", err)
		}
	}
}

func (w *Worker) cancelRequested(id string) bool {
	ctx, cancel := context.WithTimeout(w.hardCtx, 5*time.Second)
	defer cancel()
	cs, err := w.db.JobControls(ctx, []string{id})
	return err == nil && len(cs) == 1 && cs[0].CancelRequested
}

// retryValue calls fn until it succeeds or the worker gives up for good.
func retryValue[T any](ctx context.Context, log *slog.Logger, fn func() (T, error)) (T, error) {
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		v, err := fn()
		if err == nil || ctx.Err() != nil {
			return v, err
		}
		if attempt == 1 || attempt%10 == 0 {
			log.Warn("database write failed; retrying", "attempt", attempt, "err", err)
		}
		select {
		case <-ctx.Done():
			return v, ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}
