// Package bench is the platform benchmark (`make bench`, `make bench-quick`,
// cmd/bench), importable so that a test runs it at a tiny size.
//
// A Benchmarker runs the real binary, `scrapethis api` and `scrapethis
// worker`, as child processes against Postgres and Redis, drives them over
// HTTP the way a client does, and measures each scenario against a raw
// baseline taken in the same run where one makes sense. Its Results print
// as one table and write as JSON. A target that is not met is printed as a
// gap.
//
// README.md, section Benchmark, says how to run it and read the table.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/scrapethis/scrapethis/db"
)

// Sizes are how much each scenario does.
type Sizes struct {
	CreateClients  []int         // concurrent HTTP clients, one run each
	CreateRequests int           // POSTs per run (and raw inserts for the baseline)
	CreateMax      time.Duration // time cap per run
	CreateWarmup   int           // POSTs (and raw inserts) before measuring
	Idle           time.Duration // idle measurement window
	Settle         time.Duration // pause before the worker's idle window, for the start-up job's traffic to end
	DispatchJobs   int
	DeployMB       int // the size of the uploaded archive's random payload
	CompletionJobs int
	SandboxBlocks  int // of four sandbox rounds each (on, off, off, on)
	CancelJobs     int
	FloodJobs      int // jobs one user floods a capped spider with (fair share)
	Items          int
	ListRows       int           // job rows in the table
	ListUserRows   int           // of which the listed user's (at least 50 with status error)
	ListRequests   int           // requests per listing variant
	Total          time.Duration // time cap of the whole run
}

// FullSizes are `make bench`'s.
func FullSizes() Sizes {
	return Sizes{
		CreateClients:  []int{16, 32, 64},
		CreateRequests: 20000,
		CreateMax:      15 * time.Second,
		CreateWarmup:   500,
		Idle:           3 * time.Second,
		Settle:         200 * time.Millisecond,
		DispatchJobs:   200,
		DeployMB:       20,
		CompletionJobs: 3000,
		SandboxBlocks:  2,
		CancelJobs:     100,
		FloodJobs:      1000,
		Items:          1_000_000,
		ListRows:       1_000_000,
		ListUserRows:   100_000,
		ListRequests:   1000,
		Total:          20 * time.Minute,
	}
}

// QuickSizes are `make bench-quick`'s: under a minute.
func QuickSizes() Sizes {
	return Sizes{
		CreateClients:  []int{32},
		CreateRequests: 3000,
		CreateMax:      4 * time.Second,
		CreateWarmup:   500,
		Idle:           time.Second,
		Settle:         200 * time.Millisecond,
		DispatchJobs:   60,
		DeployMB:       20,
		CompletionJobs: 600,
		SandboxBlocks:  1,
		CancelJobs:     30,
		FloodJobs:      1000,
		Items:          100_000,
		ListRows:       200_000,
		ListUserRows:   20_000,
		ListRequests:   300,
		Total:          2 * time.Minute,
	}
}

// Config is what a Benchmarker runs, against what.
type Config struct {
	Sizes Sizes
	Mode  string // a label for the report: "full", "quick", "tiny"

	// Bin is the scrapethis binary run as API and worker, built (from the
	// module the current directory is in) when missing. SpiderBin is the
	// bench spider (cmd/bench/benchspider), built into the run's
	// temporary directory when empty.
	Bin, SpiderBin string

	// DatabaseURL is the bench's own database. With Recreate it is dropped
	// and created again at start, and its name must contain "bench";
	// otherwise it must exist and is migrated. RedisURL names the bench's
	// own Redis database index (not 0), flushed at start.
	DatabaseURL string
	Recreate    bool
	RedisURL    string

	WorkerConcurrency int      // SCRAPETHIS_WORKER_CONCURRENCY for the worker; 0 is the product default
	Keep              bool     // keep the temporary directory (spiders, child logs)
	Only              []string // the scenarios to run (ScenarioKeys); empty is all
	Progress          io.Writer
}

// ScenarioKeys name the scenarios for Config.Only, in the order they run.
func ScenarioKeys() []string {
	return []string{"create", "idle", "dispatch", "deploy", "completion", "webhooks", "sandbox", "scrapy", "cancel", "fairshare", "items", "list"}
}

// Benchmarker is one run of the benchmark: its connections, its child
// processes and its results. Run it once.
type Benchmarker struct {
	cfg      Config
	sz       Sizes
	only     map[string]bool // nil is all
	res      *Results
	progress io.Writer
	procs    *procs

	// Set up by setup, released by close.
	dir        string // temporary: spiders, child logs, stamp and pid files
	spidersDir string
	helper     string // the bench spider binary
	bin        string // absolute path of the scrapethis binary

	store   *db.DB
	rdb     redis.UniversalClient
	ropt    *redis.Options
	redisDB int

	env    []string // the children's environment
	api    *child
	worker *child
	client *apiClient

	userID      string
	key         string
	spiders     map[string]string // name -> id, of the bench user
	concurrency int               // the worker's

	// completionRate is the completion row's jobs/s, for the webhooks row.
	completionRate float64
	// workerIdleCPU is the worker's CPU while idle, % of a core.
	workerIdleCPU float64
}

