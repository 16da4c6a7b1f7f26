// Command scrapethis is the whole platform in one binary: migrate, apikey,
// api, worker, scheduler, and dev (everything in one process).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/scrapethis/scrapethis/sandbox"
	"github.com/scrapethis/scrapethis/worker"
)

const usage = `usage: scrapethis <command> [flags]

commands:
  migrate                       create the database if missing and apply migrations
  apikey create --email E [--name N]   create a user's API key (printed once, last line)
  apikey revoke --key K | --id ID | --email E   revoke keys
  api                           serve the HTTP API
  worker                        run spider jobs
  scheduler                     enqueue jobs from schedules
  dev                           migrate, then API + worker + scheduler in one process

client commands (SCRAPETHIS_URL, default http://127.0.0.1:8080, and SCRAPETHIS_API_KEY):
  deploy [DIR] [--project NAME] [--label L] [--timeout D]   deploy a Scrapy project or bundle
  jobs start|list|get|cancel|logs|items ...   start and follow jobs (scrapethis jobs help)

configuration is read from the environment; see README.md.
`

func main() {
	// A sandbox's init is this binary too (see sandbox.RunInit): it runs
	// before anything else of the program.
	sandbox.Init()
	// The processes keep small live heaps; collecting at 5x rather than 2x
	// of it trims request tail latency (list p99 ~4 -> ~3 ms in make bench)
	// for a few tens of MiB. GOGC set in the environment wins.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "scrapethis:", err)
		os.Exit(1)
	}
}

var errUsage = errors.New("see usage above")

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errUsage
	}
	switch args[0] {
	case "migrate":
		return cmdMigrate(ctx, getenv, stdout)
	case "apikey":
		return cmdAPIKey(ctx, args[1:], getenv, stdout, stderr)
	case "api":
		return cmdAPI(ctx, getenv)
	case "worker":
		return cmdWorker(ctx, getenv)
	case "scheduler":
		return cmdScheduler(ctx, getenv)
	case "dev":
		return cmdDev(ctx, getenv, stdout)
	case "deploy":
		return cmdDeploy(ctx, args[1:], getenv, stdout, stderr)
	case "jobs":
		return cmdJobs(ctx, args[1:], getenv, stdout, stderr)
	case "spider-guard": // started by workers; see worker.RunGuard
		os.Exit(worker.RunGuard(os.Stdin))
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}
