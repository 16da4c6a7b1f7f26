package api_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/scrapethis/scrapethis/api"
	"github.com/scrapethis/scrapethis/internal/testenv"
	"github.com/scrapethis/scrapethis/metrics"
	"github.com/scrapethis/scrapethis/tasks"
)

// syncBuffer collects log output written from handler goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// opsSetup serves the API with ops and a JSON logger. The requests these
// tests send never enqueue, so Redis is not flushed (or written).
func opsSetup(t *testing.T, ops api.Ops, logs io.Writer) *bundle {
	t.Helper()
	store := testenv.DB(t)
	q := tasks.NewQueuer(testenv.RedisClient(t))
	srv := api.New(store, q, slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	srv.Ops = ops
	return &bundle{t: t, db: store, queuer: q, url: testenv.Serve(t, srv)}
}

func TestOpsDefaults(t *testing.T) {
	t.Parallel()
	b := opsSetup(t, api.Ops{}, io.Discard)
	r := b.mustStatus(b.do("GET", "/healthz", "", ""), 200)
	if strings.TrimSpace(string(r.body)) != `{"status":"ok"}` {
		t.Errorf("/healthz: %s", r.body)
	}
	for _, path := range []string{"/metrics", "/readyz", "/monitoring", "/monitoring/"} {
		b.mustStatus(b.do("GET", path, "", ""), 404)
	}
}

// TestRequestLogAndRouteMetrics checks what a request leaves behind: one
// log line with method, route pattern, status, duration and user id, and
// a count under its route pattern; never the key or a raw path as a label.
func TestRequestLogAndRouteMetrics(t *testing.T) {
	t.Parallel()
	logs := &syncBuffer{}
	m := metrics.New(prometheus.NewRegistry())
	b := opsSetup(t, api.Ops{Metrics: m, Prometheus: m.Handler()}, logs)
	uid, key := b.user("log@example.com")
	missing := uuid.NewString()

	b.mustStatus(b.do("GET", "/api/v1/jobs/"+missing, key, ""), 404)
	b.mustStatus(b.do("GET", "/api/v1/jobs", key, ""), 200)
	b.mustStatus(b.do("GET", "/api/v1/jobs", "st_wrong", ""), 401)
	b.mustStatus(b.do("GET", "/nope/"+missing, "", ""), 404)
	b.mustStatus(b.do("PUT", "/api/v1/jobs", key, ""), 405)
	b.mustStatus(b.do("GET", "/healthz", "", ""), 200)

	type line struct {
		Level      string   `json:"level"`
		Msg        string   `json:"msg"`
		Method     string   `json:"method"`
		Route      string   `json:"route"`
		Status     int      `json:"status"`
		DurationMS *float64 `json:"duration_ms"`
		UserID     string   `json:"user_id"`
	}
	var got []line
	for _, l := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var v line
		if err := json.Unmarshal([]byte(l), &v); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		if v.Msg == "request" {
			got = append(got, v)
		}
	}
	want := []line{
		{Level: "INFO", Method: "GET", Route: "/api/v1/jobs/:id", Status: 404, UserID: uid},
		{Level: "INFO", Method: "GET", Route: "/api/v1/jobs", Status: 200, UserID: uid},
		{Level: "INFO", Method: "GET", Route: "/api/v1/jobs", Status: 401},
		{Level: "INFO", Method: "GET", Route: "unmatched", Status: 404},
		{Level: "INFO", Method: "PUT", Route: "unmatched", Status: 405},
		{Level: "DEBUG", Method: "GET", Route: "/healthz", Status: 200},
	}
	if len(got) != len(want) {
		t.Fatalf("%d request lines, want %d:\n%s", len(got), len(want), logs)
	}
	for i, w := range want {
		g := got[i]
		if g.DurationMS == nil || *g.DurationMS < 0 {
			t.Errorf("line %d has no duration_ms", i)
		}
		g.Msg, g.DurationMS = "", nil
		if g != w {
			t.Errorf("line %d = %+v, want %+v", i, g, w)
		}
	}
	text := logs.String()
	for _, secret := range []string{key, "st_wrong", "Bearer", "uthorization"} {
		if strings.Contains(text, secret) {
			t.Errorf("the log contains %q:\n%s", secret, text)
		}
	}

	r := b.mustStatus(b.do("GET", "/metrics", "", ""), 200)
	exposition := string(r.body)
	for _, series := range []string{
		`scrapethis_http_requests_total{method="GET",route="/api/v1/jobs/:id",status="404"} 1`,
		`scrapethis_http_requests_total{method="GET",route="/api/v1/jobs",status="200"} 1`,
		`scrapethis_http_requests_total{method="GET",route="/api/v1/jobs",status="401"} 1`,
		`scrapethis_http_requests_total{method="GET",route="unmatched",status="404"} 1`,
		`scrapethis_http_requests_total{method="GET",route="/healthz",status="200"} 1`,
	} {
		if !strings.Contains(exposition, series+"\n") {
			t.Errorf("/metrics lacks %s", series)
		}
	}
	if strings.Contains(exposition, missing) {
		t.Error("a raw path became a metrics label")
	}
}

