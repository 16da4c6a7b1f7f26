// Command bench is the platform benchmark (`make bench`, `make bench-quick`).
//
// It runs the real binaries, `bin/scrapethis api` and `bin/scrapethis
// worker`, as child processes against Postgres and Redis on 127.0.0.1, in
// a database of its own (scrapethis_bench, dropped and recreated at start)
// and Redis database 8 (flushed at start), drives them over HTTP the way a
// client does, and measures each against a raw baseline taken in the same
// run where one makes sense. It prints one table and writes it as JSON to
// bench/results.json. A target that is not met is printed as a gap.
//
// README.md, section Benchmark, says how to run it and read the table.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type options struct {
	quick       bool
	bin         string
	out         string
	databaseURL string
	redisURL    string
	concurrency int
	keep        bool
	only        map[string]bool // -run: the scenarios to run; nil is all
}

// sizes are how much each scenario does; -quick shrinks them.
type sizes struct {
	createClients []int         // concurrent HTTP clients, one run each
	createN       int           // POSTs per run (and raw inserts for the baseline)
	createMax     time.Duration // time cap per run
	idle          time.Duration // idle measurement window
	dispatchN     int
	completionN   int
	cancelN       int
	items         int
	listTotal     int // job rows in the table
	listUser      int // of which the listed user's
	listN         int // requests per listing variant
	total         time.Duration
}

var fullSizes = sizes{
	createClients: []int{16, 32, 64},
	createN:       20000,
	createMax:     15 * time.Second,
	idle:          3 * time.Second,
	dispatchN:     200,
	completionN:   3000,
	cancelN:       100,
	items:         1_000_000,
	listTotal:     1_000_000,
	listUser:      100_000,
	listN:         1000,
	total:         20 * time.Minute,
}

var quickSizes = sizes{
	createClients: []int{32},
	createN:       3000,
	createMax:     4 * time.Second,
	idle:          time.Second,
	dispatchN:     60,
	completionN:   600,
	cancelN:       30,
	items:         100_000,
	listTotal:     200_000,
	listUser:      20_000,
	listN:         300,
	total:         2 * time.Minute,
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.BoolVar(&o.quick, "quick", false, "a shorter run (under a minute) with smaller sizes")
	fs.StringVar(&o.bin, "bin", "bin/scrapethis", "the scrapethis binary to run as API and worker (built if missing)")
	fs.StringVar(&o.out, "out", "bench/results.json", "where to write the results as JSON")
	fs.StringVar(&o.databaseURL, "database-url", envOr("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/scrapethis_bench?sslmode=disable"),
		"the bench's own database: DROPPED and recreated at start (env BENCH_DATABASE_URL)")
	fs.StringVar(&o.redisURL, "redis-url", envOr("BENCH_REDIS_URL", "redis://127.0.0.1:6379/8"),
		"the bench's own Redis database: FLUSHED at start (env BENCH_REDIS_URL)")
	fs.IntVar(&o.concurrency, "worker-concurrency", 0, "SCRAPETHIS_WORKER_CONCURRENCY for the worker (0: the product default)")
	fs.BoolVar(&o.keep, "keep", false, "keep the temporary directory (spiders, child logs) and print its path")
	runList := fs.String("run", "", "run only these scenarios, comma-separated: "+strings.Join(scenarioKeys, ","))
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if *runList != "" {
		o.only = map[string]bool{}
		for _, k := range strings.Split(*runList, ",") {
			k = strings.TrimSpace(k)
			if !slices.Contains(scenarioKeys, k) {
				return fmt.Errorf("-run: unknown scenario %q (have %s)", k, strings.Join(scenarioKeys, ", "))
			}
			o.only[k] = true
		}
	}
	sz := fullSizes
	if o.quick {
		sz = quickSizes
	}
	ctx, cancel := context.WithTimeout(ctx, sz.total)
	defer cancel()

	b := &bench{opt: o, sz: sz, res: &Results{Started: time.Now(), Quick: o.quick, Meta: map[string]any{}}, progress: stderr}
	if *runList != "" {
		b.res.Meta["only"] = *runList // a partial run
	}
	defer b.close()
	if err := b.setup(ctx); err != nil {
		return err
	}
	scenarios := []struct {
		key, name string
		fn        func(context.Context) error
	}{
		{"create", "create throughput", b.createThroughput},
		{"idle", "idle cost, API only", b.idleAPI},
		{"", "start worker", b.startWorker},
		{"idle", "idle cost, worker", b.idleWorker},
		{"dispatch", "dispatch latency", b.dispatchLatency},
		{"completion", "job completion throughput", b.completionThroughput},
		{"cancel", "cancel latency", b.cancelLatency},
		{"items", "item ingestion", b.itemIngestion},
		{"list", "list latency", b.listLatency},
		{"", "memory", b.memory},
	}
	runNoise := b.startNoise(ctx)
	for _, s := range scenarios {
		if o.only != nil && s.key != "" && !o.only[s.key] {
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

	fmt.Fprintf(stdout, "\nScrapeThis benchmark (%s), %s, %s\n", mode(o.quick), b.res.Started.Format(time.RFC3339), b.describe())
	b.res.Print(stdout)
	if err := b.res.WriteJSON(o.out); err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	fmt.Fprintf(stdout, "\nwritten to %s in %s\n", o.out, time.Since(b.res.Started).Round(100*time.Millisecond))
	return nil
}

// scenarioKeys name the scenarios for -run, in the order they run.
var scenarioKeys = []string{"create", "idle", "dispatch", "completion", "cancel", "items", "list"}

// errFatal marks a failure after which no later scenario can run.
var errFatal = errors.New("fatal")

func mode(quick bool) string {
	if quick {
		return "quick"
	}
	return "full"
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
