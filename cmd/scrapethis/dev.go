package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/scrapethis/scrapethis"
	"github.com/scrapethis/scrapethis/api"
	"github.com/scrapethis/scrapethis/demosite"
	"github.com/scrapethis/scrapethis/tasks"
	"github.com/scrapethis/scrapethis/worker"
)

// demoEmail is the user `scrapethis dev` creates for trying things out.
const demoEmail = "demo@scrapethis.local"

// The demo Scrapy project `scrapethis dev` deploys for the demo user on
// its first start (SCRAPETHIS_DEMO_PROJECT_DIR, relative to the working
// directory; a directory without scrapy.cfg is skipped), and its spider.
const (
	demoProjectDir = "demo/quotes"
	demoSpider     = "demo_quotes"
)

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
	demoDir := getenv("SCRAPETHIS_DEMO_PROJECT_DIR")
	if demoDir == "" {
		demoDir = demoProjectDir
	}
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
	srv := newAPIServer(d, queuer)
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
deploy a Scrapy project (%[5]s is deployed on first start) and run its spider:
  SCRAPETHIS_URL=%[1]s SCRAPETHIS_API_KEY=%[3]s %[4]s deploy %[5]s
  curl -s -H 'Authorization: Bearer %[3]s' -H 'Content-Type: application/json' -d '{"spider_name":"%[6]s","arguments":{"base_url":"%[1]s/demo/"},"settings":{"QUOTES_SOURCE":"dev"}}' %[1]s/api/v1/jobs

`, base, demoEmail, key, os.Args[0], demoDir, demoSpider)
	password := d.cfg.AdminPassword
	if !generated {
		password = "(from SCRAPETHIS_ADMIN_PASSWORD)"
	}
	fmt.Fprintf(stdout, `web console: %[1]s/  (sign in with the API key above)
queue monitoring UI: %[1]s%[2]s/  user %[3]s, password %[4]s
metrics %[1]s/metrics, probes %[1]s/healthz and %[1]s/readyz

`, base, api.MonitoringPath, d.cfg.AdminUser, password)

	w := worker.New(workerConfig(d.cfg), d.db, d.rdb, d.log, m)
	return group(ctx,
		func(ctx context.Context) error { return serveListener(ctx, d.log, ln, mux) },
		func(ctx context.Context) error { return runWorker(ctx, d, w, m) },
		func(ctx context.Context) error { return runScheduler(ctx, d, m) },
		func(ctx context.Context) error {
			deployDemo(ctx, newClient(base, key), demoDir, d.log, stdout)
			<-ctx.Done() // the group ends when its first function returns
			return nil
		},
	)
}

// deployDemo deploys the demo project in dir through the API, as
// `scrapethis deploy` does, unless the user already has a project of its
// name. It only logs what goes wrong: the dev server runs on without it.
func deployDemo(ctx context.Context, c *apiClient, dir string, log *slog.Logger, stdout io.Writer) {
	if _, err := os.Stat(filepath.Join(dir, "scrapy.cfg")); err != nil {
		return
	}
	data, name, err := packProject(ctx, dir, "")
	if err != nil {
		log.Warn("demo project not deployed", "dir", dir, "err", err)
		return
	}
	switch _, err := c.project(ctx, name); {
	case err == nil:
		return // deployed at an earlier start
	case statusOf(err) != http.StatusNotFound:
		if ctx.Err() == nil {
			log.Warn("demo project not deployed", "dir", dir, "err", err)
		}
		return
	}
	v, _, err := deployArchive(ctx, c, name, "", data, 10*time.Minute, pollInterval)
	if err != nil {
		if ctx.Err() == nil {
			log.Warn("demo project not deployed", "dir", dir, "err", err)
		}
		return
	}
	fmt.Fprintf(stdout, "deployed the demo project %s %s from %s: spiders %s\n", name, v.Label, dir, strings.Join(v.Spiders, " "))
}
