package main

import (
	"context"
	"fmt"
	"github.com/jmoiron/sqlx"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/scrapethis/scrapethis/db"
	"github.com/scrapethis/scrapethis/tasks"
	"github.com/scrapethis/scrapethis/worker"
)

// bench is one run: its connections, its child processes and its results.
type bench struct {
	opt      options
	sz       sizes
	res      *Results
	progress io.Writer

	dir        string // temporary: spiders, child logs, stamp and pid files
	spidersDir string
	helper     string // the benchspider binary, inside spidersDir
	bin        string // absolute path of bin/scrapethis

	store   *db.DB
	sql     *sqlx.DB
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

	// workerIdleCPU is the worker's CPU while idle, for the throughput
	// rows' context.
	workerIdleCPU float64
}

// The spiders the bench registers. noop.sh and sleeper.sh are shell
// scripts as the issue describes; benchspider is built from
// cmd/bench/benchspider.
var spiderFiles = map[string]string{
	"noop.sh": "#!/bin/sh\nexit 0\n",
	// The pid of sh is the spider's process group; exec keeps it for
	// sleep, which SIGTERM kills.
	"sleeper.sh": "#!/bin/sh\necho $$ > \"${2#dir=}/$SCRAPETHIS_JOB_ID.pid\"\nexec sleep 60\n",
}

func (b *bench) say(format string, args ...any) {
	fmt.Fprintf(b.progress, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05.000")}, args...)...)
}

func (b *bench) setup(ctx context.Context) error {
	if err := b.checkTargets(); err != nil {
		return err
	}
	var err error
	b.dir, err = os.MkdirTemp("", "scrapethis-bench-")
	if err != nil {
		return err
	}
	b.spidersDir = filepath.Join(b.dir, "spiders")
	for _, d := range []string{b.spidersDir, filepath.Join(b.dir, "stamps"), filepath.Join(b.dir, "pids")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	for name, body := range spiderFiles {
		if err := os.WriteFile(filepath.Join(b.spidersDir, name), []byte(body), 0o755); err != nil {
			return err
		}
	}
	if err := b.build(ctx); err != nil {
		return err
	}

	b.say("database %s (dropped and recreated), Redis %s (flushed)", redactURL(b.opt.databaseURL), b.opt.redisURL)
	if err := db.DropDatabase(ctx, b.opt.databaseURL); err != nil {
		return err
	}
	if err := db.CreateDatabase(ctx, b.opt.databaseURL); err != nil {
		return err
	}
	b.store, err = db.Open(ctx, withAppName(b.opt.databaseURL))
	if err == nil {
		// Seeding and checks run their own SQL on a connection of their own.
		b.sql, err = sqlx.Open("postgres", withAppName(b.opt.databaseURL))
	}
	if err != nil {
		return err
	}
	// The API and the worker hold up to 32 connections each: leave room
	// under Postgres's default max_connections of 100.
	if _, err := b.store.Migrate(ctx); err != nil {
		return err
	}
	b.ropt, err = redis.ParseURL(b.opt.redisURL)
	if err != nil {
		return fmt.Errorf("redis url: %w", err)
	}
	b.redisDB = b.ropt.DB
	b.rdb, err = tasks.OpenRedis(ctx, b.opt.redisURL)
	if err != nil {
		return err
	}
	if err := b.rdb.FlushDB(ctx).Err(); err != nil {
		return fmt.Errorf("flush redis: %w", err)
	}

	u, err := b.store.EnsureUser(ctx, "bench@scrapethis.local")
	if err != nil {
		return err
	}
	b.userID = u.ID
	if _, b.key, err = b.store.CreateAPIKey(ctx, u.ID, "bench"); err != nil {
		return err
	}
	b.spiders = map[string]string{}
	for name, path := range map[string]string{"noop": "noop.sh", "sleeper": "sleeper.sh", "stamp": "benchspider", "items": "benchspider"} {
		sp, err := b.store.CreateSpider(ctx, u.ID, name, path)
		if err != nil {
			return err
		}
		b.spiders[name] = sp.ID
	}

	b.concurrency = worker.DefaultConfig().Concurrency
	if b.opt.concurrency > 0 {
		b.concurrency = b.opt.concurrency
	}
	if err := b.childEnv(); err != nil {
		return err
	}
	b.meta(ctx)
	return b.startAPI(ctx)
}

// checkTargets refuses a database or Redis index that may hold data worth
// keeping, since the bench drops the one and flushes the other.
func (b *bench) checkTargets() error {
	u, err := url.Parse(b.opt.databaseURL)
	if err != nil {
		return fmt.Errorf("database url: %w", err)
	}
	if name := strings.TrimPrefix(u.Path, "/"); !strings.Contains(name, "bench") {
		return fmt.Errorf("refusing to drop database %q: the bench's database name must contain \"bench\"", name)
	}
	opt, err := redis.ParseURL(b.opt.redisURL)
	if err != nil {
		return fmt.Errorf("redis url: %w", err)
	}
	if opt.DB == 0 {
		return fmt.Errorf("refusing to flush Redis database 0 (`make run` uses it): give the bench its own, such as /8")
	}
	return nil
}

// build makes sure bin/scrapethis exists (make bench builds it first) and
// builds the helper spider into the spiders directory.
func (b *bench) build(ctx context.Context) error {
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	if _, err := os.Stat(b.opt.bin); err != nil {
		b.say("building %s", b.opt.bin)
		if err := runCmd(ctx, goTool, "build", "-o", b.opt.bin, "./cmd/scrapethis"); err != nil {
			return fmt.Errorf("build %s (run from the repository root, or `make build`): %w", b.opt.bin, err)
		}
	}
	b.bin, err = filepath.Abs(b.opt.bin)
	if err != nil {
		return err
	}
	b.helper = filepath.Join(b.spidersDir, "benchspider")
	if err := runCmd(ctx, goTool, "build", "-o", b.helper, "./cmd/bench/benchspider"); err != nil {
		return fmt.Errorf("build the helper spider (run from the repository root): %w", err)
	}
	return nil
}

func runCmd(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, out)
	}
	return nil
}

