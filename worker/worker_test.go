package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jmoiron/sqlx"
	"github.com/redis/go-redis/v9"

	"github.com/scrapethis/scrapethis"
	"github.com/scrapethis/scrapethis/db"
	"github.com/scrapethis/scrapethis/internal/testenv"
	"github.com/scrapethis/scrapethis/sandbox"
	"github.com/scrapethis/scrapethis/tasks"
	"github.com/scrapethis/scrapethis/worker"
)

// TestMain doubles as a standalone worker process for the fault tests:
// with WORKER_CHILD_DSN set, the test binary runs a worker until killed.
func TestMain(m *testing.M) {
	sandbox.Init() // the test binary is the sandbox's init too
	// Checked first: a child worker's guard inherits WORKER_CHILD_DSN too.
	if os.Getenv("WORKER_GUARD") == "1" {
		os.Exit(worker.RunGuard(os.Stdin))
	}
	if dsn := os.Getenv("WORKER_CHILD_DSN"); dsn != "" {
		os.Exit(childWorker(dsn))
	}
	if url := os.Getenv("WORKER_CHILD_HOLD"); url != "" {
		os.Exit(childHolder(url))
	}
	os.Exit(testenv.Main(m))
}

func childWorker(dsn string) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	userMax, _ := strconv.Atoi(os.Getenv("WORKER_CHILD_USER_MAX"))
	store, err := db.Open(ctx, dsn, db.UserMaxRunning(userMax))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	opt, _ := redis.ParseURL(os.Getenv("WORKER_CHILD_REDIS"))
	rdb := redis.NewClient(opt)
	cfg := testConfig(os.Getenv("WORKER_CHILD_SPIDERS"))
	cfg.CacheDir = os.Getenv("WORKER_CHILD_CACHE") // child workers at once must not share a cache
	debug.SetMemoryLimit(worker.MemoryLimit(cfg))
	if err := worker.New(cfg, store, rdb, slog.New(slog.NewTextHandler(os.Stderr, nil)), nil).Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// childHolder pulls spider tasks and never starts them: a worker that
// dies between pull and start, once the test kills it.
func childHolder(url string) int {
	opt, _ := redis.ParseURL(url)
	rdb := redis.NewClient(opt)
	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{Concurrency: 1, Queues: map[string]int{tasks.Queue: 1}})
	mux := asynq.NewServeMux()
	mux.HandleFunc(tasks.TypeRunSpider, func(ctx context.Context, t *asynq.Task) error {
		<-ctx.Done()
		select {} // held until killed
	})
	if err := srv.Run(mux); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func testConfig(spiders string) worker.Config {
	cfg := worker.DefaultConfig()
	cfg.SpidersDir = spiders
	cfg.Concurrency = 4
	cfg.CancelGrace = time.Second
	cfg.ShutdownTimeout = time.Second
	cfg.Heartbeat = 200 * time.Millisecond
	cfg.LostAfter = 2 * time.Second
	cfg.ControlPoll = 200 * time.Millisecond
	cfg.Reconcile = 500 * time.Millisecond
	cfg.Python = "/usr/bin/python3"
	// This test binary doubles as the spider guard (see TestMain).
	cfg.Guard = []string{"/usr/bin/env", "WORKER_GUARD=1", os.Args[0]}
	// These tests watch spiders from the host (pid files, files outside the
	// job directory); sandbox_test.go runs spiders sandboxed.
	cfg.Sandbox.Enabled = false
	return cfg
}

// scrapyRunners are SCRAPETHIS_SCRAPY_RUNNER's values: the Scrapy tests
// run under each.
func scrapyRunners() []string { return []string{"fork", "exec"} }

// withRunner sets the worker's Scrapy runner on top of mod.
func withRunner(runner string, mod func(*worker.Config)) func(*worker.Config) {
	return func(c *worker.Config) {
		if mod != nil {
			mod(c)
		}
		c.ScrapyRunner = runner
	}
}

// checkRunner fails the test unless the job's spider started the way the
// runner says: forked from a warm Python parent, or as a fresh Python.
func checkRunner(t *testing.T, logs, runner string) {
	t.Helper()
	if forked := strings.Contains(logs, "forked from the warm Python parent"); forked != (runner == "fork") {
		t.Errorf("runner %s, but forked %v; log:\n%s", runner, forked, logs)
	}
}

// bundle is one test's worker setup on its own database and Redis.
type bundle struct {
	t        *testing.T
	dsn      string
	redisDSN string
	db       *db.DB
	rdb      *redis.Client
	queuer   *tasks.Queuer
	spiders  string
	userID   string
	sql      *sqlx.DB // fixture connection, set by setupCapped
}

func setup(t *testing.T) *bundle {
	t.Helper()
	dsn := testenv.DatabaseDSN(t)
	store, err := db.Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	redisDSN := testenv.LeaseRedis(t)
	opt, _ := redis.ParseURL(redisDSN)
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { rdb.Close() })
	u, err := store.EnsureUser(context.Background(), "w@example.com")
	if err != nil {
		t.Fatal(err)
	}
	return &bundle{t: t, dsn: dsn, redisDSN: redisDSN, db: store, rdb: rdb, queuer: tasks.NewQueuer(rdb),
		spiders: t.TempDir(), userID: u.ID}
}

