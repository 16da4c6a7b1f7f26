package config_test

import (
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
		c.Worker.CancelGrace != 10*time.Second || c.AdminUser != "admin" || c.Worker.Guard != nil || c.DBMaxConns != 20 {
		t.Fatalf("defaults %+v", c)
	}
}

func TestValues(t *testing.T) {
	c, err := config.Load(env(map[string]string{
		"SCRAPETHIS_WORKER_CONCURRENCY": "16",
		"SCRAPETHIS_CANCEL_GRACE":       "2.5",
		"SCRAPETHIS_JOB_TIMEOUT":        "1m30s",
		"SCRAPETHIS_SCRAPY_COMMAND":     "/usr/bin/python3 -m scrapy",
		"SCRAPETHIS_SPIDER_GUARD":       "off",
		"SCRAPETHIS_DB_MAX_CONNS":       "7",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.DBMaxConns != 7 {
		t.Fatalf("DBMaxConns %d", c.DBMaxConns)
	}
	w := c.Worker
	if w.Concurrency != 16 || w.CancelGrace != 2500*time.Millisecond || w.DefaultTimeout != 90*time.Second ||
		strings.Join(w.ScrapyCommand, "|") != "/usr/bin/python3|-m|scrapy" || w.Guard == nil || len(w.Guard) != 0 {
		t.Fatalf("worker %+v", w)
	}
}

func TestBadValuesNameTheVariable(t *testing.T) {
	_, err := config.Load(env(map[string]string{
		"SCRAPETHIS_WORKER_CONCURRENCY":  "0",
		"SCRAPETHIS_CANCEL_GRACE":        "soon",
		"SCRAPETHIS_MONITORING_READONLY": "maybe",
		"SCRAPETHIS_LOG_LEVEL":           "loud",
	}))
	if err == nil {
		t.Fatal("bad values accepted")
	}
	for _, name := range []string{"SCRAPETHIS_WORKER_CONCURRENCY", "SCRAPETHIS_CANCEL_GRACE", "SCRAPETHIS_MONITORING_READONLY", "SCRAPETHIS_LOG_LEVEL"} {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("error does not name %s: %v", name, err)
		}
	}
}