// TestMonitoringAuthOnly checks the mount itself with a stand-in UI: the
// credentials are checked before anything of the UI runs.
func TestMonitoringAuthOnly(t *testing.T) {
	t.Parallel()
	var reached []string
	var mu sync.Mutex
	ui := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		reached = append(reached, r.Method+" "+r.URL.Path)
		mu.Unlock()
		w.Write([]byte("ui"))
	})
	b := opsSetup(t, api.Ops{Monitoring: ui, AdminPassword: "pw"}, io.Discard)
	send := func(method, path, user, pass string) int {
		req, _ := http.NewRequest(method, b.url+path, nil)
		if user != "" || pass != "" {
			req.SetBasicAuth(user, pass)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	for _, c := range []struct{ user, pass string }{{"", ""}, {"admin", "pw2"}, {"admin", "p"}, {"admin", ""}, {"Admin", "pw"}, {"", "pw"}} {
		if status := send("GET", "/monitoring/", c.user, c.pass); status != 401 {
			t.Errorf("%q:%q answered %d, want 401", c.user, c.pass, status)
		}
		if status := send("DELETE", "/monitoring/api/queues/spiders", c.user, c.pass); status != 401 {
			t.Errorf("DELETE as %q:%q answered %d, want 401", c.user, c.pass, status)
		}
	}
	mu.Lock()
	if len(reached) != 0 {
		t.Fatalf("the UI ran without credentials: %v", reached)
	}
	mu.Unlock()
	// The default user is admin.
	for _, path := range []string{"/monitoring", "/monitoring/", "/monitoring/api/queues/spiders:pause"} {
		if status := send("GET", path, "admin", "pw"); status != 200 {
			t.Errorf("GET %s with credentials: %d", path, status)
		}
	}
	if status := send("POST", "/monitoring/api/queues/spiders:pause", "admin", "pw"); status != 200 {
		t.Errorf("POST with credentials: %d", status)
	}
}

// TestMadeUpMethodsShareOneLabel: methods a client invents are counted as
// "other", so they cannot grow the metrics.
func TestMadeUpMethodsShareOneLabel(t *testing.T) {
	t.Parallel()
	m := metrics.New(prometheus.NewRegistry())
	b := opsSetup(t, api.Ops{Metrics: m, Prometheus: m.Handler()}, io.Discard)
	for i := 0; i < 50; i++ {
		b.do(fmt.Sprintf("MADEUP%d", i), "/api/v1/jobs", "", "")
	}
	out := string(b.mustStatus(b.do("GET", "/metrics", "", ""), 200).body)
	if strings.Contains(out, "MADEUP") || !strings.Contains(out, `method="other"`) {
		t.Fatalf("made-up methods in the metrics:\n%s", out)
	}
}
