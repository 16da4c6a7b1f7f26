// Package db is the Postgres store: connection, embedded migrations, and
// every SQL statement the platform runs.
package db

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/scrapethis/scrapethis"
)

//go:embed migrations/*.up.sql
var migrations embed.FS

// DB is the store. Its methods are safe for concurrent use. Its pool is
// its own: every statement runs through the methods of this package.
type DB struct {
	pool   *sqlx.DB
	dsn    string
	stmts  sync.Map // query text -> *sqlx.Stmt, see stmt.go
	log    *slog.Logger
	outage outage
	// userMax caps each user's running jobs, all workers together; 0 is
	// no cap (see fairshare.go).
	userMax int
}

// DefaultMaxConns is the pool size of a store opened without MaxConns.
const DefaultMaxConns = 20

// Option changes how Open sets up the store.
type Option func(*options)

type options struct {
	maxConns int
	userMax  int
	log      *slog.Logger
}

// MaxConns bounds the store's connections to Postgres (open and idle).
func MaxConns(n int) Option { return func(o *options) { o.maxConns = n } }

// Logger is where the store says, once each, that Postgres became
// unreachable and reachable again.
func Logger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// UserMaxRunning caps the running jobs of each user, counted over all
// workers (SCRAPETHIS_USER_MAX_RUNNING); 0 is no cap. Every process that
// creates or starts jobs must be given the same cap.
func UserMaxRunning(n int) Option { return func(o *options) { o.userMax = max(n, 0) } }

// Open connects to the database at dsn and checks that it answers. The pool
// is sized here and nowhere else.
func Open(ctx context.Context, dsn string, opts ...Option) (*DB, error) {
	o := options{maxConns: DefaultMaxConns}
	for _, opt := range opts {
		opt(&o)
	}
	x, err := sqlx.Open("postgres", withConnectTimeout(dsn))
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	x.SetMaxOpenConns(o.maxConns)
	x.SetMaxIdleConns(o.maxConns)
	x.SetConnMaxIdleTime(5 * time.Minute)
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := x.PingContext(pctx); err != nil {
		x.Close()
		return nil, fmt.Errorf("connect to database: %w", err)
	}
	return &DB{pool: x, dsn: dsn, log: o.log, userMax: o.userMax}, nil
}

// Ping checks that the database answers.
func (d *DB) Ping(ctx context.Context) error { return d.check(d.pool.PingContext(ctx)) }

// Stats returns the pool's statistics, for metrics.
func (d *DB) Stats() sql.DBStats { return d.pool.Stats() }

// adminConn opens a connection to the server's "postgres" database and
// returns it with the database name that dsn names.
func adminConn(dsn string) (*sql.DB, string, error) {
	u, err := url.Parse(dsn)
	if err != nil || u.Scheme == "" {
		return nil, "", fmt.Errorf("DATABASE_URL must be a postgres:// URL")
	}
	name := strings.TrimPrefix(u.Path, "/")
	admin := *u
	admin.Path = "/postgres"
	x, err := sql.Open("postgres", admin.String())
	if err != nil {
		return nil, "", fmt.Errorf("open admin connection: %w", err)
	}
	return x, name, nil
}

// CreateDatabase creates the database named in dsn if it does not exist,
// connecting to the server's "postgres" database to do so.
func CreateDatabase(ctx context.Context, dsn string) error {
	x, name, err := adminConn(dsn)
	if err != nil {
		return err
	}
	defer x.Close()
	if name == "" {
		return nil
	}
	var exists bool
	if err := x.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&exists); err != nil {
		return fmt.Errorf("look up database %q: %w", name, err)
	}
	if exists {
		return nil
	}
	_, err = x.ExecContext(ctx, "CREATE DATABASE "+pq.QuoteIdentifier(name))
	var pqErr *pq.Error
	// Two processes creating it at once: the loser sees duplicate_database.
	if errors.As(err, &pqErr) && (pqErr.Code == "42P04" || pqErr.Code == "23505") {
		return nil
	}
	if err != nil {
		return fmt.Errorf("create database %q: %w", name, err)
	}
	return nil
}

