package db

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/scrapethis/scrapethis"
)

// Seeding, counting and raw baselines for the benchmark (internal/bench),
// so that its SQL lives with the rest of the store's. Nothing in the product
// calls these.

// InsertJobRow inserts a bare pending job row and nothing else: the raw
// baseline that creating a job over the API is measured against.
func (d *DB) InsertJobRow(ctx context.Context, id, userID, spiderID string) error {
	if _, err := d.exec(ctx, `INSERT INTO jobs (id, user_id, spider_id, arguments) VALUES ($1, $2, $3, '{}')`,
		id, userID, spiderID); err != nil {
		return fmt.Errorf("insert job row: %w", err)
	}
	return nil
}

// TruncateJobs deletes every job with its items and logs.
func (d *DB) TruncateJobs(ctx context.Context) error {
	if _, err := d.exec(ctx, `TRUNCATE jobs, idempotency_keys CASCADE`); err != nil {
		return fmt.Errorf("truncate jobs: %w", err)
	}
	return nil
}

// OpenJobCount counts the pending and running jobs of every user. It walks
// the partial indexes on those two statuses.
func (d *DB) OpenJobCount(ctx context.Context) (int, error) {
	var n int
	if err := d.get(ctx, &n, `SELECT count(*) FROM jobs WHERE status IN ('pending', 'running')`); err != nil {
		return 0, fmt.Errorf("count open jobs: %w", err)
	}
	return n, nil
}

// SpiderJobCount counts a spider's jobs in status created at or after since.
func (d *DB) SpiderJobCount(ctx context.Context, spiderID string, status scrapethis.Status, since time.Time) (int, error) {
	var n int
	if err := d.get(ctx, &n, `SELECT count(*) FROM jobs WHERE spider_id = $1 AND status = $2 AND created_at >= $3`,
		spiderID, string(status), since); err != nil {
		return 0, fmt.Errorf("count spider jobs: %w", err)
	}
	return n, nil
}

// UserJobCount counts a user's jobs.
func (d *DB) UserJobCount(ctx context.Context, userID string) (int, error) {
	var n int
	if err := d.get(ctx, &n, `SELECT count(*) FROM jobs WHERE user_id = $1`, userID); err != nil {
		return 0, fmt.Errorf("count user jobs: %w", err)
	}
	return n, nil
}

// ItemCount counts the items stored for a job.
func (d *DB) ItemCount(ctx context.Context, jobID string) (int, error) {
	var n int
	if err := d.get(ctx, &n, `SELECT count(*) FROM job_items WHERE job_id = $1`, jobID); err != nil {
		return 0, fmt.Errorf("count items: %w", err)
	}
	return n, nil
}

// InsertFinishedJob inserts a job row that is already finished, for items
// stored by CopyItems, and returns its id.
func (d *DB) InsertFinishedJob(ctx context.Context, userID, spiderID string) (string, error) {
	id := uuid.NewString()
	if _, err := d.exec(ctx, `INSERT INTO jobs (id, user_id, spider_id, status, finished_at)
		VALUES ($1, $2, $3, 'finished', now())`, id, userID, spiderID); err != nil {
		return "", fmt.Errorf("insert finished job: %w", err)
	}
	return id, nil
}

// CopyItems stores items with seq firstSeq, firstSeq+1, ... under a job in
// one transaction with COPY, and does nothing else (no count update, no
// owner check): the raw baseline of item ingestion.
func (d *DB) CopyItems(ctx context.Context, jobID string, firstSeq int64, items []string) error {
	return d.inTx(ctx, func(tx *sqlx.Tx) error {
		return copyRows(ctx, tx, "job_items", []string{"job_id", "seq", "data"}, len(items), func(i int) []any {
			return []any{jobID, firstSeq + int64(i), items[i]}
		})
	})
}

// FinalJobs describes a table of final jobs to seed: Total rows, of which
// every Total/UserRows-th (UserRows in all) is UserID's with SpiderID, and
// the rest are spread over Others and OtherSpiders (same length). Statuses
// are 90% finished, 7% error and 3% cancelled; created_at is spread over
// the year before an hour ago.
type FinalJobs struct {
	Total, UserRows  int
	UserID, SpiderID string
	Others           []string
	OtherSpiders     []string
}

