// Command bench is the platform benchmark (`make bench`, `make bench-quick`):
// flags become an internal/bench Config, its Benchmarker runs, and the
// results are printed and written as JSON (bench/results.json).
//
// It uses a database of its own (scrapethis_bench, dropped and recreated at
// start) and Redis database 10 (flushed at start; the tests take 2 to 9).
// README.md, section Benchmark, says how to run it and read the table.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/scrapethis/scrapethis/internal/bench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := bench.Config{Recreate: true, Progress: stderr}
	quick := fs.Bool("quick", false, "a shorter run (under a minute) with smaller sizes")
	fs.StringVar(&cfg.Bin, "bin", "bin/scrapethis", "the scrapethis binary to run as API and worker (built if missing)")
	out := fs.String("out", "bench/results.json", "where to write the results as JSON")
	fs.StringVar(&cfg.DatabaseURL, "database-url", envOr("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/scrapethis_bench?sslmode=disable"),
		"the bench's own database: DROPPED and recreated at start (env BENCH_DATABASE_URL)")
	fs.StringVar(&cfg.RedisURL, "redis-url", envOr("BENCH_REDIS_URL", "redis://127.0.0.1:6379/10"),
		"the bench's own Redis database: FLUSHED at start (env BENCH_REDIS_URL)")
	fs.IntVar(&cfg.WorkerConcurrency, "worker-concurrency", 0, "SCRAPETHIS_WORKER_CONCURRENCY for the worker (0: the product default)")
	fs.BoolVar(&cfg.Keep, "keep", false, "keep the temporary directory (spiders, child logs) and print its path")
	only := fs.String("run", "", "run only these scenarios, comma-separated: "+strings.Join(bench.ScenarioKeys(), ","))
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	cfg.Mode, cfg.Sizes = "full", bench.FullSizes()
	if *quick {
		cfg.Mode, cfg.Sizes = "quick", bench.QuickSizes()
	}
	for _, k := range strings.Split(*only, ",") {
		if k = strings.TrimSpace(k); k != "" {
			cfg.Only = append(cfg.Only, k)
		}
	}

	b, err := bench.New(cfg)
	if err != nil {
		return err
	}
	res, err := b.Run(ctx)
	if err != nil {
		return err
	}
	res.Print(stdout)
	if err := res.WriteJSON(*out); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\nwritten to %s in %s\n", *out, time.Since(res.Started).Round(100*time.Millisecond))
	return nil
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
