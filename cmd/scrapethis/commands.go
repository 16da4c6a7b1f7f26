package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/scrapethis/scrapethis/api"
	"github.com/scrapethis/scrapethis/archive"
	"github.com/scrapethis/scrapethis/config"
	"github.com/scrapethis/scrapethis/console"
	"github.com/scrapethis/scrapethis/db"
	"github.com/scrapethis/scrapethis/metrics"
	"github.com/scrapethis/scrapethis/retention"
	"github.com/scrapethis/scrapethis/sandbox"
	"github.com/scrapethis/scrapethis/schedule"
	"github.com/scrapethis/scrapethis/tasks"
	"github.com/scrapethis/scrapethis/webhooks"
	"github.com/scrapethis/scrapethis/worker"
)

// deps are the connections a long-running command holds.
type deps struct {
	cfg config.Config
	log *slog.Logger
	db  *db.DB
	rdb redis.UniversalClient
}

func (d *deps) Close() {
	if d.rdb != nil {
		d.rdb.Close()
	}
	if d.db != nil {
		d.db.Close()
	}
}

// connect loads the configuration and opens Postgres (and Redis if asked).
func connect(ctx context.Context, getenv func(string) string, withRedis bool) (*deps, error) {
	cfg, err := config.Load(getenv)
	if err != nil {
		return nil, err
	}
	d := &deps{cfg: cfg, log: cfg.Logger()}
	// Libraries that log through the standard logger (asynq's collectors)
	// then log as structured lines too.
	slog.SetDefault(d.log)
	d.db, err = db.Open(ctx, cfg.DatabaseURL, db.MaxConns(cfg.DBMaxConns), db.Logger(d.log), db.UserMaxRunning(cfg.UserMaxRunning))
	if err != nil {
		return nil, fmt.Errorf("%w (is Postgres running at DATABASE_URL, and has `scrapethis migrate` run?)", err)
	}
	if withRedis {
		d.rdb, err = tasks.OpenRedis(ctx, cfg.RedisURL)
		if err != nil {
			d.Close()
			return nil, err
		}
	}
	return d, nil
}

func loadConfig(getenv func(string) string) (config.Config, error) { return config.Load(getenv) }

func cmdMigrate(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	cfg, err := loadConfig(getenv)
	if err != nil {
		return err
	}
	applied, err := migrate(ctx, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	if len(applied) == 0 {
		fmt.Fprintln(stdout, "database is up to date")
	}
	for _, name := range applied {
		fmt.Fprintln(stdout, "applied", name)
	}
	return nil
}

func migrate(ctx context.Context, dsn string) ([]string, error) {
	if err := db.CreateDatabase(ctx, dsn); err != nil {
		return nil, err
	}
	store, err := db.Open(ctx, dsn)
	if err != nil {
		return nil, err
	}
	defer store.Close()
	return store.Migrate(ctx)
}

func cmdAPIKey(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "create" && args[0] != "revoke") {
		return errors.New("usage: scrapethis apikey create --email EMAIL [--name LABEL] | apikey revoke --key KEY | --id ID | --email EMAIL")
	}
	fs := flag.NewFlagSet("apikey "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	email := fs.String("email", "", "the user's email")
	name := fs.String("name", "", "a label for the key")
	key := fs.String("key", "", "the key to revoke")
	id := fs.String("id", "", "the id of the key to revoke")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	d, err := connect(ctx, getenv, false)
	if err != nil {
		return err
	}
	defer d.Close()
	switch args[0] {
	case "create":
		if *email == "" {
			return errors.New("apikey create needs --email")
		}
		u, err := d.db.EnsureUser(ctx, *email)
		if err != nil {
			return err
		}
		keyID, k, err := d.db.CreateAPIKey(ctx, u.ID, *name)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "user %s (%s), key id %s; the key is shown once:\n%s\n", u.Email, u.ID, keyID, k)
		return nil
	default:
		var n int64
		switch {
		case *key != "":
			n, err = d.db.RevokeAPIKey(ctx, *key)
		case *id != "":
			n, err = d.db.RevokeAPIKey(ctx, *id)
		case *email != "":
			n, err = d.db.RevokeUserKeys(ctx, *email)
		default:
			return errors.New("apikey revoke needs --key, --id or --email")
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "revoked %d key(s)\n", n)
		if n == 0 {
			return errors.New("no live key matched")
		}
		return nil
	}
}

func cmdAPI(ctx context.Context, getenv func(string) string) error {
	d, err := connect(ctx, getenv, true)
	if err != nil {
		return err
	}
	defer d.Close()
	queuer := tasks.NewPipelinedQueuer(d.rdb)
	defer queuer.Close()
	srv := newAPIServer(d, queuer)
	defer srv.Close()
	defer cacheKeys(ctx, d, srv)()
	ops, closeOps, err := apiOps(d, newMetrics(d), queuer)
	if err != nil {
		return err
	}
	defer closeOps()
	srv.Ops = ops
	return serveHTTP(ctx, d.log, d.cfg.HTTPAddr, srv.Handler())
}