// SeedFinalJobs inserts the rows f describes, 100,000 per statement.
func (d *DB) SeedFinalJobs(ctx context.Context, f FinalJobs) error {
	if len(f.Others) == 0 || len(f.Others) != len(f.OtherSpiders) {
		return fmt.Errorf("seed jobs: want as many other users as other spiders, and at least one")
	}
	every := max(f.Total/max(f.UserRows, 1), 1)
	const chunk = 100_000
	for lo := 1; lo <= f.Total; lo += chunk {
		hi := min(lo+chunk-1, f.Total)
		_, err := d.exec(ctx, `
			INSERT INTO jobs (id, user_id, spider_id, status, error, items_scraped, attempts, worker_id, created_at, started_at, finished_at)
			SELECT gen_random_uuid(), u, s,
				CASE WHEN g % 100 < 90 THEN 'finished' WHEN g % 100 < 97 THEN 'error' ELSE 'cancelled' END,
				CASE WHEN g % 100 < 90 THEN NULL WHEN g % 100 < 97 THEN 'exit status 1' ELSE 'cancelled' END,
				g % 500, 1, 'bench-seed', c, c + interval '1 second', c + interval '1 minute'
			FROM (
				SELECT g,
					CASE WHEN g % $3 = 0 AND g / $3 <= $4 THEN $5::uuid ELSE ($6::uuid[])[1 + g % $9] END AS u,
					CASE WHEN g % $3 = 0 AND g / $3 <= $4 THEN $7::uuid ELSE ($8::uuid[])[1 + g % $9] END AS s,
					now() - interval '1 hour' - random() * interval '365 days' AS c
				FROM generate_series($1::int, $2::int) g
			) x`, lo, hi, every, f.UserRows, f.UserID, pq.Array(f.Others), f.SpiderID, pq.Array(f.OtherSpiders), len(f.Others))
		if err != nil {
			return fmt.Errorf("seed jobs: %w", err)
		}
	}
	return nil
}

// Settle does now what autovacuum and the checkpointer would do later after
// a burst of writes: VACUUM ANALYZE, then CHECKPOINT.
func (d *DB) Settle(ctx context.Context) error {
	for _, q := range []string{`VACUUM ANALYZE`, `CHECKPOINT`} {
		if _, err := d.exec(ctx, q); err != nil {
			return fmt.Errorf("%s: %w", q, err)
		}
	}
	return nil
}

// RoundTrip runs SELECT 1: the cost of one statement on an idle server.
func (d *DB) RoundTrip(ctx context.Context) error {
	if _, err := d.exec(ctx, `SELECT 1`); err != nil {
		return fmt.Errorf("select 1: %w", err)
	}
	return nil
}

// ServerVersion is the server's version string.
func (d *DB) ServerVersion(ctx context.Context) (string, error) {
	var v string
	if err := d.get(ctx, &v, `SHOW server_version`); err != nil {
		return "", fmt.Errorf("server version: %w", err)
	}
	return v, nil
}

// ServerPIDs lists the server processes that work for this database (its
// client backends, but not those whose application_name is skipApp, unless
// skipApp is empty) and for the whole server (WAL writer, checkpointer,
// autovacuum...).
func (d *DB) ServerPIDs(ctx context.Context, skipApp string) ([]int, error) {
	var pids []int
	err := d.sel(ctx, &pids, `SELECT pid FROM pg_stat_activity
		WHERE (datname = current_database() AND ($1 = '' OR application_name IS DISTINCT FROM $1))
		OR backend_type <> 'client backend'`, skipApp)
	if err != nil {
		return nil, fmt.Errorf("server pids: %w", err)
	}
	return pids, nil
}

// CheckpointerPID is the pid of the server's checkpointer, whose parent is
// the postmaster.
func (d *DB) CheckpointerPID(ctx context.Context) (int, error) {
	var pid int
	if err := d.get(ctx, &pid, `SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'`); err != nil {
		return 0, fmt.Errorf("checkpointer pid: %w", err)
	}
	return pid, nil
}

// DeliveryTimes returns, for the bench, each delivery's id with the time
// its job became final (the outbox row is written in that statement).
func (d *DB) DeliveryTimes(ctx context.Context, webhookID string) (map[string]time.Time, error) {
	var rows []struct {
		ID        string    `db:"id"`
		CreatedAt time.Time `db:"created_at"`
	}
	if err := d.sel(ctx, &rows, `SELECT id, created_at FROM webhook_deliveries WHERE webhook_id = $1`, webhookID); err != nil {
		return nil, fmt.Errorf("delivery times: %w", err)
	}
	out := make(map[string]time.Time, len(rows))
	for _, r := range rows {
		out[r.ID] = r.CreatedAt
	}
	return out, nil
}
