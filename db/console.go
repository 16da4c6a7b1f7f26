package db

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/lib/pq"

	"github.com/scrapethis/scrapethis"
)

// JobsByIDs returns those of the jobs with the ids that are the user's, in
// no particular order: the console's live status updates. Ids not in
// canonical form are left out.
func (d *DB) JobsByIDs(ctx context.Context, userID string, ids []string) ([]scrapethis.Job, error) {
	keep := make([]string, 0, len(ids))
	for _, id := range ids {
		if canonicalID(id) {
			keep = append(keep, id)
		}
	}
	if len(keep) == 0 {
		return nil, nil
	}
	var rows []jobRow
	if err := d.sel(ctx, &rows, `SELECT `+jobColumns+` FROM jobs j `+jobJoins+`
		WHERE j.user_id = $1 AND j.id = ANY($2::uuid[])`, userID, pq.Array(keep)); err != nil {
		return nil, fmt.Errorf("jobs by ids: %w", err)
	}
	out := make([]scrapethis.Job, len(rows))
	for i, r := range rows {
		out[i] = r.toJob()
	}
	return out, nil
}

// FirstItems returns up to limit of a job's first items in scrape order:
// a page of a table, however many items the job has.
func (d *DB) FirstItems(ctx context.Context, jobID string, limit int) ([]json.RawMessage, error) {
	var rows [][]byte
	if err := d.sel(ctx, &rows, `SELECT data FROM job_items WHERE job_id = $1 ORDER BY seq LIMIT $2`, jobID, limit); err != nil {
		return nil, fmt.Errorf("read items: %w", err)
	}
	out := make([]json.RawMessage, len(rows))
	for i, r := range rows {
		out[i] = r
	}
	return out, nil
}
