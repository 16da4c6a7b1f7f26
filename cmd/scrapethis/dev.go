package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"

	"github.com/scrapethis/scrapethis"
	"github.com/scrapethis/scrapethis/api"
	"github.com/scrapethis/scrapethis/demosite"
	"github.com/scrapethis/scrapethis/tasks"
	"github.com/scrapethis/scrapethis/worker"
)

// demoEmail is the user `scrapethis dev` creates for trying things out.
const demoEmail = "demo@scrapethis.local"

// cmdDev runs everything in one process: migrations, the API (with the
// demo site at /demo/), a worker, and the scheduler. Each start prints a
// fresh key for the demo user and a ready curl line.
func cmdDev(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	cfg, err := loadConfig(getenv)
	if err != nil {
		return err
	}
	if _, err := migrate(ctx, cfg.DatabaseURL); err != nil {
		return err
	}
	d, err := connect(ctx, getenv, true)
	if err != nil {
		return err
	}
	defer d.Close()

	ln, err := net.Listen("tcp", d.cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", d.cfg.HTTPAddr, err)
	}
	base := "http://" + ln.Addr().String()
	user, err := d.db.EnsureUser(ctx, demoEmail)
	if err != nil {
		return err
	}
	_, key, err := d.db.CreateAPIKey(ctx, user.ID, "dev")
	if err != nil {
		return err
	}
	for _, sp := range []struct{ name, path string }{{"quotes", "quotes.py"}, {"quotes_plain", "quotes_plain"}} {
		if _, err := os.Stat(filepath.Join(d.cfg.Worker.SpidersDir, sp.path)); err != nil {
			continue
		}
		if _, err := d.db.SpiderByName(ctx, user.ID, sp.name); scrapethis.ErrorCode(err) == scrapethis.ENotFound {
			if _, err := d.db.CreateSpider(ctx, user.ID, sp.name, sp.path); err != nil {
				return err
			}
		}
	}

	// Everything shares the one listener: the worker's metrics count on the
	// API's /metrics, and no worker metrics server starts.
	generated := d.cfg.AdminPassword == ""
	if generated {
		d.cfg.AdminPassword = adminPassword()
	}
	m := newMetrics(d)
	queuer := tasks.NewPipelinedQueuer(d.rdb)
	defer queuer.Close()
	srv := api.New(d.db, queuer, d.log)
	defer srv.Close()
	defer cacheKeys(ctx, d, srv)()
	ops, closeOps, err := apiOps(d, m, queuer)
	if err != nil {
		return err
	}
	defer closeOps()
	srv.Ops = ops
	mux := http.NewServeMux()
	mux.Handle("/demo/", demosite.Handler("/demo"))
	mux.Handle("/", srv.Handler())

	fmt.Fprintf(stdout, `
ScrapeThis dev server on %[1]s
demo user %[2]s, API key (new at every start; shown once):
%[3]s

start the example Scrapy spider against the demo site:
  curl -s -H 'Authorization: Bearer %[3]s' -H 'Content-Type: application/json' -d '{"spider_name":"quotes","arguments":{"start_url":"%[1]s/demo/"}}' %[1]s/api/v1/jobs
then list jobs and read a job's items:
  curl -s -H 'Authorization: Bearer %[3]s' %[1]s/api/v1/jobs
  curl -s -H 'Authorization: Bearer %[3]s' %[1]s/api/v1/jobs/JOB_ID/items

`, base, demoEmail, key)
	password := d.cfg.AdminPassword
	if !generated {
		password = "(from SCRAPETHIS_ADMIN_PASSWORD)"
	}
	fmt.Fprintf(stdout, `queue monitoring UI: %[1]s%[2]s/  user %[3]s, password %[4]s
metrics %[1]s/metrics, probes %[1]s/healthz and %[1]s/readyz

`, base, api.MonitoringPath, d.cfg.AdminUser, password)

	w := worker.New(workerConfig(d.cfg), d.db, d.rdb, d.log, m)
	return group(ctx,
		func(ctx context.Context) error { return serveListener(ctx, d.log, ln, mux) },
		w.Run,
		func(ctx context.Context) error { return runScheduler(ctx, d, m) },
	)
}
