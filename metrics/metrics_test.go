package metrics_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/scrapethis/scrapethis/api"
	"github.com/scrapethis/scrapethis/db"
	"github.com/scrapethis/scrapethis/internal/testenv"
	"github.com/scrapethis/scrapethis/metrics"
	"github.com/scrapethis/scrapethis/schedule"
	"github.com/scrapethis/scrapethis/tasks"
	"github.com/scrapethis/scrapethis/worker"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

var (
	_ worker.Metrics   = (*metrics.Metrics)(nil)
	_ api.Metrics      = (*metrics.Metrics)(nil)
	_ schedule.Metrics = (*metrics.Metrics)(nil)
)

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// scrape reads a /metrics endpoint into series ("name{labels}") and values.
func scrape(t *testing.T, h http.Handler) map[string]float64 {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("/metrics answered %d: %s", rec.Code, rec.Body)
	}
	return parse(t, rec.Body.String())
}

func parse(t *testing.T, text string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

func TestMetricsMove(t *testing.T) {
	t.Parallel()
	m := metrics.New(prometheus.NewRegistry())
	before := scrape(t, m.Handler())
	for _, name := range []string{
		"scrapethis_jobs_created_total", "scrapethis_jobs_started_total", "scrapethis_items_stored_total",
		"scrapethis_jobs_reaped_total", "scrapethis_spider_processes_running",
		`scrapethis_jobs_finished_total{status="finished"}`, `scrapethis_jobs_finished_total{status="error"}`,
		`scrapethis_jobs_finished_total{status="cancelled"}`, "scrapethis_job_cancel_latency_seconds_count",
	} {
		if v, ok := before[name]; !ok || v != 0 {
			t.Errorf("%s = %v (present %v) before anything happened; want a zero series", name, v, ok)
		}
	}
	for _, name := range []string{"go_goroutines", "process_open_fds"} {
		if _, ok := before[name]; !ok {
			t.Errorf("no %s", name)
		}
	}
	m.JobCreated()
	m.SpiderStarted()
	m.SpiderStarted()
	m.SpiderEnded()
	m.ItemsStored(3)
	m.ItemsStored(4)
	m.Cancelled(300 * time.Millisecond)
	m.JobFinished("cancelled")
	m.JobsReaped(2)
	m.RequestServed("GET", "/api/v1/jobs/:id", 404, 5*time.Millisecond)
	m.JobsScheduled(3)
	m.FiresSkipped(1)
	m.EnqueueFailed()
	after := scrape(t, m.Handler())
	want := map[string]float64{
		"scrapethis_jobs_created_total":                                                         1,
		"scrapethis_jobs_started_total":                                                         2,
		"scrapethis_spider_processes_running":                                                   1,
		"scrapethis_items_stored_total":                                                         7,
		"scrapethis_job_cancel_latency_seconds_count":                                           1,
		`scrapethis_job_cancel_latency_seconds_bucket{le="0.25"}`:                               0,
		`scrapethis_job_cancel_latency_seconds_bucket{le="0.5"}`:                                1,
		`scrapethis_jobs_finished_total{status="cancelled"}`:                                    1,
		"scrapethis_jobs_reaped_total":                                                          2,
		"scrapethis_jobs_scheduled_total":                                                       3,
		"scrapethis_schedule_fires_skipped_total":                                               1,
		"scrapethis_schedule_enqueue_failures_total":                                            1,
		`scrapethis_http_requests_total{method="GET",route="/api/v1/jobs/:id",status="404"}`:    1,
		`scrapethis_http_request_duration_seconds_count{method="GET",route="/api/v1/jobs/:id"}`: 1,
	}
	for name, v := range want {
		if after[name] != v {
			t.Errorf("%s = %v, want %v", name, after[name], v)
		}
	}
}

// opsBundle is an API server with its operators' endpoints and a worker,
// on a test database and Redis, as `scrapethis dev` wires them.
type opsBundle struct {
	t       *testing.T
	db      *db.DB
	rdb     *redis.Client
	m       *metrics.Metrics
	url     string
	spiders string
	key     string
	userID  string
}

func setup(t *testing.T) *opsBundle {
	t.Helper()
	store := testenv.DB(t)
	rdb := testenv.RedisClient(t)
	queuer := tasks.NewQueuer(rdb)
	m := metrics.New(prometheus.NewRegistry())
	if err := m.CollectQueues(queuer.Inspector()); err != nil {
		t.Fatal(err)
	}
	if err := m.CollectDBStats(store); err != nil {
		t.Fatal(err)
	}
	srv := api.New(store, queuer, discard())
	srv.Ops = api.Ops{Metrics: m, Prometheus: m.Handler(), Ready: metrics.Readyz(store, rdb)}
	url := testenv.Serve(t, srv)
	u, err := store.EnsureUser(context.Background(), "ops@example.com")
	if err != nil {
		t.Fatal(err)
	}
	_, key, err := store.CreateAPIKey(context.Background(), u.ID, "test")
	if err != nil {
		t.Fatal(err)
	}
	return &opsBundle{t: t, db: store, rdb: rdb, m: m, url: url, spiders: t.TempDir(), key: key, userID: u.ID}
}

// startWorker runs a worker reporting to the bundle's metrics until the
// test ends.
func (b *opsBundle) startWorker() {
	cfg := worker.DefaultConfig()
	cfg.SpidersDir = b.spiders
	cfg.CancelGrace = 2 * time.Second
	cfg.ShutdownTimeout = time.Second
	cfg.Sandbox.Enabled = false // the sandbox has tests of its own (worker, sandbox)
	cfg.CacheDir = b.t.TempDir()
	w := worker.New(cfg, b.db, b.rdb, discard(), b.m)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := w.Run(ctx); err != nil {
			b.t.Errorf("worker: %v", err)
		}
	}()
	b.t.Cleanup(func() { cancel(); <-done })
}

