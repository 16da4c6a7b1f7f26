package bench

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/scrapethis/scrapethis/db"
	"github.com/scrapethis/scrapethis/tasks"
	"github.com/scrapethis/scrapethis/worker"
)

// The spiders the bench registers. noop.sh and sleeper.sh are shell
// scripts as the issue describes; benchspider is built from
// cmd/bench/benchspider (or Config.SpiderBin).
var spiderFiles = map[string]string{
	"noop.sh": "#!/bin/sh\nexit 0\n",
	// The pid of sh is the spider's process group; exec keeps it for
	// sleep, which SIGTERM kills.
	"sleeper.sh": "#!/bin/sh\necho $$ > \"${2#dir=}/$SCRAPETHIS_JOB_ID.pid\"\nexec sleep 60\n",
	// Scrapy spiders (scrapy.go): __init__ stamps the time and its pid.
	"scrapy_trivial.py": scrapySpiderFile(false),
	"scrapy_idle.py":    scrapySpiderFile(true),
}

func (b *Benchmarker) setup(ctx context.Context) error {
	var err error
	b.dir, err = os.MkdirTemp("", "scrapethis-bench-")
	if err != nil {
		return fmt.Errorf("temporary directory: %w", err)
	}
	b.spidersDir = filepath.Join(b.dir, "spiders")
	for _, d := range []string{b.spidersDir, filepath.Join(b.dir, "stamps"), filepath.Join(b.dir, "pids")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("temporary directory: %w", err)
		}
	}
	for name, body := range spiderFiles {
		if err := os.WriteFile(filepath.Join(b.spidersDir, name), []byte(body), 0o755); err != nil {
			return fmt.Errorf("write spider %s: %w", name, err)
		}
	}
	if err := b.build(ctx); err != nil {
		return err
	}

	if b.cfg.Recreate {
		b.say("database %s (dropped and recreated), Redis %s (flushed)", redactURL(b.cfg.DatabaseURL), b.cfg.RedisURL)
		if err := db.DropDatabase(ctx, b.cfg.DatabaseURL); err != nil {
			return err
		}
		if err := db.CreateDatabase(ctx, b.cfg.DatabaseURL); err != nil {
			return err
		}
	} else {
		b.say("database %s, Redis %s (flushed)", redactURL(b.cfg.DatabaseURL), b.cfg.RedisURL)
	}
	// The bench's own queries run from at most 16 goroutines, so its pool
	// stays small beside the API's and the worker's without a bound here.
	b.store, err = db.Open(ctx, withAppName(b.cfg.DatabaseURL))
	if err != nil {
		return err
	}
	if _, err := b.store.Migrate(ctx); err != nil {
		return err
	}
	b.ropt, err = redis.ParseURL(b.cfg.RedisURL)
	if err != nil {
		return fmt.Errorf("redis url: %w", err)
	}
	b.redisDB = b.ropt.DB
	b.rdb, err = tasks.OpenRedis(ctx, b.cfg.RedisURL)
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
	for name, path := range map[string]string{"noop": "noop.sh", "sleeper": "sleeper.sh", "stamp": "benchspider", "items": "benchspider",
		"scrapy": "scrapy_trivial.py", "scrapy_idle": "scrapy_idle.py"} {
		sp, err := b.store.CreateSpider(ctx, u.ID, name, path)
		if err != nil {
			return err
		}
		b.spiders[name] = sp.ID
	}

	b.concurrency = worker.DefaultConfig().Concurrency
	if b.cfg.WorkerConcurrency > 0 {
		b.concurrency = b.cfg.WorkerConcurrency
	}
	if err := b.childEnv(); err != nil {
		return err
	}
	b.meta(ctx)
	return b.startAPI(ctx)
}

// build makes sure the scrapethis binary exists (make bench builds it
// first) and puts the bench spider into the spiders directory, built from
// this module unless Config.SpiderBin names one.
func (b *Benchmarker) build(ctx context.Context) error {
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	if _, err := os.Stat(b.cfg.Bin); err != nil {
		b.say("building %s", b.cfg.Bin)
		if err := runCmd(ctx, goTool, "build", "-o", b.cfg.Bin, modulePath+"/cmd/scrapethis"); err != nil {
			return fmt.Errorf("build %s (run inside the repository, or `make build`): %w", b.cfg.Bin, err)
		}
	}
	b.bin, err = filepath.Abs(b.cfg.Bin)
	if err != nil {
		return fmt.Errorf("binary path: %w", err)
	}
	// The sandbox's small init, which the worker runs from beside its
	// binary (make build puts it there).
	if init := filepath.Join(filepath.Dir(b.bin), "scrapethis-init"); !exists(init) {
		b.say("building %s", init)
		if err := runCmd(ctx, goTool, "build", "-tags", "sandboxinit", "-ldflags=-s -w", "-o", init, modulePath+"/cmd/scrapethis-init"); err != nil {
			return fmt.Errorf("build %s: %w", init, err)
		}
	}
	b.helper = filepath.Join(b.spidersDir, "benchspider")
	if b.cfg.SpiderBin != "" {
		return copyFile(b.cfg.SpiderBin, b.helper)
	}
	if err := runCmd(ctx, goTool, "build", "-o", b.helper, modulePath+"/cmd/bench/benchspider"); err != nil {
		return fmt.Errorf("build the bench spider (run inside the repository): %w", err)
	}
	return nil
}

