package db

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/scrapethis/scrapethis"
)

// KeyPrefix starts every API key, so leaked keys are easy to grep for.
const KeyPrefix = "st_"

// HashKey is how API keys are stored: keys carry 256 random bits, so a
// plain SHA-256 is as strong as a slow hash and keeps lookups cheap.
func HashKey(key string) []byte {
	sum := sha256.Sum256([]byte(key))
	return sum[:]
}

// userRow is a user as SQL sees it.
type userRow struct {
	ID        string    `db:"id"`
	Email     string    `db:"email"`
	CreatedAt time.Time `db:"created_at"`
}

func (r userRow) toUser() scrapethis.User {
	return scrapethis.User{ID: r.ID, Email: r.Email, CreatedAt: r.CreatedAt}
}

// EnsureUser returns the user with the email, creating it if new.
func (d *DB) EnsureUser(ctx context.Context, email string) (scrapethis.User, error) {
	var r userRow
	err := d.get(ctx, &r, `
		INSERT INTO users (id, email) VALUES ($1, $2)
		ON CONFLICT (email) DO UPDATE SET email = EXCLUDED.email
		RETURNING id, email, created_at`, uuid.NewString(), email)
	if err != nil {
		return scrapethis.User{}, fmt.Errorf("ensure user %q: %w", email, err)
	}
	return r.toUser(), nil
}

// CreateAPIKey makes a new random key for the user and stores only its
// hash. The key itself is returned once and never again.
func (d *DB) CreateAPIKey(ctx context.Context, userID, name string) (id, key string, err error) {
	buf := make([]byte, 32)
	if _, err := rand.Read(buf); err != nil {
		return "", "", fmt.Errorf("generate key: %w", err)
	}
	key = KeyPrefix + base64.RawURLEncoding.EncodeToString(buf)
	id = uuid.NewString()
	_, err = d.exec(ctx, `
		INSERT INTO api_keys (id, user_id, name, prefix, key_hash) VALUES ($1, $2, $3, $4, $5)`,
		id, userID, name, key[:len(KeyPrefix)+6], HashKey(key))
	if err != nil {
		return "", "", fmt.Errorf("store key: %w", err)
	}
	return id, key, nil
}

// RevokeAPIKey revokes a key given the key itself or its id, and returns
// how many keys it revoked.
func (d *DB) RevokeAPIKey(ctx context.Context, keyOrID string) (int64, error) {
	res, err := d.exec(ctx, `UPDATE api_keys SET revoked_at = now()
		WHERE revoked_at IS NULL AND (id::text = $1 OR key_hash = $2)`, keyOrID, HashKey(keyOrID))
	if err != nil {
		return 0, fmt.Errorf("revoke key: %w", err)
	}
	n, _ := res.RowsAffected()
	return n, nil
}

// RevokeUserKeys revokes every key of the user with the email.
func (d *DB) RevokeUserKeys(ctx context.Context, email string) (int64, error) {
	res, err := d.exec(ctx, `
		UPDATE api_keys SET revoked_at = now()
		WHERE revoked_at IS NULL AND user_id = (SELECT id FROM users WHERE email = $1)`, email)
	if err != nil {
		return 0, fmt.Errorf("revoke keys of %q: %w", email, err)
	}
	n, _ := res.RowsAffected()
	return n, nil
}

// UserByKey returns the id of the user owning a live key, or a
// not-found error.
func (d *DB) UserByKey(ctx context.Context, key string) (string, error) {
	var userID string
	err := d.get(ctx, &userID, `SELECT user_id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL`, HashKey(key))
	if err != nil {
		return "", translate(err, "Invalid or missing API key")
	}
	return userID, nil
}

// UserByEmail returns the user with the email.
func (d *DB) UserByEmail(ctx context.Context, email string) (scrapethis.User, error) {
	var r userRow
	err := d.get(ctx, &r, `SELECT id, email, created_at FROM users WHERE email = $1`, email)
	return r.toUser(), translate(err, "User not found")
}