func cmdWorker(ctx context.Context, getenv func(string) string) error {
	d, err := connect(ctx, getenv, true)
	if err != nil {
		return err
	}
	defer d.Close()
	// A worker serves no API: only its metrics and probes, on their own
	// address, never SCRAPETHIS_HTTP_ADDR.
	m := newMetrics(d)
	cfg := workerConfig(d.cfg)
	setMemoryLimit(d.log, getenv, worker.MemoryLimit(cfg))
	w := worker.New(cfg, d.db, d.rdb, d.log, m)
	return serveOps(ctx, d, m, d.cfg.WorkerMetricsAddr, "SCRAPETHIS_WORKER_METRICS_ADDR",
		func(ctx context.Context) error { return runWorker(ctx, d, w, m) })
}

// runWorker runs the worker and, beside it, the webhook deliverer and
// the retention sweeper; it returns once all three have stopped.
func runWorker(ctx context.Context, d *deps, w *worker.Worker, m *metrics.Metrics) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	deliverer := webhooks.New(webhooks.Config{AllowPrivate: d.cfg.WebhookAllowPrivate}, d.db, api.EncodeJob, d.log)
	deliverer.Delivered = m.WebhookDelivered
	sweeper := &retention.Sweeper{DB: d.db, Age: d.cfg.Retention, Log: d.log, Metrics: m}
	if d.cfg.Retention > 0 {
		d.log.Info("retention on: items and logs of jobs final for longer are deleted", "retention", d.cfg.Retention)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		if err := deliverer.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
			d.log.Error("webhook deliverer stopped", "err", err)
		}
	})
	wg.Go(func() {
		if err := sweeper.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
			d.log.Error("retention sweeper stopped", "err", err)
		}
	})
	err := w.Run(ctx)
	cancel()
	return err
}

// cmdScheduler fires schedules until ctx ends. It serves only its metrics
// and probes on SCRAPETHIS_SCHEDULER_METRICS_ADDR, never the API address:
// run as many as you like beside the API and workers.
func cmdScheduler(ctx context.Context, getenv func(string) string) error {
	d, err := connect(ctx, getenv, true)
	if err != nil {
		return err
	}
	defer d.Close()
	m := newMetrics(d)
	return serveOps(ctx, d, m, d.cfg.SchedulerMetricsAddr, "SCRAPETHIS_SCHEDULER_METRICS_ADDR",
		func(ctx context.Context) error { return runScheduler(ctx, d, m) })
}

// runScheduler loads the static schedules file, if one is set (a bad file
// refuses to start), then runs the scheduler loop until ctx ends,
// reporting to m (nil for nothing).
func runScheduler(ctx context.Context, d *deps, m schedule.Metrics) error {
	if path := d.cfg.SchedulesFile; path != "" {
		stored, err := schedule.LoadFile(ctx, d.db, path)
		if err != nil {
			return err
		}
		d.log.Info("static schedules loaded", "file", path, "count", len(stored))
	}
	return schedule.New(schedule.DefaultConfig(), d.db, tasks.NewQueuer(d.rdb), d.log, m).Run(ctx)
}

// serveHTTP serves h on addr until ctx ends, then shuts down gracefully.
func serveHTTP(ctx context.Context, log *slog.Logger, addr string, h http.Handler) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	return serveListener(ctx, log, ln, h)
}

// MaxConns bounds the connections one HTTP server holds open at once;
// past it, new ones wait in the kernel's backlog rather than exhausting
// file descriptors.
const MaxConns = 8192

// limitListener is a listener that holds at most n connections open.
type limitListener struct {
	net.Listener
	slots chan struct{}
}

func limitConns(ln net.Listener, n int) net.Listener {
	return &limitListener{Listener: ln, slots: make(chan struct{}, n)}
}

func (l *limitListener) Accept() (net.Conn, error) {
	l.slots <- struct{}{}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.slots
		return nil, err
	}
	return &limitConn{Conn: c, release: func() { <-l.slots }}, nil
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

func serveListener(ctx context.Context, log *slog.Logger, ln net.Listener, h http.Handler) error {
	ln = limitConns(ln, MaxConns)
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("http server listening", "addr", ln.Addr().String())
	select {
	case err := <-errc:
		return fmt.Errorf("http server: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	return nil
}

// group runs functions until the first returns, then cancels the rest and
// waits for them, returning the first error.
func group(ctx context.Context, fns ...func(context.Context) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, len(fns))
	for _, fn := range fns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- fn(ctx)
			cancel()
		}()
	}
	wg.Wait()
	close(errs)
	var first error
	for err := range errs {
		if err != nil && first == nil {
			first = err
		}
	}
	return first
}

