package config_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/scrapethis/scrapethis/config"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestDefaults(t *testing.T) {
	c, err := config.Load(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.DatabaseURL != "postgres://postgres@127.0.0.1:5432/scrapethis?sslmode=disable" || c.RedisURL != "redis://127.0.0.1:6379/0" ||
		c.HTTPAddr != "127.0.0.1:8080" || c.Worker.SpidersDir != "./spiders" || c.Worker.Concurrency != 4 ||
		c.Worker.CancelGrace != 10*time.Second || c.AdminUser != "admin" || c.Worker.Guard != nil || c.DBMaxConns != 20 || c.Worker.ScrapyRunner != "fork" {
		t.Fatalf("defaults %+v", c)
	}
}

func TestValues(t *testing.T) {
	c, err := config.Load(env(map[string]string{
		"SCRAPETHIS_WORKER_CONCURRENCY": "16",
		"SCRAPETHIS_CANCEL_GRACE":       "2.5",
		"SCRAPETHIS_JOB_TIMEOUT":        "1m30s",
		"SCRAPETHIS_PYTHON":             "/opt/py/bin/python3", "SCRAPETHIS_CACHE_DIR": "/srv/cache", "SCRAPETHIS_CACHE_MAX_MB": "512",
		"SCRAPETHIS_SPIDER_GUARD": "off",
		"SCRAPETHIS_DB_MAX_CONNS": "7", "SCRAPETHIS_SCRAPY_RUNNER": "EXEC",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.DBMaxConns != 7 {
		t.Fatalf("DBMaxConns %d", c.DBMaxConns)
	}
	if c.Worker.ScrapyRunner != "exec" {
		t.Fatalf("ScrapyRunner %q", c.Worker.ScrapyRunner)
	}
	w := c.Worker
	if w.Concurrency != 16 || w.CancelGrace != 2500*time.Millisecond || w.DefaultTimeout != 90*time.Second ||
		w.Python != "/opt/py/bin/python3" || w.CacheDir != "/srv/cache" || w.CacheMaxMB != 512 || w.Guard == nil || len(w.Guard) != 0 {
		t.Fatalf("worker %+v", w)
	}
}

func TestBadValuesNameTheVariable(t *testing.T) {
	_, err := config.Load(env(map[string]string{
		"SCRAPETHIS_WORKER_CONCURRENCY":  "0",
		"SCRAPETHIS_CANCEL_GRACE":        "soon",
		"SCRAPETHIS_MONITORING_READONLY": "maybe",
		"SCRAPETHIS_LOG_LEVEL":           "loud",
		"SCRAPETHIS_SCRAPY_RUNNER":       "spawn",
	}))
	if err == nil {
		t.Fatal("bad values accepted")
	}
	for _, name := range []string{"SCRAPETHIS_WORKER_CONCURRENCY", "SCRAPETHIS_CANCEL_GRACE", "SCRAPETHIS_MONITORING_READONLY", "SCRAPETHIS_LOG_LEVEL", "SCRAPETHIS_SCRAPY_RUNNER"} {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("error does not name %s: %v", name, err)
		}
	}
}

func TestSandbox(t *testing.T) {
	c, err := config.Load(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	want := config.Sandbox{Enabled: true, UIDFirst: 200000, UIDLast: 200999, Network: "host",
		MemoryMB: 1024, MemoryMaxMB: 4096, DiskMB: 1024, Procs: 512, NoFile: 1024, CPUSeconds: 86400}
	if s := c.Sandbox; s.Enabled != want.Enabled || s.UIDFirst != want.UIDFirst || s.UIDLast != want.UIDLast ||
		s.Network != want.Network || s.MemoryMB != want.MemoryMB || s.MemoryMaxMB != want.MemoryMaxMB ||
		s.DiskMB != want.DiskMB || s.Procs != want.Procs || s.NoFile != want.NoFile || s.CPUSeconds != want.CPUSeconds || len(s.Binds) != 0 || !s.Warm {
		t.Fatalf("sandbox defaults %+v", s)
	}
	c, err = config.Load(env(map[string]string{
		"SCRAPETHIS_SANDBOX": "off", "SCRAPETHIS_SANDBOX_UIDS": "300000-300009", "SCRAPETHIS_SANDBOX_WARM": "off",
		"SCRAPETHIS_JOB_MEMORY_MB": "256", "SCRAPETHIS_SANDBOX_BINDS": "/opt/venv:/srv/data",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if s := c.Sandbox; s.Enabled || s.Warm || s.UIDFirst != 300000 || s.UIDLast != 300009 || s.MemoryMB != 256 || len(s.Binds) != 2 {
		t.Fatalf("sandbox %+v", s)
	}
	for k, v := range map[string]string{
		"SCRAPETHIS_SANDBOX":           "maybe",
		"SCRAPETHIS_SANDBOX_WARM":      "sometimes",
		"SCRAPETHIS_SANDBOX_UIDS":      "0-100",
		"SCRAPETHIS_SANDBOX_NETWORK":   "bridge",
		"SCRAPETHIS_JOB_MEMORY_MAX_MB": "10",
		"SCRAPETHIS_SANDBOX_BINDS":     "relative/path",
	} {
		if _, err := config.Load(env(map[string]string{k: v})); err == nil || !strings.Contains(err.Error(), k) {
			t.Errorf("%s=%s: %v", k, v, err)
		}
	}
}

func TestSandboxNetwork(t *testing.T) {
	c, err := config.Load(env(map[string]string{
		"SCRAPETHIS_SANDBOX_NETWORK":       "isolated",
		"SCRAPETHIS_SANDBOX_NETWORK_RANGE": "10.99.0.0/20",
		"SCRAPETHIS_SANDBOX_NETWORK_DENY":  "192.168.0.0/16, 10.1.2.3",
		"SCRAPETHIS_SANDBOX_DNS":           "9.9.9.9,1.1.1.1",
	}))
	if err != nil {
		t.Fatal(err)
	}
	s := c.Sandbox
	if s.NetworkRange.String() != "10.99.0.0/20" || fmt.Sprint(s.NetworkDeny) != "[192.168.0.0/16 10.1.2.3/32]" || fmt.Sprint(s.DNS) != "[9.9.9.9 1.1.1.1]" {
		t.Fatalf("sandbox network %+v", s)
	}
	if d, _ := config.Load(env(nil)); d.Sandbox.NetworkRange.String() != "10.213.0.0/16" || d.Sandbox.NetworkDeny != nil {
		t.Fatalf("defaults %+v", d.Sandbox)
	}
	for k, v := range map[string]string{
		"SCRAPETHIS_SANDBOX_NETWORK_RANGE": "10.0.0.0/31",
		"SCRAPETHIS_SANDBOX_NETWORK_DENY":  "not-an-address",
		"SCRAPETHIS_SANDBOX_DNS":           "127.0.0.53",
	} {
		if _, err := config.Load(env(map[string]string{k: v})); err == nil || !strings.Contains(err.Error(), k) {
			t.Errorf("%s=%s: %v", k, v, err)
		}
	}
}

func TestPlatformHosts(t *testing.T) {
	for _, tc := range []struct{ db, redis, want string }{
		{"postgres://postgres@127.0.0.1:5432/scrapethis?sslmode=disable", "redis://127.0.0.1:6379/0", "[127.0.0.1]"},
		{"postgres://u:p@db.internal,db2:5433/x", "redis-sentinel://s1:26379/0?master_name=m&addr=s2:26379", "[db.internal db2 s1 s2]"},
		{"host=/var/run/postgresql dbname=x", "redis-cluster://[fd00::5]:6379?addr=10.0.0.7:6379", "[fd00::5 10.0.0.7]"},
		{"host=pg.local port=5432", "rediss://:secret@cache:6380/1", "[pg.local cache]"},
	} {
		got := fmt.Sprint(config.Config{DatabaseURL: tc.db, RedisURL: tc.redis}.PlatformHosts())
		if got != tc.want {
			t.Errorf("%s %s: %s, want %s", tc.db, tc.redis, got, tc.want)
		}
	}
}

func TestPlatformPorts(t *testing.T) {
	for _, tc := range []struct{ db, redis, want string }{
		{"postgres://postgres@127.0.0.1:5432/scrapethis?sslmode=disable", "redis://127.0.0.1:6379/0", "[5432 6379]"},
		{"postgres://u:p@db.internal,db2:5433/x", "redis-sentinel://s1:26379/0?master_name=m&addr=s2:26380", "[5432 5433 26379 26380]"},
		{"host=/var/run/postgresql dbname=x port=6000", "redis-cluster://[fd00::5]:7000?addr=10.0.0.7:7001", "[6000 7000 7001]"},
		{"postgres://db/x?port=5544", "rediss://:secret@cache/1", "[5432 5544 6379]"},
	} {
		got := fmt.Sprint(config.Config{DatabaseURL: tc.db, RedisURL: tc.redis}.PlatformPorts())
		if got != tc.want {
			t.Errorf("%s %s: %s, want %s", tc.db, tc.redis, got, tc.want)
		}
	}
}