// New checks cfg and returns a Benchmarker for it.
func New(cfg Config) (*Benchmarker, error) {
	if err := checkTargets(cfg); err != nil {
		return nil, err
	}
	if cfg.Bin == "" {
		return nil, errors.New("bench: no scrapethis binary (Config.Bin)")
	}
	if len(cfg.Sizes.CreateClients) == 0 || cfg.Sizes.Total <= 0 {
		return nil, errors.New("bench: sizes have no create clients or no total time")
	}
	b := &Benchmarker{cfg: cfg, sz: cfg.Sizes, progress: cfg.Progress}
	if b.progress == nil {
		b.progress = io.Discard
	}
	if len(cfg.Only) > 0 {
		b.only = map[string]bool{}
		for _, k := range cfg.Only {
			if !slices.Contains(ScenarioKeys(), k) {
				return nil, fmt.Errorf("bench: unknown scenario %q (have %s)", k, strings.Join(ScenarioKeys(), ", "))
			}
			b.only[k] = true
		}
	}
	p, err := newProcs()
	if err != nil {
		return nil, err
	}
	b.procs = p
	return b, nil
}

// checkTargets refuses a database or Redis index that may hold data worth
// keeping, since the bench drops the one and flushes the other.
func checkTargets(cfg Config) error {
	u, err := url.Parse(cfg.DatabaseURL)
	if err != nil || u.Scheme == "" {
		return fmt.Errorf("bench: database url %q is not a postgres:// URL", cfg.DatabaseURL)
	}
	if name := strings.TrimPrefix(u.Path, "/"); cfg.Recreate && !strings.Contains(name, "bench") {
		return fmt.Errorf("bench: refusing to drop database %q: the bench's database name must contain \"bench\"", name)
	}
	opt, err := redis.ParseURL(cfg.RedisURL)
	if err != nil {
		return fmt.Errorf("bench: redis url: %w", err)
	}
	if opt.DB == 0 {
		return errors.New("bench: refusing to flush Redis database 0 (`make run` uses it): give the bench its own, such as /8")
	}
	return nil
}

// scenario is one step of a run. A step with no key always runs.
type scenario struct {
	key, name string
	fn        func(context.Context) error
}

func (b *Benchmarker) scenarios() []scenario {
	return []scenario{
		{"create", "create throughput", b.createThroughput},
		{"idle", "idle cost, API only", b.idleAPI},
		{"", "start worker", b.startWorker},
		{"idle", "idle cost, worker", b.idleWorker},
		{"dispatch", "dispatch latency", b.dispatchLatency},
		{"deploy", "deploys", b.deployed},
		{"completion", "job completion throughput", b.completionThroughput},
		{"webhooks", "webhook delivery lag", b.webhookLag},
		{"sandbox", "sandbox cost", b.sandboxCost},
		{"scrapy", "Scrapy runners", b.scrapyRunners},
		{"cancel", "cancel latency", b.cancelLatency},
		{"fairshare", "fair share", b.fairShare},
		{"items", "item ingestion", b.itemIngestion},
		{"list", "list latency", b.listLatency},
		{"", "memory", b.memory},
	}
}

// errFatal marks a failure after which no later scenario can run.
var errFatal = errors.New("fatal")

// Run sets up, runs every scenario (or those of Config.Only), stops the
// children and returns the results. A scenario that fails is a failed row
// in the results, not an error: the error is for a run that could not set
// up at all.
func (b *Benchmarker) Run(ctx context.Context) (*Results, error) {
	if b.res != nil {
		return nil, errors.New("bench: a Benchmarker runs once")
	}
	b.res = &Results{Started: time.Now(), Mode: b.cfg.Mode, Meta: map[string]any{}}
	if len(b.cfg.Only) > 0 {
		b.res.Meta["only"] = strings.Join(b.cfg.Only, ",") // a partial run
	}
	ctx, cancel := context.WithTimeout(ctx, b.sz.Total)
	defer cancel()
	defer b.close()
	if err := b.setup(ctx); err != nil {
		return nil, err
	}
	runNoise := b.startNoise(ctx)
	for _, s := range b.scenarios() {
		if b.only != nil && s.key != "" && !b.only[s.key] {
			continue
		}
		if ctx.Err() != nil {
			b.res.fail(s.name, fmt.Errorf("not run: %w", context.Cause(ctx)))
			continue
		}
		start := time.Now()
		b.say("== %s", s.name)
		first := len(b.res.Rows)
		nz := b.startNoise(ctx)
		err := s.fn(ctx)
		others := nz.others(ctx)
		for i := first; i < len(b.res.Rows); i++ {
			b.res.Rows[i].Others = math.Round(others*10) / 10
		}
		if others >= noisyPct {
			b.say("   WARNING: other processes used %.0f%% of the machine's CPU during %s", others, s.name)
		}
		if err != nil {
			b.say("   %s failed: %v", s.name, err)
			b.res.fail(s.name, err)
			if errors.Is(err, errFatal) {
				break
			}
		}
		b.say("   %s done in %s", s.name, time.Since(start).Round(10*time.Millisecond))
	}
	b.res.add("noise: CPU used by other processes, whole run", runNoise.others(ctx), "% of machine", nil, false, nil, "")
	b.stopChildren()
	b.res.Meta["duration_seconds"] = time.Since(b.res.Started).Round(time.Millisecond).Seconds()
	b.res.Describe = b.describe()
	return b.res, nil
}

func (b *Benchmarker) say(format string, args ...any) {
	fmt.Fprintf(b.progress, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05.000")}, args...)...)
}