// modulePath is the module the binaries are built from; go build finds it
// from any directory inside the repository.
const modulePath = "github.com/scrapethis/scrapethis"

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func copyFile(from, to string) error {
	body, err := os.ReadFile(from)
	if err != nil {
		return fmt.Errorf("bench spider: %w", err)
	}
	if err := os.WriteFile(to, body, 0o755); err != nil {
		return fmt.Errorf("bench spider: %w", err)
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
func (b *Benchmarker) childEnv() error {
	apiAddr, err := freeAddr()
	if err != nil {
		return err
	}
	metricsAddr, err := freeAddr()
	if err != nil {
		return err
	}
	set := map[string]string{
		"DATABASE_URL":                   b.cfg.DatabaseURL,
		"REDIS_URL":                      b.cfg.RedisURL,
		"SCRAPETHIS_HTTP_ADDR":           apiAddr,
		"SCRAPETHIS_SPIDERS_DIR":         b.spidersDir,
		"SCRAPETHIS_WORKER_METRICS_ADDR": metricsAddr,
		"SCRAPETHIS_LOG_FORMAT":          "json",
		// The scenarios' spiders stamp files on the host (start times,
		// pids), which a sandboxed spider cannot do: the first-wave rows
		// run without it. The sandbox scenario runs a second worker with
		// it on (sandbox.go).
		"SCRAPETHIS_SANDBOX":   "off",
		"SCRAPETHIS_CACHE_DIR": filepath.Join(b.dir, "cache"),
		// The webhooks scenario's receiver is on loopback.
		"SCRAPETHIS_WEBHOOK_ALLOW_PRIVATE": "true",
	}
	if b.cfg.WorkerConcurrency > 0 {
		set["SCRAPETHIS_WORKER_CONCURRENCY"] = strconv.Itoa(b.cfg.WorkerConcurrency)
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

func (b *Benchmarker) meta(ctx context.Context) {
	m := b.res.Meta
	if l, err := b.procs.loadavg(); err == nil {
		m["loadavg_1m_at_start"] = l
		if l > float64(runtime.NumCPU())/2 {
			b.say("WARNING: load average %.1f on %d CPUs before the bench starts: numbers will be noisy", l, runtime.NumCPU())
		}
	}
	m["go"] = runtime.Version()
	m["cpus"] = runtime.NumCPU()
	if k, err := b.procs.kernel(); err == nil {
		m["kernel"] = k
	}
	if pg, err := b.store.ServerVersion(ctx); err == nil {
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
	m["binary"] = b.cfg.Bin
	m["sizes"] = map[string]any{
		"create_clients": b.sz.CreateClients, "create_requests": b.sz.CreateRequests,
		"dispatch_jobs": b.sz.DispatchJobs, "completion_jobs": b.sz.CompletionJobs, "cancel_jobs": b.sz.CancelJobs,
		"items": b.sz.Items, "list_rows": b.sz.ListRows, "list_user_rows": b.sz.ListUserRows, "list_requests": b.sz.ListRequests,
	}
}

func (b *Benchmarker) describe() string {
	return fmt.Sprintf("%d CPUs, %s, Postgres %v, Redis %v, worker concurrency %d",
		runtime.NumCPU(), runtime.Version(), b.res.Meta["postgres"], b.res.Meta["redis"], b.concurrency)
}

// redactURL hides a URL's password.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

func (b *Benchmarker) close() {
	b.stopChildren()
	if b.rdb != nil {
		b.rdb.Close()
	}
	if b.store != nil {
		b.store.Close()
	}
	if b.dir != "" {
		if b.cfg.Keep {
			fmt.Fprintf(b.progress, "kept %s (spiders, api.log, worker.log)\n", b.dir)
		} else {
			os.RemoveAll(b.dir)
		}
	}
}