// setMemoryLimit sets the process's soft memory limit, unless the operator
// set GOMEMLIMIT.
func setMemoryLimit(log *slog.Logger, getenv func(string) string, limit int64) {
	if getenv("GOMEMLIMIT") != "" {
		return
	}
	debug.SetMemoryLimit(limit)
	log.Debug("soft memory limit set", "mib", limit>>20)
}

// newAPIServer is the API server with the operator's limits.
func newAPIServer(d *deps, queuer *tasks.Queuer) *api.Server {
	srv := api.New(d.db, queuer, d.log)
	srv.ArchiveLimits = archiveLimits(d.cfg)
	srv.MaxMemoryMB = d.cfg.Sandbox.MemoryMaxMB
	srv.WebhookAllowPrivate = d.cfg.WebhookAllowPrivate
	srv.Console = console.New(console.Config{API: srv, DB: d.db, Log: d.log})
	return srv
}

// archiveLimits are the deploy limits of the configuration.
func archiveLimits(c config.Config) archive.Limits {
	return archive.Limits{
		MaxArchiveBytes:  int64(c.UploadMaxMB) << 20,
		MaxUnpackedBytes: int64(c.UnpackMaxMB) << 20,
		MaxEntries:       c.ArchiveMaxEntries,
	}
}

// workerConfig is the worker's configuration: the guard and the sandbox
// init are this binary.
func workerConfig(c config.Config) worker.Config {
	return withSandbox(withGuard(worker.Config{Worker: c.Worker, Archive: archiveLimits(c)}), c)
}

// withSandbox sets the spider sandbox from its configuration; its init is
// this binary's sandbox-init (see sandbox.RunInit).
func withSandbox(c worker.Config, cfg config.Config) worker.Config {
	s := cfg.Sandbox
	c.Sandbox = sandbox.Config{
		Enabled:     s.Enabled,
		Warm:        s.Warm,
		UIDFirst:    s.UIDFirst,
		UIDLast:     s.UIDLast,
		Network:     sandbox.Network(s.Network),
		Binds:       s.Binds,
		MaxMemoryMB: s.MemoryMaxMB,
		Defaults: sandbox.Limits{MemoryMB: s.MemoryMB, DiskMB: s.DiskMB, Procs: s.Procs,
			NoFile: s.NoFile, CPUSeconds: s.CPUSeconds},
	}
	// In either network mode, jobs may not reach the platform's Postgres
	// and Redis: the isolated network denies their addresses, the host's
	// denies their ports on this host's addresses and their remote ones.
	c.Sandbox.NetworkDeny = append(platformPrefixes(cfg.PlatformHosts()), s.NetworkDeny...)
	c.Sandbox.PlatformPorts = cfg.PlatformPorts()
	if s.Network == string(sandbox.NetworkIsolated) {
		c.Sandbox.NetworkRange = s.NetworkRange
		c.Sandbox.DNS = s.DNS
	}
	if exe, err := os.Executable(); err == nil {
		c.Sandbox.InitArgv = initArgv(exe)
	}
	return c
}

// platformPrefixes are the addresses of the platform's Postgres and Redis
// hosts, as this host resolves them now: isolated jobs may not reach them.
func platformPrefixes(hosts []string) []netip.Prefix {
	var out []netip.Prefix
	for _, h := range hosts {
		if a, err := netip.ParseAddr(h); err == nil {
			out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", h)
		cancel()
		if err != nil {
			slog.Warn("isolated sandbox network: cannot resolve the platform's host to deny it to jobs; list its addresses in SCRAPETHIS_SANDBOX_NETWORK_DENY", "host", h, "err", err)
			continue
		}
		for _, a := range addrs {
			out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
		}
	}
	return out
}

// initArgv is the sandbox's init: the small scrapethis-init beside this
// binary when it is there (`make build` and the image put it there; it
// starts about 3 ms faster per job), else this binary's sandbox-init.
func initArgv(exe string) []string {
	small := filepath.Join(filepath.Dir(exe), "scrapethis-init")
	if st, err := os.Stat(small); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
		return []string{small}
	}
	return []string{exe, sandbox.InitCommand}
}

// withGuard runs this binary's spider-guard beside the worker (see
// worker.RunGuard), unless SCRAPETHIS_SPIDER_GUARD=off.
func withGuard(c worker.Config) worker.Config {
	if c.Guard != nil {
		return c
	}
	if exe, err := os.Executable(); err == nil {
		c.Guard = []string{exe, "spider-guard"}
	}
	return c
}

// cacheKeys lets the API cache key lookups, kept exact by a watch on key
// revocations, until the returned stop is called; if the watch fails, every
// request looks its key up. stop ends the watch and waits for it.
func cacheKeys(ctx context.Context, d *deps, srv *api.Server) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.CacheKeys(ctx); err != nil && ctx.Err() == nil {
			d.log.Warn("API key cache off", "err", err)
		}
	}()
	return func() { cancel(); <-done }
}
