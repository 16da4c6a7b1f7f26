package db

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/scrapethis/scrapethis"
)

// Session is a signed-in console session. Token is what the browser's
// cookie holds; only its hash is stored.
type Session struct {
	Token     string
	UserID    string
	Email     string
	CSRF      string
	ExpiresAt time.Time
}

// errBadKey is a sign-in with a key that is unknown, malformed or revoked.
var errBadKey = scrapethis.Errorf(scrapethis.EUnauthorized, "Invalid or missing API key")

// randomToken returns 256 random bits, URL-safe.
func randomToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random token: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// CreateSession opens a console session for the owner of a live API key,
// valid for ttl. An unknown or revoked key is an unauthorized error. The
// key itself is neither stored nor returned; expired sessions are swept
// on the way.
func (d *DB) CreateSession(ctx context.Context, key string, ttl time.Duration) (Session, error) {
	if key == "" || len(key) > 256 {
		return Session{}, errBadKey
	}
	token, err := randomToken()
	if err != nil {
		return Session{}, err
	}
	csrf, err := randomToken()
	if err != nil {
		return Session{}, err
	}
	var r struct {
		UserID    string    `db:"user_id"`
		Email     string    `db:"email"`
		ExpiresAt time.Time `db:"expires_at"`
	}
	err = d.get(ctx, &r, `
		WITH k AS (
			SELECT k.id, k.user_id FROM api_keys k WHERE k.key_hash = $1 AND k.revoked_at IS NULL
		), s AS (
			INSERT INTO console_sessions (token_hash, user_id, api_key_id, csrf_token, expires_at)
			SELECT $2, k.user_id, k.id, $3, now() + make_interval(secs => $4) FROM k
			RETURNING user_id, expires_at
		)
		SELECT s.user_id, u.email, s.expires_at FROM s JOIN users u ON u.id = s.user_id`,
		HashKey(key), HashKey(token), csrf, ttl.Seconds())
	if err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return Session{}, errBadKey
		}
		return Session{}, fmt.Errorf("create session: %w", err)
	}
	if _, err := d.exec(ctx, `DELETE FROM console_sessions WHERE expires_at < now()`); err != nil {
		return Session{}, fmt.Errorf("sweep expired sessions: %w", err)
	}
	return Session{Token: token, UserID: r.UserID, Email: r.Email, CSRF: csrf, ExpiresAt: r.ExpiresAt.UTC()}, nil
}

// SessionByToken returns the live session whose cookie holds token: not
// expired, and opened with a key that is still live. Any other token is
// an unauthorized error.
func (d *DB) SessionByToken(ctx context.Context, token string) (Session, error) {
	if token == "" || len(token) > 128 {
		return Session{}, errBadSession
	}
	var r struct {
		UserID    string    `db:"user_id"`
		Email     string    `db:"email"`
		CSRF      string    `db:"csrf_token"`
		ExpiresAt time.Time `db:"expires_at"`
	}
	err := d.get(ctx, &r, `
		SELECT s.user_id, u.email, s.csrf_token, s.expires_at
		FROM console_sessions s
		JOIN api_keys k ON k.id = s.api_key_id AND k.revoked_at IS NULL
		JOIN users u ON u.id = s.user_id
		WHERE s.token_hash = $1 AND s.expires_at > now()`, HashKey(token))
	if err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return Session{}, errBadSession
		}
		return Session{}, fmt.Errorf("look up session: %w", err)
	}
	return Session{Token: token, UserID: r.UserID, Email: r.Email, CSRF: r.CSRF, ExpiresAt: r.ExpiresAt.UTC()}, nil
}

var errBadSession = scrapethis.Errorf(scrapethis.EUnauthorized, "Not signed in")

// DeleteSession ends the session whose cookie holds token (sign-out).
func (d *DB) DeleteSession(ctx context.Context, token string) error {
	if _, err := d.exec(ctx, `DELETE FROM console_sessions WHERE token_hash = $1`, HashKey(token)); err != nil {
		return fmt.Errorf("delete session: %w", err)
	}
	return nil
}
