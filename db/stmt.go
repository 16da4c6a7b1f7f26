package db

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/jmoiron/sqlx"
)

// Every query the store runs outside a transaction goes through a prepared
// statement kept for the life of the process (database/sql prepares it
// again on each connection that needs it). Postgres then plans a query once
// per connection rather than at every call: planning was most of the
// database time of a jobs listing. The pool is reached only through these
// methods and inTx.

func (d *DB) stmt(ctx context.Context, query string) (*sqlx.Stmt, error) {
	if s, ok := d.stmts.Load(query); ok {
		return s.(*sqlx.Stmt), nil
	}
	s, err := d.pool.PreparexContext(ctx, query)
	if err != nil {
		return nil, fmt.Errorf("prepare: %w", d.check(err))
	}
	if prev, loaded := d.stmts.LoadOrStore(query, s); loaded {
		s.Close()
		return prev.(*sqlx.Stmt), nil
	}
	return s, nil
}

// get runs query and scans one row into dest (a struct or a single value).
func (d *DB) get(ctx context.Context, dest any, query string, args ...any) error {
	s, err := d.stmt(ctx, query)
	if err != nil {
		return err
	}
	return d.check(s.GetContext(ctx, dest, args...))
}

// sel runs query and scans all rows into dest.
func (d *DB) sel(ctx context.Context, dest any, query string, args ...any) error {
	s, err := d.stmt(ctx, query)
	if err != nil {
		return err
	}
	return d.check(s.SelectContext(ctx, dest, args...))
}

// exec runs query for its effect.
func (d *DB) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	s, err := d.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	res, err := s.ExecContext(ctx, args...)
	return res, d.check(err)
}

// query runs query and returns its rows, for streaming.
func (d *DB) query(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	s, err := d.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	rows, err := s.QueryContext(ctx, args...)
	return rows, d.check(err)
}

// Close closes the prepared statements and the pool.
func (d *DB) Close() error {
	d.stmts.Range(func(k, v any) bool {
		v.(*sqlx.Stmt).Close()
		d.stmts.Delete(k)
		return true
	})
	return d.pool.Close()
}
