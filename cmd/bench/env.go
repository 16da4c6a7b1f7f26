package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
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
	if err != nil {
		return err
	}
	// The API and the worker hold up to 32 connections each: leave room
	// under Postgres's default max_connections of 100.
	b.store.SetMaxOpenConns(20)
	b.store.SetMaxIdleConns(20)
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
	if b.store.GetContext(ctx, &pg, `SHOW server_version`) == nil {
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

// child is the API or the worker, run from the real binary.
type child struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error
}

func (b *bench) startChild(name string, args ...string) (*child, error) {
	logPath := filepath.Join(b.dir, name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(b.bin, args...)
	cmd.Env = b.env
	cmd.Stdout = logf
	cmd.Stderr = logf
	// Own process group for clean signalling; and it dies with the bench.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		logf.Close()
		close(c.done)
	}()
	return c, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// stop asks the child to shut down gracefully, then kills it.
func (c *child) stop(grace time.Duration) {
	if c == nil || c.exited() {
		return
	}
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(grace):
		c.cmd.Process.Kill()
		<-c.done
	}
}

// tail is the end of the child's log, for error messages.
func (c *child) tail() string {
	b, _ := os.ReadFile(c.logPath)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

func (b *bench) stopChildren() {
	// The worker first: it hands back or finishes what it runs.
	b.worker.stop(30 * time.Second)
	b.api.stop(15 * time.Second)
}

func (b *bench) startAPI(ctx context.Context) error {
	var err error
	if b.api, err = b.startChild("api", "api"); err != nil {
		return err
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		st, _, err := b.client.do(ctx, http.MethodGet, "/api/v1/jobs?limit=1", nil)
		if err == nil && st == http.StatusOK {
			b.say("API up on %s (pid %d)", b.client.base, b.api.pid())
			return nil
		}
		if b.api.exited() || time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("the API did not come up (status %d, %v); its log:\n%s", st, err, b.api.tail())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startWorker runs the worker and waits until it has run a job.
func (b *bench) startWorker(ctx context.Context) error {
	var err error
	if b.worker, err = b.startChild("worker", "worker"); err != nil {
		return fmt.Errorf("%w: %w", errFatal, err)
	}
	id, err := b.postJob(ctx, "noop", nil)
	if err != nil {
		return fmt.Errorf("%w: %w", errFatal, err)
	}
	if _, err := b.waitFinal(ctx, id, 20*time.Second); err != nil {
		return fmt.Errorf("%w: the worker did not run a job: %w; its log:\n%s", errFatal, err, b.worker.tail())
	}
	b.say("worker up (pid %d, concurrency %d)", b.worker.pid(), b.concurrency)
	return nil
}

// apiClient talks to the API as a client does.
type apiClient struct {
	base string
	auth string
	hc   *http.Client
}

func newAPIClient(base, key string) *apiClient {
	tr := &http.Transport{
		Proxy:               nil,
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     time.Minute,
	}
	return &apiClient{base: base, auth: "Bearer " + key, hc: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
}

func (c *apiClient) do(ctx context.Context, method, path string, body []byte) (int, []byte, error) {
	return c.doKey(ctx, c.auth, method, path, body)
}

func (c *apiClient) doKey(ctx context.Context, auth, method, path string, body []byte) (int, []byte, error) {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, r)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", auth)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	return resp.StatusCode, out, err
}

// jobBody is a POST /api/v1/jobs body for one of the bench's spiders.
func (b *bench) jobBody(spider string, args map[string]string) []byte {
	body, _ := json.Marshal(map[string]any{"spider_id": b.spiders[spider], "arguments": args})
	return body
}

// postJob starts a job over the API and returns its id.
func (b *bench) postJob(ctx context.Context, spider string, args map[string]string) (string, error) {
	return b.post(ctx, b.jobBody(spider, args))
}

func (b *bench) post(ctx context.Context, body []byte) (string, error) {
	st, out, err := b.client.do(ctx, http.MethodPost, "/api/v1/jobs", body)
	if err != nil {
		return "", err
	}
	if st != http.StatusOK {
		return "", fmt.Errorf("POST /api/v1/jobs: %d %s", st, bytes.TrimSpace(out))
	}
	var resp struct {
		JobID string `json:"jobId"`
	}
	if err := json.Unmarshal(out, &resp); err != nil || resp.JobID == "" {
		return "", fmt.Errorf("POST /api/v1/jobs: unexpected body %s", out)
	}
	return resp.JobID, nil
}

// waitFinal polls the job's row until it is final, and returns its status.
func (b *bench) waitFinal(ctx context.Context, id string, limit time.Duration) (string, error) {
	deadline := time.Now().Add(limit)
	for {
		var st string
		if err := b.store.GetContext(ctx, &st, `SELECT status FROM jobs WHERE id = $1`, id); err != nil {
			return "", err
		}
		switch st {
		case "finished", "error", "cancelled":
			return st, nil
		}
		if time.Now().After(deadline) {
			return st, fmt.Errorf("job %s still %s after %s", id, st, limit)
		}
		select {
		case <-ctx.Done():
			return st, ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
	}
}