// spider writes an executable spider and registers it.
func (b *opsBundle) spider(name, body string) {
	b.t.Helper()
	if err := os.WriteFile(filepath.Join(b.spiders, name), []byte(body), 0o755); err != nil {
		b.t.Fatal(err)
	}
	if _, err := b.db.CreateSpider(context.Background(), b.userID, name, name); err != nil {
		b.t.Fatal(err)
	}
}

func (b *opsBundle) do(method, path, body string) (int, []byte) {
	b.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, b.url+path, rd)
	req.Header.Set("Authorization", "Bearer "+b.key)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer res.Body.Close()
	data, _ := io.ReadAll(res.Body)
	return res.StatusCode, data
}

func (b *opsBundle) createJob(spider string) string {
	b.t.Helper()
	status, body := b.do("POST", "/api/v1/jobs", `{"spider_name":"`+spider+`"}`)
	var out struct{ JobID string }
	if status != 200 || json.Unmarshal(body, &out) != nil || out.JobID == "" {
		b.t.Fatalf("create job: %d %s", status, body)
	}
	return out.JobID
}

// awaitStatus polls the job until it has the status; the deadline is far
// beyond what the step needs, so a slow machine does not fail the test.
func (b *opsBundle) awaitStatus(id, want string) {
	b.t.Helper()
	b.eventually(func() error {
		_, body := b.do("GET", "/api/v1/jobs/"+id, "")
		var j struct{ Status string }
		json.Unmarshal(body, &j)
		if j.Status != want {
			return fmt.Errorf("job %s is %q, want %q", id, j.Status, want)
		}
		return nil
	})
}

func (b *opsBundle) eventually(check func() error) {
	b.t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			b.t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// metrics reads the API's /metrics over HTTP, without credentials.
func (b *opsBundle) metrics() (map[string]float64, string) {
	b.t.Helper()
	res, err := http.Get(b.url + "/metrics")
	if err != nil {
		b.t.Fatal(err)
	}
	defer res.Body.Close()
	data, _ := io.ReadAll(res.Body)
	if res.StatusCode != 200 {
		b.t.Fatalf("/metrics answered %d: %s", res.StatusCode, data)
	}
	return parse(b.t, string(data)), string(data)
}

// TestJobMovesCounters drives real jobs through the API and a worker and
// reads the counters move on /metrics: one that ends with items, one that
// is cancelled while it runs.
func TestJobMovesCounters(t *testing.T) {
	b := setup(t)
	b.spider("two_items.sh", "#!/bin/sh\necho '{\"n\":1}'\necho '{\"n\":2}'\n")
	b.spider("sleeper.sh", "#!/bin/sh\nexec sleep 120\n")
	b.startWorker()

	before, _ := b.metrics()
	if before["scrapethis_jobs_created_total"] != 0 {
		t.Fatalf("jobs created before any: %v", before["scrapethis_jobs_created_total"])
	}

	id := b.createJob("two_items.sh")
	b.awaitStatus(id, "finished")
	b.eventually(func() error {
		got, _ := b.metrics()
		want := map[string]float64{
			"scrapethis_jobs_created_total":                     1,
			"scrapethis_jobs_started_total":                     1,
			`scrapethis_jobs_finished_total{status="finished"}`: 1,
			"scrapethis_items_stored_total":                     2,
			"scrapethis_spider_processes_running":               0,
		}
		for name, v := range want {
			if got[name] != v {
				return fmt.Errorf("%s = %v, want %v", name, got[name], v)
			}
		}
		return nil
	})

	id2 := b.createJob("sleeper.sh")
	b.awaitStatus(id2, "running")
	b.eventually(func() error {
		if got, _ := b.metrics(); got["scrapethis_spider_processes_running"] != 1 {
			return fmt.Errorf("spider processes running = %v, want 1", got["scrapethis_spider_processes_running"])
		}
		return nil
	})
	if status, body := b.do("DELETE", "/api/v1/jobs/"+id2, ""); status != 200 {
		t.Fatalf("cancel: %d %s", status, body)
	}
	b.awaitStatus(id2, "cancelled")
	b.eventually(func() error {
		got, _ := b.metrics()
		want := map[string]float64{
			"scrapethis_jobs_created_total":                      2,
			"scrapethis_jobs_started_total":                      2,
			`scrapethis_jobs_finished_total{status="cancelled"}`: 1,
			"scrapethis_job_cancel_latency_seconds_count":        1,
			"scrapethis_spider_processes_running":                0,
		}
		for name, v := range want {
			if got[name] != v {
				return fmt.Errorf("%s = %v, want %v", name, got[name], v)
			}
		}
		return nil
	})

	got, text := b.metrics()
	// Requests are counted by route pattern, never by raw path.
	for _, name := range []string{
		`scrapethis_http_requests_total{method="POST",route="/api/v1/jobs",status="200"}`,
		`scrapethis_http_requests_total{method="DELETE",route="/api/v1/jobs/:id",status="200"}`,
		`scrapethis_http_request_duration_seconds_count{method="GET",route="/api/v1/jobs/:id"}`,
	} {
		if got[name] < 1 {
			t.Errorf("%s = %v, want at least 1", name, got[name])
		}
	}
	if strings.Contains(text, id) || strings.Contains(text, id2) {
		t.Error("a job id appears in /metrics")
	}
	// asynq's queue metrics, for asynqmon's charts.
	if _, ok := got[`asynq_queue_size{queue="spiders"}`]; !ok {
		t.Errorf("no asynq queue metrics in /metrics")
	}
	if _, ok := got[`go_sql_open_connections{db_name="scrapethis"}`]; !ok {
		t.Errorf("no Postgres pool metrics in /metrics")
	}
}

// closedAddr returns a 127.0.0.1 address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	return rec.Code, strings.TrimSpace(rec.Body.String())
}

