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
	n := len(jobs)
	ids := make([]string, n)
	users := make([]string, n)
	spiders := make([]string, n)
	args := make([]string, n)
	timeouts := make([]sql.NullInt64, n)
	errs := make([]error, n)
	for i, nj := range jobs {
		id, err := uuid.NewV7()
		if err != nil {
			return nil, nil, fmt.Errorf("new job id: %w", err)
		}
		ids[i] = id.String()
		users[i] = nj.UserID
		spiders[i] = nj.SpiderID
		if _, err := uuid.Parse(nj.SpiderID); err != nil {
			spiders[i] = uuid.Nil.String()
		}
		args[i] = "{}"
		if len(nj.Arguments) > 0 {
			args[i] = string(nj.Arguments)
		}
		if nj.TimeoutSeconds != nil {
			timeouts[i] = sql.NullInt64{Int64: int64(*nj.TimeoutSeconds), Valid: true}
		}
	}
	var rows []jobRow
	err := d.SelectContext(ctx, &rows, `
		WITH input AS (
			SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::jsonb[], $5::int[])
				AS t(id, user_id, spider_id, arguments, timeout_seconds)
		), j AS (
			INSERT INTO jobs (id, user_id, spider_id, arguments, timeout_seconds)
			SELECT i.id, i.user_id, i.spider_id, i.arguments, i.timeout_seconds
			FROM input i JOIN spiders s ON s.id = i.spider_id AND s.user_id = i.user_id AND s.deleted_at IS NULL
			ORDER BY i.id
			RETURNING *
		)
		SELECT `+jobColumns+` FROM j JOIN spiders s ON s.id = j.spider_id`,
		pq.Array(ids), pq.Array(users), pq.Array(spiders), pq.Array(args), pq.GenericArray{A: timeouts})
	if err != nil {
		return nil, nil, translate(err, "Spider not found")
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
	err := d.SelectContext(ctx, &rows, `SELECT key_hash, user_id FROM api_keys
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
