package db

import (
	"context"
	"fmt"
	"time"
)

// PurgeCandidates returns up to limit final jobs that ended before cutoff
// and whose items and logs are not yet deleted, oldest first.
func (d *DB) PurgeCandidates(ctx context.Context, cutoff time.Time, limit int) ([]string, error) {
	var ids []string
	err := d.sel(ctx, &ids, `SELECT id FROM jobs
		WHERE purged_at IS NULL AND finished_at IS NOT NULL AND finished_at < $1 AND status IN ('finished', 'error', 'cancelled')
		ORDER BY finished_at LIMIT $2`, cutoff, limit)
	if err != nil {
		return nil, fmt.Errorf("retention: list jobs: %w", err)
	}
	return ids, nil
}

// DeleteJobRows deletes up to limit rows of a job from job_items or
// job_logs, in one short statement, and returns how many went.
func (d *DB) DeleteJobRows(ctx context.Context, table, jobID string, limit int) (int64, error) {
	if table != "job_items" && table != "job_logs" {
		return 0, fmt.Errorf("retention: no table %q", table)
	}
	res, err := d.exec(ctx, `DELETE FROM `+table+` WHERE job_id = $1 AND seq IN (
		SELECT seq FROM `+table+` WHERE job_id = $1 ORDER BY seq LIMIT $2)`, jobID, limit)
	if err != nil {
		return 0, fmt.Errorf("retention: delete %s: %w", table, err)
	}
	return res.RowsAffected()
}

// MarkPurged records that a final job's items and logs are gone; its row,
// counts and stats stay.
func (d *DB) MarkPurged(ctx context.Context, jobID string) error {
	if _, err := d.exec(ctx, `UPDATE jobs SET purged_at = now() WHERE id = $1 AND purged_at IS NULL`, jobID); err != nil {
		return fmt.Errorf("retention: mark purged: %w", err)
	}
	return nil
}
