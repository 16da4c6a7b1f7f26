package db

import (
	"context"
	"database/sql"
	"encoding/hex"
	"fmt"

	"github.com/google/uuid"
	"github.com/lib/pq"

	"github.com/scrapethis/scrapethis"
)

// CreateJobs inserts many pending jobs in one statement and one commit.
// Each job's spider must be one of its user's live spiders; a job whose
// spider is not gets a not-found error in its slot and is not inserted.
// Ids are UUIDv7, taken in order, so jobs created in one batch still list
// in the order they were asked for.
func (d *DB) CreateJobs(ctx context.Context, jobs []scrapethis.NewJob) ([]scrapethis.Job, []error, error) {
	return insertJobs(ctx, d.sel, jobs)
}

// CreateJob inserts one pending job (see CreateJobs).
func (d *DB) CreateJob(ctx context.Context, nj scrapethis.NewJob) (scrapethis.Job, error) {
	jobs, errs, err := d.CreateJobs(ctx, []scrapethis.NewJob{nj})
	if err != nil {
		return scrapethis.Job{}, err
	}
	return jobs[0], errs[0]
}

// selectFunc runs a query and scans all its rows: (*DB).sel, through
// prepared statements, or a transaction's SelectContext.
type selectFunc func(ctx context.Context, dest any, query string, args ...any) error

// insertJobs is the one statement that creates jobs, for the API and the
// scheduler alike. A job of a schedule whose fire time already has a job
// is not inserted (UNIQUE (schedule_id, scheduled_for)); its slot, like a
// job whose spider is not its user's live spider, gets a not-found error.
func insertJobs(ctx context.Context, sel selectFunc, jobs []scrapethis.NewJob) ([]scrapethis.Job, []error, error) {
	n := len(jobs)
	ids := make([]string, n)
	users := make([]string, n)
	spiders := make([]string, n)
	args := make([]string, n)
	timeouts := make([]sql.NullInt64, n)
	schedules := make([]sql.NullString, n)
	fireTimes := make([]pq.NullTime, n)
	errs := make([]error, n)
	for i, nj := range jobs {
		id, err := uuid.NewV7()
		if err != nil {
			return nil, nil, fmt.Errorf("new job id: %w", err)
		}
		ids[i] = id.String()
		users[i] = nj.UserID
		spiders[i] = nj.SpiderID
		if !canonicalID(nj.SpiderID) {
			spiders[i] = uuid.Nil.String()
		}
		args[i] = "{}"
		if len(nj.Arguments) > 0 {
			args[i] = string(nj.Arguments)
		}
		if nj.TimeoutSeconds != nil {
			timeouts[i] = sql.NullInt64{Int64: int64(*nj.TimeoutSeconds), Valid: true}
		}
		if nj.ScheduleID != nil {
			schedules[i] = sql.NullString{String: *nj.ScheduleID, Valid: true}
		}
		if nj.ScheduledFor != nil {
			fireTimes[i] = pq.NullTime{Time: *nj.ScheduledFor, Valid: true}
		}
	}
	var rows []jobRow
	err := sel(ctx, &rows, `
		WITH input AS (
			SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::jsonb[], $5::int[], $6::uuid[], $7::timestamptz[])
				AS t(id, user_id, spider_id, arguments, timeout_seconds, schedule_id, scheduled_for)
		), j AS (
			INSERT INTO jobs (id, user_id, spider_id, arguments, timeout_seconds, schedule_id, scheduled_for)
			SELECT i.id, i.user_id, i.spider_id, i.arguments, i.timeout_seconds, i.schedule_id, i.scheduled_for
			FROM input i JOIN spiders s ON s.id = i.spider_id AND s.user_id = i.user_id AND s.deleted_at IS NULL
			ORDER BY i.id
			ON CONFLICT (schedule_id, scheduled_for) WHERE schedule_id IS NOT NULL DO NOTHING
			RETURNING *
		)
		SELECT `+jobColumns+` FROM j JOIN spiders s ON s.id = j.spider_id`,
		pq.Array(ids), pq.Array(users), pq.Array(spiders), pq.Array(args), pq.GenericArray{A: timeouts},
		pq.GenericArray{A: schedules}, pq.GenericArray{A: fireTimes})
	if err != nil {
		if err := translate(err, "Spider not found"); scrapethis.ErrorCode(err) != scrapethis.EInternal {
			return nil, nil, err
		}
		return nil, nil, fmt.Errorf("create jobs: %w", err)
	}
	byID := make(map[string]scrapethis.Job, len(rows))
	for _, r := range rows {
		byID[r.ID] = r.toJob()
	}
	out := make([]scrapethis.Job, n)
	for i, id := range ids {
		j, ok := byID[id]
		if !ok {
			errs[i] = scrapethis.Errorf(scrapethis.ENotFound, "Spider not found")
			continue
		}
		out[i] = j
	}
	return out, errs, nil
}

// UsersByKeys resolves many API keys in one query: the user id of each live
// key, "" for a key that is unknown or revoked.
func (d *DB) UsersByKeys(ctx context.Context, keys []string) ([]string, error) {
	hashes := make([][]byte, len(keys))
	for i, k := range keys {
		hashes[i] = HashKey(k)
	}
	var rows []struct {
		Hash   []byte `db:"key_hash"`
		UserID string `db:"user_id"`
	}
	err := d.sel(ctx, &rows, `SELECT key_hash, user_id FROM api_keys
		WHERE key_hash = ANY($1::bytea[]) AND revoked_at IS NULL`, pq.ByteaArray(hashes))
	if err != nil {
		return nil, fmt.Errorf("look up keys: %w", err)
	}
	byHash := make(map[string]string, len(rows))
	for _, r := range rows {
		byHash[hex.EncodeToString(r.Hash)] = r.UserID
	}
	out := make([]string, len(keys))
	for i, h := range hashes {
		out[i] = byHash[hex.EncodeToString(h)]
	}
	return out, nil
}
