package db

import (
	"context"
	"database/sql"
	"fmt"
)

// ItemWindow picks a job's items in scrape order: skip Offset, then at
// most Limit (0: all the rest).
type ItemWindow struct {
	Offset int64
	Limit  int64
}

func (w ItemWindow) limit() sql.NullInt64 {
	return sql.NullInt64{Int64: w.Limit, Valid: w.Limit > 0}
}

// ItemRange returns the sequence numbers of the window's first and last
// items, and false when the window holds none. Streams read the range
// page by page with ItemPage, so a window is fixed when the read begins.
func (d *DB) ItemRange(ctx context.Context, jobID string, w ItemWindow) (first, last int64, ok bool, err error) {
	var r struct {
		First sql.NullInt64 `db:"first"`
		Last  sql.NullInt64 `db:"last"`
	}
	err = d.get(ctx, &r, `
		WITH win AS (SELECT seq FROM job_items WHERE job_id = $1 ORDER BY seq OFFSET $2 LIMIT $3)
		SELECT min(seq) AS first, max(seq) AS last FROM win`, jobID, w.Offset, w.limit())
	if err != nil {
		return 0, 0, false, fmt.Errorf("read items: %w", err)
	}
	return r.First.Int64, r.Last.Int64, r.First.Valid, nil
}

// ItemKeys returns the union of the top-level keys of the window's items
// (those that are JSON objects), in the order they first appear: the
// columns of a CSV export.
func (d *DB) ItemKeys(ctx context.Context, jobID string, w ItemWindow) ([]string, error) {
	var out []string
	err := d.sel(ctx, &out, `
		WITH win AS (SELECT seq, data FROM job_items WHERE job_id = $1 ORDER BY seq OFFSET $2 LIMIT $3),
		keys AS (
			SELECT DISTINCT ON (t.k) t.k, win.seq, t.ord
			FROM win, json_object_keys(CASE WHEN json_typeof(win.data) = 'object' THEN win.data ELSE '{}'::json END)
				WITH ORDINALITY AS t(k, ord)
			ORDER BY t.k, win.seq, t.ord
		)
		SELECT k FROM keys ORDER BY seq, ord`, jobID, w.Offset, w.limit())
	if err != nil {
		return nil, fmt.Errorf("read item keys: %w", err)
	}
	return out, nil
}
