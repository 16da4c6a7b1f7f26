package testenv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/scrapethis/scrapethis/api"
	"github.com/scrapethis/scrapethis/db"
	"github.com/scrapethis/scrapethis/worker"
)

// Redis databases are leased, one to a test, across every test binary
// running at once: a lease is a key in leaseDB set with NX, so two
// packages tested in parallel never share (or flush) a queue. Index 0 is
// left for `make run`.
const (
	leaseDB      = 15
	leaseTTL     = 20 * time.Minute
	leaseTimeout = 5 * time.Minute
)

// leasable lists the indexes tests may lease.
var leasable = []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14}

// LeaseRedis gives the test a Redis database of its own, flushed, until it
// ends, and returns its URL. When all are taken it waits for one.
func LeaseRedis(t testing.TB) string {
	t.Helper()
	base := strings.TrimSuffix(RedisURL(), "/")
	opt, err := redis.ParseURL(fmt.Sprintf("%s/%d", base, leaseDB))
	if err != nil {
		t.Fatalf("TEST_REDIS_URL: %v", err)
	}
	reg := redis.NewClient(opt)
	defer reg.Close()
	ctx := context.Background()
	token := randomName("lease_")
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.Now().Add(leaseTimeout)
	for {
		for _, idx := range leasable {
			key := fmt.Sprintf("scrapethis:test-lease:%d", idx)
			ok, err := reg.SetNX(ctx, key, token, leaseTTL).Result()
			if err != nil {
				t.Fatalf("lease a test Redis database: %v", err)
			}
			if !ok {
				continue
			}
			dsn := fmt.Sprintf("%s/%d", base, idx)
			flushRedis(t, dsn)
			t.Cleanup(func() { release(dsn, opt, key, token) })
			return dsn
		}
		if time.Now().After(deadline) {
			t.Fatalf("no test Redis database free after %s", leaseTimeout)
		}
		<-tick.C
	}
}

// release flushes a leased database and gives it back, if still ours.
func release(dsn string, regOpt *redis.Options, key, token string) {
	opt, _ := redis.ParseURL(dsn)
	c := redis.NewClient(opt)
	c.FlushDB(context.Background())
	c.Close()
	reg := redis.NewClient(regOpt)
	defer reg.Close()
	if v, _ := reg.Get(context.Background(), key).Result(); v == token {
		reg.Del(context.Background(), key)
	}
}

// RedisClient returns a client on a Redis database leased to the test.
func RedisClient(t testing.TB) *redis.Client {
	t.Helper()
	return redisClient(t, LeaseRedis(t))
}

func redisClient(t testing.TB, dsn string) *redis.Client {
	t.Helper()
	opt, err := redis.ParseURL(dsn)
	if err != nil {
		t.Fatalf("redis url: %v", err)
	}
	c := redis.NewClient(opt)
	t.Cleanup(func() { c.Close() })
	return c
}

// Serve serves the API server's routes over httptest until the test ends,
// then closes the listener and the server, and returns the base URL.
func Serve(t testing.TB, srv *api.Server) string {
	t.Helper()
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(func() {
		hs.Close()
		srv.Close()
	})
	return hs.URL
}

// StartWorker runs a worker until the test ends; stop ends it sooner and
// waits for it. A worker that fails fails the test.
// Without a CacheDir it gets a cache of its own, as a worker of its own
// machine has.
func StartWorker(t testing.TB, cfg worker.Config, store *db.DB, rdb redis.UniversalClient, log *slog.Logger) (stop func()) {
	t.Helper()
	if cfg.CacheDir == "" {
		cfg.CacheDir = t.TempDir()
	}
	w := worker.New(cfg, store, rdb, log, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := w.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("worker: %v", err)
		}
	}()
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			cancel()
			<-done
		}
	}
	t.Cleanup(stop)
	return stop
}

// WaitFor polls cond until it holds, failing the test after timeout. The
// timeout is a bound for slow machines, never a timing assertion.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		<-tick.C
	}
}

// Log is a logger that writes into the test's log at level and above.
func Log(t testing.TB, level slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: level}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// ProcessesOf lists the host's processes (zombies included) running as
// uid, by pid: what a sandboxed job left behind, if anything.
func ProcessesOf(uid int) []string {
	var out []string
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		if _, err := strconv.Atoi(d.Name()); err != nil {
			continue
		}
		st, err := os.ReadFile("/proc/" + d.Name() + "/status")
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(st), "\n") {
			if f := strings.Fields(line); len(f) > 1 && f[0] == "Uid:" && f[1] == strconv.Itoa(uid) {
				out = append(out, d.Name())
			}
		}
	}
	return out
}
