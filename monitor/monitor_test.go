package monitor_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/scrapethis/scrapethis"
	"github.com/scrapethis/scrapethis/api"
	"github.com/scrapethis/scrapethis/db"
	"github.com/scrapethis/scrapethis/internal/testenv"
	"github.com/scrapethis/scrapethis/monitor"
	"github.com/scrapethis/scrapethis/tasks"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

const (
	adminUser     = "admin"
	adminPassword = "correct horse battery staple"
)

// bundle is a test database and Redis, with a job queued, and API servers
// on them with the monitoring UI mounted as asked.
type bundle struct {
	t        *testing.T
	db       *db.DB
	redisDSN string
	queuer   *tasks.Queuer
	job      scrapethis.Job
}

func setup(t *testing.T) *bundle {
	t.Helper()
	store := testenv.DB(t)
	dsn := testenv.LeaseRedis(t) // tests here count the queue: each has its own
	opt, _ := redis.ParseURL(dsn)
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { rdb.Close() })
	b := &bundle{t: t, db: store, redisDSN: dsn, queuer: tasks.NewQueuer(rdb)}
	ctx := context.Background()
	u, err := store.EnsureUser(ctx, "ops@example.com")
	if err != nil {
		t.Fatal(err)
	}
	sp, err := store.CreateSpider(ctx, u.ID, "quotes", "quotes.py")
	if err != nil {
		t.Fatal(err)
	}
	b.job, err = store.CreateJob(ctx, scrapethis.NewJob{UserID: u.ID, SpiderID: sp.ID})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.queuer.Enqueue(ctx, b.job); err != nil {
		t.Fatal(err)
	}
	return b
}

// server serves the API with ops (the UI filled in unless noUI).
func (b *bundle) server(ops api.Ops, o monitor.Options, noUI bool) string {
	b.t.Helper()
	if !noUI {
		mon, err := monitor.New(b.redisDSN, o)
		if err != nil {
			b.t.Fatal(err)
		}
		b.t.Cleanup(func() { mon.Close() })
		ops.Monitoring = mon
	}
	srv := api.New(b.db, b.queuer, slog.New(slog.NewTextHandler(io.Discard, nil)))
	srv.Ops = ops
	return testenv.Serve(b.t, srv)
}

type request struct {
	method, url    string
	user, password string
	header         map[string]string
	noAuth         bool
}

