package main_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/scrapethis/scrapethis/db"
	"github.com/scrapethis/scrapethis/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// build compiles the real binaries into a temp dir.
func build(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	out, err := exec.Command("go", "build", "-o", filepath.Join(dir, "scrapethis"), ".").CombinedOutput()
	if err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return filepath.Join(dir, "scrapethis")
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

type env []string

func (e env) run(t *testing.T, bin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = e
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", bin, args, err, stderr.String())
	}
	return string(out)
}

// start runs a long-lived subcommand until the test ends.
func (e env) start(t *testing.T, bin string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = e
	logf, _ := os.Create(filepath.Join(t.TempDir(), "log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			t.Errorf("%v did not stop on SIGINT", args)
		}
		if t.Failed() {
			data, _ := os.ReadFile(logf.Name())
			t.Logf("%v output:\n%s", args, data)
		}
	})
	return cmd
}

type client struct {
	t    *testing.T
	base string
	key  string
}

func (c client) do(method, path, body string) (int, []byte) {
	c.t.Helper()
	req, _ := http.NewRequest(method, c.base+path, strings.NewReader(body))
	if c.key != "" {
		req.Header.Set("Authorization", "Bearer "+c.key)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer res.Body.Close()
	data, _ := io.ReadAll(res.Body)
	if !json.Valid(data) && res.Header.Get("Content-Type") == "application/json" {
		c.t.Fatalf("%s %s answered invalid JSON: %q", method, path, data)
	}
	return res.StatusCode, data
}

func (c client) expect(method, path, body string, status int) map[string]any {
	c.t.Helper()
	got, data := c.do(method, path, body)
	if got != status {
		c.t.Fatalf("%s %s %s: %d, want %d: %s", method, path, body, got, status, data)
	}
	var m map[string]any
	json.Unmarshal(data, &m)
	return m
}

// TestBinaryEndToEnd drives the built program as a user would: migrate
// (twice at once), create keys, run the API and a worker as separate
// processes, and use the published API over HTTP.
func TestBinaryEndToEnd(t *testing.T) {
	bin := build(t)
	spiders := t.TempDir()
	os.WriteFile(filepath.Join(spiders, "hello.sh"), []byte("#!/bin/sh\necho '{\"hello\":\"world\"}'\necho 'said hello' >&2\n"), 0o755)
	os.WriteFile(filepath.Join(spiders, "sleep.sh"), []byte("#!/bin/sh\nexec sleep 300\n"), 0o755)
	addr := freeAddr(t)
	schedMetrics := freeAddr(t)
	dsn := testenv.DatabaseDSN(t)
	// A database that does not exist yet: migrate creates it.
	dsn = strings.Replace(dsn, "scrapethis_test_", "scrapethis_e2e_", 1)
	e := env(append(os.Environ(),
		"DATABASE_URL="+dsn,
		"REDIS_URL="+testenv.LeaseRedis(t),
		"SCRAPETHIS_HTTP_ADDR="+addr,
		"SCRAPETHIS_SPIDERS_DIR="+spiders,
		"SCRAPETHIS_CACHE_DIR="+t.TempDir(),
		"SCRAPETHIS_WORKER_METRICS_ADDR="+freeAddr(t),
		"SCRAPETHIS_SCHEDULER_METRICS_ADDR="+schedMetrics,
		"SCRAPETHIS_CANCEL_GRACE=1s",
	))
	t.Cleanup(func() { dropDB(dsn) })

	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); e.run(t, bin, "migrate") }()
	}
	wg.Wait()
	if out := e.run(t, bin, "migrate"); !strings.Contains(out, "up to date") {
		t.Fatalf("third migrate: %q", out)
	}
	key := lastLine(e.run(t, bin, "apikey", "create", "--email", "alice@example.com", "--name", "laptop"))
	otherKey := lastLine(e.run(t, bin, "apikey", "create", "--email", "bob@example.com"))
	if !strings.HasPrefix(key, "st_") || len(key) < 40 {
		t.Fatalf("key %q", key)
	}

	e.start(t, bin, "api")
	e.start(t, bin, "worker")
	e.start(t, bin, "scheduler")
	base := "http://" + addr
	waitHTTP(t, base+"/api/v1/jobs")
	alice := client{t, base, key}
	bob := client{t, base, otherKey}
	anon := client{t, base, ""}

	anon.expect("GET", "/api/v1/jobs", "", 401)
	client{t, base, "st_wrong"}.expect("POST", "/api/v1/jobs", `{"spider_name":"x"}`, 401)

	hello := alice.expect("POST", "/api/v1/spiders", `{"name":"hello","repo_path":"hello.sh"}`, 201)["id"].(string)
	alice.expect("POST", "/api/v1/spiders", `{"name":"sleepy","repo_path":"sleep.sh"}`, 201)
	alice.expect("POST", "/api/v1/spiders", `{"name":"evil","repo_path":"../../etc/passwd"}`, 400)
	alice.expect("POST", "/api/v1/spiders", `{"name":"hello","repo_path":"x.sh"}`, 409)

	for body, status := range map[string]int{
		`{}`: 400, `{"spider_id":`: 400, `{"spider_name":"hello","arguments":[]}`: 400,
		`{"spider_name":"hello","arguments":{"a-b":1}}`: 400, `{"spider_name":"nope"}`: 404,
	} {
		alice.expect("POST", "/api/v1/jobs", body, status)
	}
	bob.expect("POST", "/api/v1/jobs", `{"spider_id":"`+hello+`"}`, 404)

	created := alice.expect("POST", "/api/v1/jobs", `{"spider_id":"`+hello+`","arguments":{"greeting":"hi"}}`, 200)
	jobID := created["jobId"].(string)
	if created["status"] != "pending" {
		t.Fatalf("created %v", created)
	}
	var job map[string]any
	deadline := time.Now().Add(60 * time.Second)
	for {
		job = alice.expect("GET", "/api/v1/jobs/"+jobID, "", 200)
		if job["status"] == "finished" || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if job["status"] != "finished" || job["items_scraped"] != float64(1) || job["finished_at"] == nil {
		t.Fatalf("job %v", job)
	}
	bob.expect("GET", "/api/v1/jobs/"+jobID, "", 404)
	if _, data := alice.do("GET", "/api/v1/jobs/"+jobID+"/items", ""); strings.TrimSpace(string(data)) != `[{"hello":"world"}]` {
		t.Fatalf("items %s", data)
	}
	if _, data := alice.do("GET", "/api/v1/jobs/"+jobID+"/logs", ""); !strings.Contains(string(data), "said hello") {
		t.Fatalf("logs %s", data)
	}
	alice.expect("DELETE", "/api/v1/jobs/"+jobID, "", 409)

	// Cancel a running job: the worker stops it and DELETE waits for that.
	run := alice.expect("POST", "/api/v1/jobs", `{"spider_name":"sleepy"}`, 200)["jobId"].(string)
	for i := 0; ; i++ {
		if alice.expect("GET", "/api/v1/jobs/"+run, "", 200)["status"] == "running" {
			break
		}
		if i > 1000 {
			t.Fatal("job never started")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if m := alice.expect("DELETE", "/api/v1/jobs/"+run, "", 200); m["ok"] != true || m["message"] != "Job cancelled" {
		t.Fatalf("cancel %v", m)
	}
	if st := alice.expect("GET", "/api/v1/jobs/"+run, "", 200)["status"]; st != "cancelled" {
		t.Fatalf("after DELETE: %v", st)
	}

	_, data := alice.do("GET", "/api/v1/jobs?limit=10", "")
	var list []map[string]any
	json.Unmarshal(data, &list)
	if len(list) != 2 || list[0]["id"] != run || list[1]["id"] != jobID {
		t.Fatalf("list %s", data)
	}

	// A schedule started by the separate scheduler process carries its id.
	sched := alice.expect("POST", "/api/v1/schedules", `{"spider_name":"hello","cron":"@every 1s"}`, 201)["id"].(string)
	for i := 0; ; i++ {
		_, data := alice.do("GET", "/api/v1/jobs?limit=1", "")
		var rows []map[string]any
		json.Unmarshal(data, &rows)
		if len(rows) == 1 && rows[0]["schedule_id"] == sched {
			break
		}
		if i > 1500 {
			t.Fatal("the scheduler started no job")
		}
		time.Sleep(20 * time.Millisecond)
	}
	alice.expect("DELETE", "/api/v1/schedules/"+sched, "", 200)
	waitHTTP(t, "http://"+schedMetrics+"/metrics")
	if res, err := http.Get("http://" + schedMetrics + "/metrics"); err != nil {
		t.Fatal(err)
	} else {
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if !strings.Contains(string(body), "scrapethis_jobs_scheduled_total") {
			t.Fatalf("scheduler metrics lack scrapethis_jobs_scheduled_total")
		}
	}

	// A revoked key stops working at once.
	e.run(t, bin, "apikey", "revoke", "--key", key)
	for i := 0; ; i++ {
		if st, _ := alice.do("GET", "/api/v1/jobs", ""); st == 401 {
			break
		}
		if i > 200 {
			t.Fatal("revoked key still accepted")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

func waitHTTP(t *testing.T, url string) {
	t.Helper()
	for i := 0; i < 300; i++ {
		if res, err := http.Get(url); err == nil {
			res.Body.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s never answered", url)
}

func dropDB(dsn string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db.DropDatabase(ctx, dsn)
}
