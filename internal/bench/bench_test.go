package bench

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/scrapethis/scrapethis/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// tinySizes run every scenario in a few seconds: enough for each to make
// its rows, too little for the numbers to mean anything.
func tinySizes() Sizes {
	return Sizes{
		CreateClients:  []int{4},
		CreateRequests: 40,
		CreateMax:      5 * time.Second,
		CreateWarmup:   20,
		Idle:           300 * time.Millisecond,
		Settle:         50 * time.Millisecond,
		DispatchJobs:   3,
		DeployMB:       1,
		CompletionJobs: 10,
		SandboxBlocks:  1,
		CancelJobs:     2,
		FloodJobs:      20,
		Items:          2000,
		ListRows:       2000,
		ListUserRows:   1000, // 80 of them with status error: a full page
		ListRequests:   5,
		Total:          3 * time.Minute, // under make test, beside every other package's tests
	}
}

// build compiles a package of this module into dir and returns the path.
func build(t *testing.T, dir, pkg string) string {
	t.Helper()
	out := filepath.Join(dir, filepath.Base(pkg))
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	cmd := exec.Command(goTool, "build", "-o", out, modulePath+"/"+pkg)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	return out
}

// logWriter sends the Benchmarker's progress to the test log.
type logWriter struct {
	mu sync.Mutex
	t  *testing.T
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// TestBenchmarkerTiny runs every scenario against the real binary, Postgres
// and Redis at a tiny size, and checks that each made its rows, with values
// and, where the row has one, a raw baseline from the same run. It checks
// no number against a target: at this size they are noise.
func TestBenchmarkerTiny(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := Config{
		Sizes:       tinySizes(),
		Mode:        "tiny",
		Bin:         build(t, dir, "cmd/scrapethis"),
		SpiderBin:   build(t, dir, "cmd/bench/benchspider"),
		DatabaseURL: testenv.DatabaseDSN(t),
		RedisURL:    testenv.LeaseRedis(t),
		Progress:    &logWriter{t: t},
	}
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	res, err := b.Run(context.Background())
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	var table strings.Builder
	res.Print(&table)
	t.Log(table.String())

	rows := map[string]Row{}
	// The sandboxed worker needs root: without it, its rows are failures
	// that say so.
	sandboxed := os.Geteuid() == 0
	for _, r := range res.Rows {
		if !sandboxed && strings.HasPrefix(r.Name, "sandbox") {
			continue
		}
		if strings.HasPrefix(r.Note, "FAILED") {
			t.Errorf("%s: %s", r.Name, r.Note)
		}
		rows[r.Name] = r
	}
	// Every row the scenarios make: whether it must be above zero, and
	// whether it has a raw baseline.
	want := []struct {
		name               string
		positive, baseline bool
	}{
		{"create: POST /jobs, 4 clients", true, true},
		{"create: POST /jobs with Idempotency-Key, 4 clients", true, true},
		{"create: UserByKey + CreateJob + Enqueue one by one, in-process", true, true},
		{"idle: Redis commands/s, API only", false, false},
		{"idle: Redis commands/s, worker (its DB, MONITOR)", true, false},
		{"idle: Redis commands/s, server-wide (commandstats)", true, false},
		{"idle: worker CPU", false, false},
		// A spider may start before the client has the 200: not positive.
		{"dispatch latency p50 (POST 200 -> spider started)", false, true},
		{"dispatch latency p99 (POST 200 -> spider started)", false, true},
		{"completion: no-op spider jobs/s (POST all -> all final)", true, true},
		{"completion: per-job overhead beyond fork/exec", false, false},
		{"completion: worker CPU per job", false, false},
		{"completion: spider processes CPU per job", false, false},
		{"completion: API CPU per job", false, false},
		{"completion: Redis CPU per job", false, false},
		{"completion: bench CPU per job", false, false},
		{"webhooks: delivery lag p50 (final status -> receiver)", true, false},
		{"webhooks: delivery lag p99 (final status -> receiver)", true, false},
		{"webhooks: no-op jobs/s with a webhook on every job", true, true},
		{"sandbox: no-op job run time p50, sandbox on (started -> finished)", true, true},
		{"sandbox: per-job overhead p50 (on minus off)", false, false},
		{"sandbox: no-op jobs/s, sandbox on (POST all -> all final)", true, true},
		{"sandbox: init memory per running job (private, RssAnon)", true, false},
		{"cancel latency p50 (DELETE -> process group gone)", true, false},
		{"cancel latency p99 (DELETE -> process group gone)", true, false},
		{"item ingestion, 1 spider, 2k items", true, true},
		{"list jobs limit=50 p50", true, true},
		{"list jobs limit=50 p99", true, true},
		{"list jobs status=error limit=50 p50", true, true},
		{"list jobs status=error limit=50 p99", true, true},
		{"list jobs spider_id limit=50 p50", true, true},
		{"list jobs spider_id limit=50 p99", true, true},
		{"peak RSS: api (bin/scrapethis api)", true, false},
		{"peak RSS: worker (bin/scrapethis worker)", true, false},
		{"peak RSS: bench process (not the product)", true, false},
		{"noise: CPU used by other processes, whole run", false, false},
	}
	for _, w := range want {
		if !sandboxed && strings.HasPrefix(w.name, "sandbox") {
			continue
		}
		r, ok := rows[w.name]
		switch {
		case !ok:
			t.Errorf("no row %q", w.name)
			continue
		case math.IsNaN(r.Value) || math.IsInf(r.Value, 0):
			t.Errorf("%s: value %v", w.name, r.Value)
		case w.positive && r.Value <= 0:
			t.Errorf("%s: value %v, want above 0", w.name, r.Value)
		}
		if w.baseline && (r.Baseline == nil || *r.Baseline <= 0) {
			t.Errorf("%s: no raw baseline (%v)", w.name, r.Baseline)
		}
		if w.baseline && w.positive && r.Ratio == nil {
			t.Errorf("%s: no ratio to its baseline", w.name)
		}
		if !w.baseline && r.Baseline != nil {
			t.Errorf("%s: a baseline %v where none is measured", w.name, *r.Baseline)
		}
	}

	// The JSON file holds the same rows.
	path := filepath.Join(dir, "results.json")
	if err := res.WriteJSON(path); err != nil {
		t.Fatal(err)
	}
	body, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Mode string         `json:"mode"`
		Meta map[string]any `json:"meta"`
		Rows []Row          `json:"rows"`
	}
	if err := json.Unmarshal(body, &file); err != nil {
		t.Fatalf("results.json: %v", err)
	}
	if file.Mode != "tiny" || len(file.Rows) != len(res.Rows) || file.Meta["postgres"] == nil {
		t.Errorf("results.json: mode %q, %d rows of %d, meta %v", file.Mode, len(file.Rows), len(res.Rows), file.Meta)
	}
}

func TestNewRefuses(t *testing.T) {
	t.Parallel()
	good := Config{Sizes: tinySizes(), Bin: "scrapethis", DatabaseURL: "postgres://127.0.0.1/x_bench", RedisURL: "redis://127.0.0.1:6379/8"}
	for name, mod := range map[string]func(*Config){
		"a database to drop without bench in its name": func(c *Config) { c.Recreate, c.DatabaseURL = true, "postgres://127.0.0.1/scrapethis" },
		"Redis database 0":    func(c *Config) { c.RedisURL = "redis://127.0.0.1:6379/0" },
		"an unknown scenario": func(c *Config) { c.Only = []string{"create", "nope"} },
		"no binary":           func(c *Config) { c.Bin = "" },
	} {
		c := good
		mod(&c)
		if _, err := New(c); err == nil {
			t.Errorf("%s: New accepted it", name)
		}
	}
	if _, err := New(good); err != nil {
		t.Errorf("New(%+v): %v", good, err)
	}
}
