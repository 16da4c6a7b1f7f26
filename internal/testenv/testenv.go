// Package testenv gives tests their own real Postgres database and Redis
// database. URLs come from TEST_DATABASE_URL and TEST_REDIS_URL, with the
// local defaults that `make test` provides.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq" // the fixture connection's driver
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/scrapethis/scrapethis/db"
)

// DatabaseURL is the server tests create their databases on.
func DatabaseURL() string {
	if v := os.Getenv("TEST_DATABASE_URL"); v != "" {
		return v
	}
	return "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
}

// RedisURL is the Redis tests use; each package takes its own DB index.
func RedisURL() string {
	if v := os.Getenv("TEST_REDIS_URL"); v != "" {
		return v
	}
	return "redis://127.0.0.1:6379"
}

var (
	templateOnce sync.Once
	templateName string
	templateErr  error
)

// withDatabase returns base with its database name replaced.
func withDatabase(base, name string) string {
	u, err := url.Parse(base)
	if err != nil {
		panic(err)
	}
	u.Path = "/" + name
	return u.String()
}

func randomName(prefix string) string {
	b := make([]byte, 6)
	rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// template makes, once per test binary, a migrated database that each
// test's database is copied from.
func template(ctx context.Context) (string, error) {
	templateOnce.Do(func() {
		templateName = randomName("scrapethis_tmpl_")
		dsn := withDatabase(DatabaseURL(), templateName)
		if templateErr = db.CreateDatabase(ctx, dsn); templateErr != nil {
			return
		}
		store, err := db.Open(ctx, dsn)
		if err != nil {
			templateErr = err
			return
		}
		_, templateErr = store.Migrate(ctx)
		store.Close()
	})
	return templateName, templateErr
}

// DatabaseDSN creates a fresh, migrated database for the test, dropped
// when the test ends, and returns its URL.
func DatabaseDSN(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tmpl, err := template(ctx)
	if err != nil {
		t.Fatalf("test database template: %v", err)
	}
	dsn := withDatabase(DatabaseURL(), randomName("scrapethis_test_"))
	if err := db.CopyDatabase(ctx, dsn, tmpl); err != nil {
		t.Fatalf("create test database: %v", err)
	}
	t.Cleanup(func() {
		if err := db.DropDatabase(context.Background(), dsn); err != nil {
			t.Logf("drop test database: %v", err)
		}
	})
	return dsn
}

// DB opens a fresh, migrated database for the test.
func DB(t testing.TB) *db.DB {
	t.Helper()
	return Open(t, DatabaseDSN(t))
}

// Open opens the store on dsn until the test ends.
func Open(t testing.TB, dsn string) *db.DB {
	t.Helper()
	store, err := db.Open(context.Background(), dsn)
	if err != nil {
		t.Fatalf("open test database: %v", err)
	}
	t.Cleanup(func() { store.Close() })
	return store
}

func flushRedis(t testing.TB, dsn string) {
	t.Helper()
	opt, err := redis.ParseURL(dsn)
	if err != nil {
		t.Fatalf("TEST_REDIS_URL: %v", err)
	}
	c := redis.NewClient(opt)
	defer c.Close()
	if err := c.FlushDB(context.Background()).Err(); err != nil {
		t.Fatalf("flush test Redis: %v", err)
	}
}

// Main runs a package's tests and then drops the template database; call
// it from TestMain: func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }.
//
// When every test has passed it also fails the package if any goroutine
// is still running (go.uber.org/goleak): every goroutine a test starts,
// through the code under test or itself, must have an owner that waits.
func Main(m *testing.M) int {
	code := m.Run()
	if templateName != "" {
		db.DropDatabase(context.Background(), withDatabase(DatabaseURL(), templateName))
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "testenv: goroutines still running after the tests: %v\n", err)
			return 1
		}
	}
	return code
}

// SQL opens a connection of the test's own on the database at dsn, for
// fixtures and checks that the store has no method for (setting a row to a
// state, counting rows). It is closed when the test ends. Production code
// never reaches the store's pool this way: only tests do.
func SQL(t testing.TB, dsn string) *sqlx.DB {
	t.Helper()
	x, err := sqlx.Open("postgres", dsn)
	if err != nil {
		t.Fatalf("open fixture connection: %v", err)
	}
	x.SetMaxOpenConns(4)
	t.Cleanup(func() { x.Close() })
	return x
}