// childEnv is the environment of the API and the worker: the essentials,
// any SCRAPETHIS_* tuning of the caller's, and the bench's own addresses.
func (b *bench) childEnv() error {
	apiAddr, err := freeAddr()
	if err != nil {
		return err
	}
	metricsAddr, err := freeAddr()
	if err != nil {
		return err
	}
	set := map[string]string{
		"DATABASE_URL":                   b.opt.databaseURL,
		"REDIS_URL":                      b.opt.redisURL,
		"SCRAPETHIS_HTTP_ADDR":           apiAddr,
		"SCRAPETHIS_SPIDERS_DIR":         b.spidersDir,
		"SCRAPETHIS_WORKER_METRICS_ADDR": metricsAddr,
		"SCRAPETHIS_LOG_FORMAT":          "json",
	}
	if b.opt.concurrency > 0 {
		set["SCRAPETHIS_WORKER_CONCURRENCY"] = strconv.Itoa(b.opt.concurrency)
	}
	var env, passed []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case k == "PATH" || k == "HOME" || k == "LANG" || k == "TMPDIR":
			env = append(env, kv)
		case strings.HasPrefix(k, "SCRAPETHIS_") && set[k] == "":
			env = append(env, kv)
			passed = append(passed, kv)
		}
	}
	for k, v := range set {
		env = append(env, k+"="+v)
	}
	b.env = env
	if len(passed) > 0 {
		b.res.Meta["passed_env"] = passed
	}
	b.client = newAPIClient("http://"+apiAddr, b.key)
	return nil
}

// benchAppName marks the bench's own Postgres connections, so that their
// CPU is not counted as the product's.
const benchAppName = "scrapethis-bench"

func withAppName(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return dsn
	}
	q := u.Query()
	q.Set("application_name", benchAppName)
	u.RawQuery = q.Encode()
	return u.String()
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func (b *bench) meta(ctx context.Context) {
	m := b.res.Meta
	if v, err := os.ReadFile("/proc/loadavg"); err == nil {
		f := strings.Fields(string(v))
		if len(f) > 0 {
			m["loadavg_1m_at_start"] = f[0]
			if l, err := strconv.ParseFloat(f[0], 64); err == nil && l > float64(runtime.NumCPU())/2 {
				b.say("WARNING: load average %.1f on %d CPUs before the bench starts: numbers will be noisy", l, runtime.NumCPU())
			}
		}
	}
	m["go"] = runtime.Version()
	m["cpus"] = runtime.NumCPU()
	if v, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m["kernel"] = strings.TrimSpace(string(v))
	}
	var pg string
	if b.sql.GetContext(ctx, &pg, `SHOW server_version`) == nil {
		m["postgres"] = pg
	}
	if info, err := b.rdb.Info(ctx, "server").Result(); err == nil {
		for _, line := range strings.Split(info, "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "redis_version:"); ok {
				m["redis"] = v
			}
		}
	}
	m["worker_concurrency"] = b.concurrency
	m["task_check_interval"] = worker.DefaultConfig().TaskCheckInterval.String()
	m["binary"] = b.opt.bin
	m["sizes"] = map[string]any{
		"create_clients": b.sz.createClients, "create_requests": b.sz.createN,
		"dispatch_jobs": b.sz.dispatchN, "completion_jobs": b.sz.completionN, "cancel_jobs": b.sz.cancelN,
		"items": b.sz.items, "list_rows": b.sz.listTotal, "list_user_rows": b.sz.listUser, "list_requests": b.sz.listN,
	}
}

func (b *bench) describe() string {
	return fmt.Sprintf("%d CPUs, %s, Postgres %v, Redis %v, worker concurrency %d",
		runtime.NumCPU(), runtime.Version(), b.res.Meta["postgres"], b.res.Meta["redis"], b.concurrency)
}

func redactURL(s string) string {
	if i := strings.Index(s, "@"); i > 0 {
		if j := strings.Index(s, "://"); j > 0 && j < i {
			if k := strings.Index(s[j+3:i], ":"); k >= 0 {
				return s[:j+3+k] + ":***" + s[i:]
			}
		}
	}
	return s
}

func (b *bench) close() {
	b.stopChildren()
	if b.rdb != nil {
		b.rdb.Close()
	}
	if b.sql != nil {
		b.sql.Close()
	}
	if b.store != nil {
		b.store.Close()
	}
	if b.dir != "" {
		if b.opt.keep {
			fmt.Fprintf(b.progress, "kept %s (spiders, api.log, worker.log)\n", b.dir)
		} else {
			os.RemoveAll(b.dir)
		}
	}
}
