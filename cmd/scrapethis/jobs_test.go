package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/scrapethis/scrapethis/api"
	"github.com/scrapethis/scrapethis/db"
	"github.com/scrapethis/scrapethis/internal/testenv"
	"github.com/scrapethis/scrapethis/tasks"
	"github.com/scrapethis/scrapethis/worker"
)

// platform is a real API server and worker on the test's own database and
// Redis, with a user and key, for driving the client commands.
type platform struct {
	t       *testing.T
	db      *db.DB
	url     string
	key     string
	userID  string
	spiders string
}

// setupPlatform starts the platform; mod, unless nil, sets up the API
// server before it serves.
func setupPlatform(t *testing.T, mod func(*api.Server)) *platform {
	t.Helper()
	store := testenv.DB(t)
	rdb := testenv.RedisClient(t)
	log := testenv.Log(t, slog.LevelWarn)
	p := &platform{t: t, db: store, spiders: t.TempDir()}
	srv := api.New(store, tasks.NewQueuer(rdb), log)
	if mod != nil {
		mod(srv)
	}
	p.url = testenv.Serve(t, srv)
	ctx := context.Background()
	u, err := store.EnsureUser(ctx, "cli@example.com")
	if err != nil {
		t.Fatal(err)
	}
	p.userID = u.ID
	if _, p.key, err = store.CreateAPIKey(ctx, u.ID, "cli"); err != nil {
		t.Fatal(err)
	}
	cfg := worker.DefaultConfig()
	cfg.SpidersDir = p.spiders
	cfg.CancelGrace = time.Second
	cfg.ShutdownTimeout = time.Second
	cfg.Sandbox.Enabled = false // the sandbox has tests of its own (worker, sandbox)
	testenv.StartWorker(t, cfg, store, rdb, log)
	return p
}

func (p *platform) getenv(k string) string {
	switch k {
	case "SCRAPETHIS_URL":
		return p.url
	case "SCRAPETHIS_API_KEY":
		return p.key
	}
	return ""
}

// cli runs the binary's command line in-process and returns its stdout and
// error.
func (p *platform) cli(args ...string) (string, error) {
	p.t.Helper()
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := run(ctx, args, p.getenv, &stdout, &stderr)
	return stdout.String(), err
}

func (p *platform) mustCLI(args ...string) string {
	p.t.Helper()
	out, err := p.cli(args...)
	if err != nil {
		p.t.Fatalf("scrapethis %s: %v", strings.Join(args, " "), err)
	}
	return out
}