func TestReadyz(t *testing.T) {
	b := setup(t)
	res, err := http.Get(b.url + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || strings.TrimSpace(string(body)) != `{"status":"ok","postgres":"ok","redis":"ok"}` {
		t.Fatalf("/readyz on the API: %d %s", res.StatusCode, body)
	}

	deadRedis := redis.NewClient(&redis.Options{Addr: closedAddr(t)})
	defer deadRedis.Close()
	status, out := get(t, metrics.Readyz(b.db, deadRedis), "/readyz")
	if status != 503 || out != `{"status":"unavailable","postgres":"ok","redis":"down"}` {
		t.Errorf("Redis down: %d %s", status, out)
	}

	closed, err := db.Open(context.Background(), testenv.DatabaseDSN(t))
	if err != nil {
		t.Fatal(err)
	}
	closed.Close()
	status, out = get(t, metrics.Readyz(closed, b.rdb), "/readyz")
	if status != 503 || out != `{"status":"unavailable","postgres":"down","redis":"ok"}` {
		t.Errorf("Postgres down: %d %s", status, out)
	}

	status, out = get(t, metrics.Readyz(closed, deadRedis), "/readyz")
	if status != 503 || out != `{"status":"unavailable","postgres":"down","redis":"down"}` {
		t.Errorf("both down: %d %s", status, out)
	}
}

// TestWorkerOps checks the worker's own listener: metrics and probes, and
// nothing of the API.
func TestWorkerOps(t *testing.T) {
	b := setup(t)
	m := metrics.New(prometheus.NewRegistry())
	m.ItemsStored(5)
	h := metrics.Ops(m, b.db, b.rdb)
	if status, body := get(t, h, "/healthz"); status != 200 || body != `{"status":"ok"}` {
		t.Errorf("/healthz: %d %s", status, body)
	}
	if status, body := get(t, h, "/readyz"); status != 200 || body != `{"status":"ok","postgres":"ok","redis":"ok"}` {
		t.Errorf("/readyz: %d %s", status, body)
	}
	if got := scrape(t, h); got["scrapethis_items_stored_total"] != 5 {
		t.Errorf("/metrics: items stored %v", got["scrapethis_items_stored_total"])
	}
	if status, _ := get(t, h, "/api/v1/jobs"); status != 404 {
		t.Errorf("/api/v1/jobs on the worker: %d", status)
	}
	dead := redis.NewClient(&redis.Options{Addr: closedAddr(t)})
	defer dead.Close()
	if status, body := get(t, metrics.Ops(m, b.db, dead), "/readyz"); status != 503 || !strings.Contains(body, `"redis":"down"`) {
		t.Errorf("/readyz with Redis down: %d %s", status, body)
	}
	if status, _ := get(t, metrics.Ops(m, b.db, dead), "/healthz"); status != 200 {
		t.Errorf("/healthz with Redis down: %d", status)
	}
}
