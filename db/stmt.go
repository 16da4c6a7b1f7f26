package db

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/jmoiron/sqlx"
)

// Every query the store runs on *DB goes through a prepared statement kept
// for the life of the process (database/sql prepares it again on each
// connection that needs it). Postgres then plans a query once per
// connection rather than at every call: planning was most of the database
// time of a jobs listing. These methods shadow sqlx's of the same names.

func (d *DB) stmt(ctx context.Context, query string) (*sqlx.Stmt, error) {
	if s, ok := d.stmts.Load(query); ok {
		return s.(*sqlx.Stmt), nil
	}
	s, err := d.DB.PreparexContext(ctx, query)
	if err != nil {
		return nil, fmt.Errorf("prepare: %w", err)
	}
	if prev, loaded := d.stmts.LoadOrStore(query, s); loaded {
		s.Close()
		return prev.(*sqlx.Stmt), nil
	}
	return s, nil
}

// GetContext runs query as a prepared statement and scans one row into dest.
func (d *DB) GetContext(ctx context.Context, dest any, query string, args ...any) error {
	s, err := d.stmt(ctx, query)
	if err != nil {
		return err
	}
	return s.GetContext(ctx, dest, args...)
}

// SelectContext runs query as a prepared statement and scans all rows into dest.
func (d *DB) SelectContext(ctx context.Context, dest any, query string, args ...any) error {
	s, err := d.stmt(ctx, query)
	if err != nil {
		return err
	}
	return s.SelectContext(ctx, dest, args...)
}

// ExecContext runs query as a prepared statement.
func (d *DB) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	s, err := d.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	return s.ExecContext(ctx, args...)
}

// QueryRowxContext runs query as a prepared statement for one row.
func (d *DB) QueryRowxContext(ctx context.Context, query string, args ...any) *sqlx.Row {
	s, err := d.stmt(ctx, query)
	if err != nil {
		return d.DB.QueryRowxContext(ctx, query, args...)
	}
	return s.QueryRowxContext(ctx, args...)
}

// QueryRowContext runs query as a prepared statement for one row.
func (d *DB) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	s, err := d.stmt(ctx, query)
	if err != nil {
		return d.DB.QueryRowContext(ctx, query, args...)
	}
	return s.QueryRowContext(ctx, args...)
}

// QueryContext runs query as a prepared statement.
func (d *DB) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	s, err := d.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	return s.QueryContext(ctx, args...)
}

// QueryxContext runs query as a prepared statement.
func (d *DB) QueryxContext(ctx context.Context, query string, args ...any) (*sqlx.Rows, error) {
	s, err := d.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	return s.QueryxContext(ctx, args...)
}

// Close closes the prepared statements and the pool.
func (d *DB) Close() error {
	d.stmts.Range(func(k, v any) bool {
		v.(*sqlx.Stmt).Close()
		d.stmts.Delete(k)
		return true
	})
	return d.DB.Close()
}