// startWorker runs an in-process worker until the test ends; the returned
// function stops it and waits.
func (b *bundle) startWorker(mod func(*worker.Config)) (stop func()) {
	cfg := testConfig(b.spiders)
	if mod != nil {
		mod(&cfg)
	}
	return testenv.StartWorker(b.t, cfg, b.db, b.rdb, testenv.Log(b.t, slog.LevelWarn))
}

// script writes an executable spider.
func (b *bundle) script(name, body string) string {
	b.t.Helper()
	if err := os.WriteFile(filepath.Join(b.spiders, name), []byte(body), 0o755); err != nil {
		b.t.Fatal(err)
	}
	sp, err := b.db.CreateSpider(context.Background(), b.userID, name, name)
	if err != nil {
		b.t.Fatal(err)
	}
	return sp.ID
}

// start creates and enqueues a job as the API does.
func (b *bundle) start(spiderID string, args string, timeout *int) string {
	b.t.Helper()
	j, err := b.db.CreateJob(context.Background(), scrapethis.NewJob{UserID: b.userID, SpiderID: spiderID,
		Arguments: json.RawMessage(args), TimeoutSeconds: timeout})
	if err != nil {
		b.t.Fatal(err)
	}
	if err := b.queuer.Enqueue(context.Background(), j); err != nil {
		b.t.Fatal(err)
	}
	return j.ID
}

// taskExists reports whether the job's task is in Redis, in any state.
func (b *bundle) taskExists(jobID string) bool {
	b.t.Helper()
	_, err := b.queuer.Inspector().GetTaskInfo(tasks.Queue, jobID)
	if errors.Is(err, asynq.ErrTaskNotFound) || errors.Is(err, asynq.ErrQueueNotFound) {
		return false
	}
	if err != nil {
		b.t.Fatal(err)
	}
	return true
}

// redeliver hands the job's task to the workers again, as asynq does after
// a lost lease or a retry, and waits until a worker has handled it.
func (b *bundle) redeliver(j scrapethis.Job) {
	b.t.Helper()
	// An active task (a dead worker's lease) cannot be deleted alone; the
	// test's Redis database is its own, so start it over.
	if err := b.rdb.FlushDB(context.Background()).Err(); err != nil {
		b.t.Fatal(err)
	}
	if err := b.queuer.Enqueue(context.Background(), j); err != nil {
		b.t.Fatal(err)
	}
	b.waitFor("the redelivered task to be handled", 30*time.Second, func() bool { return !b.taskExists(j.ID) })
}

// cancel does what DELETE does: record, then publish.
func (b *bundle) cancel(jobID string, publish bool) {
	b.t.Helper()
	if _, err := b.db.CancelJob(context.Background(), b.userID, jobID); err != nil {
		b.t.Fatal(err)
	}
	if publish {
		if err := b.queuer.Cancel(context.Background(), jobID); err != nil {
			b.t.Fatal(err)
		}
	}
}

func (b *bundle) job(id string) scrapethis.Job {
	b.t.Helper()
	j, err := b.db.JobByID(context.Background(), id)
	if err != nil {
		b.t.Fatal(err)
	}
	return j
}

// waitFor polls until cond holds (see testenv.WaitFor).
func (b *bundle) waitFor(what string, d time.Duration, cond func() bool) {
	b.t.Helper()
	testenv.WaitFor(b.t, d, what, cond)
}

func (b *bundle) waitStatus(id string, want scrapethis.Status) scrapethis.Job {
	b.t.Helper()
	var j scrapethis.Job
	b.waitFor("job "+id+" to be "+string(want), 60*time.Second, func() bool {
		j = b.job(id)
		if j.Status.Final() && j.Status != want {
			b.t.Fatalf("job ended %s (%s), want %s; log:\n%s", j.Status, deref(j.Error), want, b.logs(id))
		}
		return j.Status == want
	})
	return j
}

func deref(s *string) string {
	if s == nil {
		return "<nil>"
	}
	return *s
}

func (b *bundle) items(id string) []string {
	var out []string
	b.db.EachItem(context.Background(), id, func(d []byte) error { out = append(out, string(d)); return nil })
	return out
}

func (b *bundle) logs(id string) string {
	lines, _ := b.db.Logs(context.Background(), id, -1, 100000)
	var s strings.Builder
	for _, l := range lines {
		s.WriteString(l.Line + "\n")
	}
	return s.String()
}

// pidAlive reports whether a process exists and is not a zombie.
func pidAlive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	f := strings.Fields(string(st))
	return len(f) > 2 && f[2] != "Z"
}

// readPids reads whitespace-separated pids from a file, once it has n.
func (b *bundle) readPids(path string, n int) []int {
	b.t.Helper()
	var pids []int
	b.waitFor("pids in "+path, 30*time.Second, func() bool {
		data, _ := os.ReadFile(path)
		pids = pids[:0]
		for _, f := range strings.Fields(string(data)) {
			if p, err := strconv.Atoi(f); err == nil {
				pids = append(pids, p)
			}
		}
		return len(pids) >= n
	})
	return pids
}