func TestJobsCommands(t *testing.T) {
	t.Parallel()
	p := setupPlatform(t, nil)
	script := "#!/bin/sh\necho \"{\\\"arg\\\": \\\"$2\\\"}\"\necho 'said hello' >&2\n"
	if err := os.WriteFile(filepath.Join(p.spiders, "hello.sh"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(p.spiders, "sleep.sh"), []byte("#!/bin/sh\nexec sleep 300\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, path := range map[string]string{"hello": "hello.sh", "sleepy": "sleep.sh"} {
		if _, err := p.db.CreateSpider(context.Background(), p.userID, name, path); err != nil {
			t.Fatal(err)
		}
	}

	id := strings.TrimSpace(p.mustCLI("jobs", "start", "hello", "-a", "greeting=hi there"))
	var job struct {
		Status       string `json:"status"`
		ItemsScraped int    `json:"items_scraped"`
	}
	testenv.WaitFor(t, time.Minute, "the job to finish", func() bool {
		if err := json.Unmarshal([]byte(p.mustCLI("jobs", "get", id)), &job); err != nil {
			t.Fatal(err)
		}
		return job.Status == "finished" || job.Status == "error"
	})
	if job.Status != "finished" || job.ItemsScraped != 1 {
		t.Fatalf("job %+v", job)
	}
	if got := p.mustCLI("jobs", "items", id); strings.TrimSpace(got) != `[{"arg": "greeting=hi there"}]` {
		t.Fatalf("items %q", got)
	}
	if got := p.mustCLI("jobs", "items", id, "--format", "jsonl"); got != "{\"arg\": \"greeting=hi there\"}\n" {
		t.Fatalf("items as jsonl %q", got)
	}
	if got := p.mustCLI("jobs", "logs", id, "-f"); !strings.Contains(got, "said hello") {
		t.Fatalf("logs %q", got)
	}
	list := p.mustCLI("jobs", "list", "--status", "finished")
	if lines := strings.Split(strings.TrimSpace(list), "\n"); len(lines) != 2 ||
		!strings.HasPrefix(lines[0], "ID") || !strings.Contains(lines[1], id) || !strings.Contains(lines[1], "hello") {
		t.Fatalf("list:\n%s", list)
	}
	if list := p.mustCLI("jobs", "list", "--status", "running"); strings.Contains(list, id) {
		t.Fatalf("list of running jobs:\n%s", list)
	}
	// --json: the API's answer; --spider: by name.
	var rows []map[string]any
	if err := json.Unmarshal([]byte(p.mustCLI("jobs", "list", "--spider", "hello", "--json")), &rows); err != nil || len(rows) != 1 || rows[0]["id"] != id {
		t.Fatalf("list --spider hello --json: %v %v", rows, err)
	}
	if out := p.mustCLI("jobs", "list", "--spider", "sleepy", "--json"); strings.TrimSpace(out) != "[]" {
		t.Fatalf("list --spider sleepy: %s", out)
	}
	if got := p.mustCLI("jobs", "items", id, "--format", "csv"); got != "arg\r\ngreeting=hi there\r\n" {
		t.Fatalf("items as csv %q", got)
	}
	// The same idempotency key twice: one job.
	var first, again map[string]any
	json.Unmarshal([]byte(p.mustCLI("jobs", "start", "hello", "--idempotency-key", "cli-1", "--priority", "3", "--json")), &first)
	json.Unmarshal([]byte(p.mustCLI("jobs", "start", "hello", "--idempotency-key", "cli-1", "--priority", "3", "--json")), &again)
	if first["jobId"] == nil || first["jobId"] != again["jobId"] || first["status"] != "pending" {
		t.Fatalf("keyed starts answered %v and %v", first, again)
	}
	if _, err := p.cli("jobs", "start", "hello", "--idempotency-key", "cli-1", "-a", "x=1"); err == nil || !strings.Contains(err.Error(), "422") {
		t.Fatalf("the key with another body: %v", err)
	}
	testenv.WaitFor(t, time.Minute, "the keyed job to end", func() bool {
		return strings.Contains(p.mustCLI("jobs", "get", first["jobId"].(string)), `"finished_at": "`)
	})

	sleepy := strings.TrimSpace(p.mustCLI("jobs", "start", "sleepy", "--timeout-seconds", "600"))
	testenv.WaitFor(t, time.Minute, "the sleepy job to run", func() bool {
		return strings.Contains(p.mustCLI("jobs", "list", "--status", "running"), sleepy)
	})
	if got := p.mustCLI("jobs", "cancel", sleepy); got != "Job cancelled\n" {
		t.Fatalf("cancel said %q", got)
	}
	if got := p.mustCLI("jobs", "get", sleepy); !strings.Contains(got, `"status": "cancelled"`) || !strings.Contains(got, `"timeout_seconds": 600`) {
		t.Fatalf("cancelled job:\n%s", got)
	}

	// Failures exit non-zero with the API's own message.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"jobs", "cancel", id}, "409 Conflict"},
		{[]string{"jobs", "get", "00000000-0000-0000-0000-000000000000"}, "404 Not Found: Job not found"},
		{[]string{"jobs", "start", "nope"}, "404 Not Found: Spider not found"},
		{[]string{"jobs", "start", "hello", "-a", "a-b=1"}, "400 Bad Request"},
		{[]string{"jobs", "start", "hello", "-s", "LOG_LEVEL=DEBUG"}, "400 Bad Request: settings apply only to Scrapy spiders; hello is an executable"},
		{[]string{"jobs", "list", "--status", "sleeping"}, "400 Bad Request"},
		{[]string{"jobs", "items", id, "--format", "xml"}, "400 Bad Request: Invalid format"},
		{[]string{"jobs", "get"}, "jobs get takes 1 argument(s), got 0"},
		{[]string{"jobs", "start", "hello", "-a", "novalue"}, `"novalue" is not NAME=VALUE`},
		{[]string{"jobs", "frobnicate"}, `unknown jobs command "frobnicate"`},
		{[]string{"jobs", "list", "--spider", "nope"}, `no spider named "nope"`},
		{[]string{"jobs", "start", "hello", "--priority", "high"}, `"high" is not a whole number`},
	} {
		if _, err := p.cli(tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err %v, want %q", tc.args, err, tc.want)
		}
	}
	// A wrong key: the API's 401 message.
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"jobs", "list"}, func(k string) string {
		if k == "SCRAPETHIS_API_KEY" {
			return "st_wrong"
		}
		return p.getenv(k)
	}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "401 Unauthorized: Invalid or missing API key") {
		t.Fatalf("wrong key: %v", err)
	}
}
