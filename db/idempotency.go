package db

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/scrapethis/scrapethis"
)

// IdempotencyTTL is how long an Idempotency-Key stays its user's.
const IdempotencyTTL = 24 * time.Hour

// idempotencyTTL is IdempotencyTTL in SQL.
const idempotencyTTL = `interval '24 hours'`

// ErrKeyInFlight refuses a job whose Idempotency-Key another request of the
// same batch carries.
var ErrKeyInFlight = scrapethis.Errorf(scrapethis.EConflict, "A request with this Idempotency-Key is still in progress")

// IdempotentJob is what a used Idempotency-Key recorded.
type IdempotentJob struct {
	RequestHash []byte `db:"request_hash"`
	JobID       string `db:"job_id"`
}

// IdempotencyKey returns the job a user's key created in the last 24
// hours, or a not-found error.
func (d *DB) IdempotencyKey(ctx context.Context, userID, key string) (IdempotentJob, error) {
	var r IdempotentJob
	err := d.get(ctx, &r, `SELECT request_hash, job_id FROM idempotency_keys
		WHERE user_id = $1 AND key = $2 AND created_at > now() - `+idempotencyTTL, userID, key)
	if errors.Is(err, sql.ErrNoRows) {
		return IdempotentJob{}, scrapethis.Errorf(scrapethis.ENotFound, "Idempotency key not found")
	}
	if err != nil {
		return IdempotentJob{}, fmt.Errorf("look up idempotency key: %w", err)
	}
	return r, nil
}

// DeleteExpiredIdempotencyKeys removes up to limit keys past their 24
// hours and returns how many went.
func (d *DB) DeleteExpiredIdempotencyKeys(ctx context.Context, limit int) (int64, error) {
	res, err := d.exec(ctx, `DELETE FROM idempotency_keys WHERE ctid IN (
		SELECT ctid FROM idempotency_keys WHERE created_at <= now() - `+idempotencyTTL+` LIMIT $1)`, limit)
	if err != nil {
		return 0, fmt.Errorf("delete expired idempotency keys: %w", err)
	}
	return res.RowsAffected()
}