// CopyDatabase creates the database named in dsn as a copy of the
// database template on the same server (tests copy a migrated template).
func CopyDatabase(ctx context.Context, dsn, template string) error {
	x, name, err := adminConn(dsn)
	if err != nil {
		return err
	}
	defer x.Close()
	if _, err := x.ExecContext(ctx, "CREATE DATABASE "+pq.QuoteIdentifier(name)+" TEMPLATE "+pq.QuoteIdentifier(template)); err != nil {
		return fmt.Errorf("create database %q from %q: %w", name, template, err)
	}
	return nil
}

// DropDatabase drops the database named in dsn; tests use it to clean up.
func DropDatabase(ctx context.Context, dsn string) error {
	x, name, err := adminConn(dsn)
	if err != nil {
		return err
	}
	defer x.Close()
	if _, err := x.ExecContext(ctx, "DROP DATABASE IF EXISTS "+pq.QuoteIdentifier(name)+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop database %q: %w", name, err)
	}
	return nil
}

// migrateLock is the advisory lock key that serialises migrations, so two
// processes starting at once apply each migration exactly once.
const migrateLock = 7340521

// Migrate applies every embedded migration not yet recorded in
// schema_migrations, each in its own transaction. It returns the names applied.
func (d *DB) Migrate(ctx context.Context) ([]string, error) {
	conn, err := d.pool.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, migrateLock); err != nil {
		return nil, fmt.Errorf("migrate: take lock: %w", err)
	}
	defer conn.ExecContext(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, migrateLock)

	if _, err := conn.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return nil, fmt.Errorf("migrate: create schema_migrations: %w", err)
	}
	names, err := fs.Glob(migrations, "migrations/*.up.sql")
	if err != nil {
		return nil, fmt.Errorf("migrate: list: %w", err)
	}
	sort.Strings(names)
	var applied []string
	for _, path := range names {
		name := strings.TrimSuffix(strings.TrimPrefix(path, "migrations/"), ".up.sql")
		var done bool
		if err := conn.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE name = $1)`, name).Scan(&done); err != nil {
			return applied, fmt.Errorf("migrate: check %s: %w", name, err)
		}
		if done {
			continue
		}
		body, err := migrations.ReadFile(path)
		if err != nil {
			return applied, fmt.Errorf("migrate: read %s: %w", name, err)
		}
		tx, err := conn.BeginTx(ctx, nil)
		if err != nil {
			return applied, fmt.Errorf("migrate: begin %s: %w", name, err)
		}
		if _, err := tx.ExecContext(ctx, string(body)); err != nil {
			tx.Rollback()
			return applied, fmt.Errorf("migrate: apply %s: %w", name, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (name) VALUES ($1)`, name); err != nil {
			tx.Rollback()
			return applied, fmt.Errorf("migrate: record %s: %w", name, err)
		}
		if err := tx.Commit(); err != nil {
			return applied, fmt.Errorf("migrate: commit %s: %w", name, err)
		}
		applied = append(applied, name)
	}
	return applied, nil
}

// inTx runs fn in a transaction, committing when it returns nil.
func (d *DB) inTx(ctx context.Context, fn func(tx *sqlx.Tx) error) error {
	tx, err := d.pool.BeginTxx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", d.check(err))
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return d.check(err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", d.check(err))
	}
	return nil
}

// canonicalID: callers answer not-found for any other spelling of an id.
func canonicalID(id string) bool { return scrapethis.CanonicalID(id) }

// translate turns driver errors into domain errors at the edge: a missing
// row becomes not-found with the message given; a data exception (bad input
// that got past validation) invalid input, without Postgres' own text; an
// unreachable database unavailable. Other errors are returned as they are,
// for the caller to wrap. A unique violation is the caller's to name (see
// isUniqueViolation): its detail is Postgres' text, never a client's.
func translate(err error, notFound string) error {
	var pqErr *pq.Error
	switch {
	case err == nil:
		return nil
	case errors.Is(err, sql.ErrNoRows):
		return scrapethis.Errorf(scrapethis.ENotFound, "%s", notFound)
	case errors.As(err, &pqErr) && pqErr.Code.Class() == "22":
		return fmt.Errorf("%w: %w", scrapethis.Errorf(scrapethis.EInvalid, "Invalid input"), err)
	}
	return err
}