func do(t *testing.T, r request) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(r.method, r.url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !r.noAuth {
		req.SetBasicAuth(r.user, r.password)
	}
	for k, v := range r.header {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return res.StatusCode, res.Header, body
}

func admin(method, url string) request {
	return request{method: method, url: url, user: adminUser, password: adminPassword}
}

func TestNotMountedWithoutPassword(t *testing.T) {
	b := setup(t)
	for name, url := range map[string]string{
		"no password": b.server(api.Ops{AdminUser: adminUser}, monitor.Options{}, false),
		"no UI":       b.server(api.Ops{AdminUser: adminUser, AdminPassword: adminPassword}, monitor.Options{}, true),
	} {
		for _, path := range []string{"/monitoring", "/monitoring/", "/monitoring/api/queues"} {
			if status, _, _ := do(t, request{method: "GET", url: url + path, noAuth: true}); status != 404 {
				t.Errorf("%s: GET %s without credentials answered %d, want 404", name, path, status)
			}
			if status, _, _ := do(t, admin("GET", url+path)); status != 404 {
				t.Errorf("%s: GET %s with credentials answered %d, want 404", name, path, status)
			}
		}
	}
}

func TestBasicAuth(t *testing.T) {
	b := setup(t)
	url := b.server(api.Ops{AdminUser: adminUser, AdminPassword: adminPassword}, monitor.Options{}, false)
	_, key, err := b.db.CreateAPIKey(context.Background(), b.job.UserID, "test")
	if err != nil {
		t.Fatal(err)
	}
	refused := map[string]request{
		"no credentials": {method: "GET", noAuth: true},
		"wrong password": {method: "GET", user: adminUser, password: adminPassword + "x"},
		"wrong user":     {method: "GET", user: "root", password: adminPassword},
		"empty":          {method: "GET"},
		"API key":        {method: "GET", noAuth: true, header: map[string]string{"Authorization": "Bearer " + key}},
	}
	for _, path := range []string{"/monitoring", "/monitoring/", "/monitoring/api/queues", "/monitoring/static/js/main.js"} {
		for name, r := range refused {
			r.url = url + path
			status, header, body := do(t, r)
			if status != 401 {
				t.Errorf("%s on %s: %d, want 401", name, path, status)
				continue
			}
			if !strings.HasPrefix(header.Get("WWW-Authenticate"), "Basic ") {
				t.Errorf("%s on %s: no Basic challenge", name, path)
			}
			if strings.Contains(string(body), "spiders") || strings.Contains(string(body), "<html") {
				t.Errorf("%s on %s leaked %s", name, path, body)
			}
		}
	}

	status, _, body := do(t, admin("GET", url+"/monitoring/"))
	if status != 200 || !strings.Contains(string(body), "<html") {
		t.Fatalf("UI with credentials: %d %.200s", status, body)
	}
	status, _, body = do(t, admin("GET", url+"/monitoring/api/queues"))
	if status != 200 || !strings.Contains(string(body), `"spiders"`) {
		t.Fatalf("queues with credentials: %d %s", status, body)
	}
}

// pendingPayloads lists the pending tasks' payloads as the UI shows them.
func pendingPayloads(t *testing.T, url string) []string {
	t.Helper()
	status, _, body := do(t, admin("GET", url+"/monitoring/api/queues/"+tasks.Queue+"/pending_tasks"))
	if status != 200 {
		t.Fatalf("pending tasks: %d %s", status, body)
	}
	var out struct {
		Tasks []struct {
			ID      string `json:"id"`
			Payload string `json:"payload"`
		} `json:"tasks"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatalf("pending tasks %s: %v", body, err)
	}
	var payloads []string
	for _, task := range out.Tasks {
		payloads = append(payloads, task.Payload)
	}
	return payloads
}

func TestPayloadReadable(t *testing.T) {
	b := setup(t)
	url := b.server(api.Ops{AdminPassword: adminPassword}, monitor.Options{}, false)
	want := "job " + b.job.ID + " spider quotes user " + b.job.UserID
	if got := pendingPayloads(t, url); len(got) != 1 || got[0] != want {
		t.Fatalf("payloads %q, want [%q]", got, want)
	}
}

func TestFormatPayload(t *testing.T) {
	t.Parallel()
	cases := []struct{ typ, payload, want string }{
		{tasks.TypeRunSpider, `{"job_id":"j1","spider":"s","user_id":"u1"}`, "job j1 spider s user u1"},
		{tasks.TypeRunSpider, `{"job_id":"j1"}`, "job j1"},
		{tasks.TypeRunSpider, `not json`, "not json"},
		{"other:task", `{"a":1}`, `{"a":1}`},
	}
	for _, c := range cases {
		if got := monitor.FormatPayload(c.typ, []byte(c.payload)); got != c.want {
			t.Errorf("FormatPayload(%q, %q) = %q, want %q", c.typ, c.payload, got, c.want)
		}
	}
}

// TestReadOnly checks that a read-only UI refuses every write, where the
// same request on a writable UI goes through.
func TestReadOnly(t *testing.T) {
	b := setup(t)
	ops := api.Ops{AdminUser: adminUser, AdminPassword: adminPassword}
	ro := b.server(ops, monitor.Options{ReadOnly: true}, false)
	rw := b.server(ops, monitor.Options{}, false)
	inspector := b.queuer.Inspector()

	writes := []request{
		admin("POST", ro+"/monitoring/api/queues/"+tasks.Queue+":pause"),
		admin("DELETE", ro+"/monitoring/api/queues/"+tasks.Queue+"/pending_tasks/"+b.job.ID),
		admin("POST", ro+"/monitoring/api/queues/"+tasks.Queue+"/pending_tasks/"+b.job.ID+":archive"),
		admin("DELETE", ro+"/monitoring/api/queues/"+tasks.Queue+"/pending_tasks:delete_all"),
		admin("DELETE", ro+"/monitoring/api/queues/"+tasks.Queue),
	}
	for _, r := range writes {
		status, _, body := do(t, r)
		// asynqmon's refusal, not a route missing from the API's table.
		if status != http.StatusMethodNotAllowed || !strings.Contains(string(body), "read-only") {
			t.Errorf("read-only %s %s: %d %s, want 405 from read-only mode", r.method, r.url, status, body)
		}
	}
	info, err := inspector.GetTaskInfo(tasks.Queue, b.job.ID)
	if err != nil || info.State != asynq.TaskStatePending {
		t.Fatalf("after read-only writes the task is %v, %v; want still pending", info, err)
	}
	if q, err := inspector.GetQueueInfo(tasks.Queue); err != nil || q.Paused {
		t.Fatalf("after read-only writes the queue is paused=%v, %v", q != nil && q.Paused, err)
	}
	// Reads still work.
	if got := pendingPayloads(t, ro); len(got) != 1 {
		t.Fatalf("read-only lists %d pending tasks, want 1", len(got))
	}

	// A page elsewhere cannot drive the writable UI with the browser's
	// cached credentials.
	cross := admin("POST", rw+"/monitoring/api/queues/"+tasks.Queue+":pause")
	cross.header = map[string]string{"Sec-Fetch-Site": "cross-site"}
	if status, _, _ := do(t, cross); status != http.StatusForbidden {
		t.Errorf("cross-site pause: %d, want 403", status)
	}
	if q, _ := inspector.GetQueueInfo(tasks.Queue); q.Paused {
		t.Fatal("cross-site pause went through")
	}

	// The same write, same-origin, on the writable UI: it goes through.
	same := admin("POST", rw+"/monitoring/api/queues/"+tasks.Queue+":pause")
	same.header = map[string]string{"Sec-Fetch-Site": "same-origin"}
	if status, _, body := do(t, same); status != http.StatusNoContent {
		t.Fatalf("writable pause: %d %s", status, body)
	}
	if q, err := inspector.GetQueueInfo(tasks.Queue); err != nil || !q.Paused {
		t.Fatalf("writable pause did not pause: %v", err)
	}
}

func TestBadRedisURL(t *testing.T) {
	t.Parallel()
	for _, url := range []string{"http://127.0.0.1:6379", "redis-sentinel://127.0.0.1:26379", "nope"} {
		if _, err := monitor.New(url, monitor.Options{}); err == nil {
			t.Errorf("monitor.New(%q) accepted it", url)
		}
	}
}
