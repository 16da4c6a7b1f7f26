package db

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/lib/pq"

	"github.com/scrapethis/scrapethis"
)

// outbox is a CTE that writes one delivery per matching webhook of each
// job in the CTE "done" (id, user_id, status) that is final: the
// statements that end jobs end with it, so a job's final status and its
// webhook deliveries commit together or not at all.
const outbox = `outbox AS (
	INSERT INTO webhook_deliveries (id, webhook_id, job_id, event)
	SELECT gen_random_uuid(), h.id, done.id, 'job.' || done.status
	FROM done JOIN webhooks h ON h.user_id = done.user_id AND h.events && ARRAY['*', 'job.' || done.status]
	WHERE done.status IN ('finished', 'error', 'cancelled')
)`

// Webhook is a user's endpoint for job events.
type Webhook struct {
	ID        string         `db:"id"`
	UserID    string         `db:"user_id"`
	URL       string         `db:"url"`
	Events    pq.StringArray `db:"events"`
	Secret    string         `db:"secret"`
	CreatedAt time.Time      `db:"created_at"`
}

// CreateWebhook stores a webhook; the caller has checked url and events.
func (d *DB) CreateWebhook(ctx context.Context, userID, url string, events []string, secret string) (Webhook, error) {
	id, err := uuid.NewV7()
	if err != nil {
		return Webhook{}, fmt.Errorf("new webhook id: %w", err)
	}
	var w Webhook
	err = d.get(ctx, &w, `INSERT INTO webhooks (id, user_id, url, events, secret) VALUES ($1, $2, $3, $4, $5)
		RETURNING id, user_id, url, events, secret, created_at`, id.String(), userID, url, pq.StringArray(events), secret)
	if err != nil {
		return Webhook{}, fmt.Errorf("create webhook: %w", err)
	}
	return w, nil
}

// Webhooks lists a user's webhooks, newest first.
func (d *DB) Webhooks(ctx context.Context, userID string) ([]Webhook, error) {
	var out []Webhook
	err := d.sel(ctx, &out, `SELECT id, user_id, url, events, secret, created_at FROM webhooks
		WHERE user_id = $1 ORDER BY created_at DESC, id DESC LIMIT 1000`, userID)
	if err != nil {
		return nil, fmt.Errorf("list webhooks: %w", err)
	}
	return out, nil
}

var errWebhookNotFound = scrapethis.Errorf(scrapethis.ENotFound, "Webhook not found")

// Webhook returns the user's webhook with the id.
func (d *DB) Webhook(ctx context.Context, userID, id string) (Webhook, error) {
	if !canonicalID(id) {
		return Webhook{}, errWebhookNotFound
	}
	var w Webhook
	err := d.get(ctx, &w, `SELECT id, user_id, url, events, secret, created_at FROM webhooks
		WHERE id = $1 AND user_id = $2`, id, userID)
	if err != nil {
		return Webhook{}, translate(err, "Webhook not found")
	}
	return w, nil
}

// DeleteWebhook removes the user's webhook with its pending deliveries.
func (d *DB) DeleteWebhook(ctx context.Context, userID, id string) error {
	if !canonicalID(id) {
		return errWebhookNotFound
	}
	res, err := d.exec(ctx, `DELETE FROM webhooks WHERE id = $1 AND user_id = $2`, id, userID)
	if err != nil {
		return fmt.Errorf("delete webhook: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return errWebhookNotFound
	}
	return nil
}

// WebhookAttempt is one row of a webhook's delivery log.
type WebhookAttempt struct {
	DeliveryID     string         `db:"delivery_id"`
	Event          string         `db:"event"`
	JobID          string         `db:"job_id"`
	Attempt        int            `db:"attempt"`
	ResponseStatus sql.NullInt32  `db:"response_status"`
	Error          sql.NullString `db:"error"`
	DurationMS     int            `db:"duration_ms"`
	CreatedAt      time.Time      `db:"created_at"`
}

// WebhookAttempts returns up to limit attempts of a webhook, newest first.
func (d *DB) WebhookAttempts(ctx context.Context, webhookID string, limit int) ([]WebhookAttempt, error) {
	var out []WebhookAttempt
	err := d.sel(ctx, &out, `SELECT a.delivery_id, d.event, d.job_id, a.attempt, a.response_status, a.error, a.duration_ms, a.created_at
		FROM webhook_attempts a JOIN webhook_deliveries d ON d.id = a.delivery_id
		WHERE a.webhook_id = $1 ORDER BY a.created_at DESC, a.attempt DESC LIMIT $2`, webhookID, limit)
	if err != nil {
		return nil, fmt.Errorf("list webhook attempts: %w", err)
	}
	return out, nil
}

// Delivery is a claimed delivery, with what sending it needs.
type Delivery struct {
	ID        string    `db:"id"`
	WebhookID string    `db:"webhook_id"`
	JobID     string    `db:"job_id"`
	Event     string    `db:"event"`
	Attempt   int       `db:"attempts"` // this attempt's number, from 1
	CreatedAt time.Time `db:"created_at"`
	URL       string    `db:"url"`
	Secret    string    `db:"secret"`
}

// ClaimDeliveries takes up to limit due deliveries, counts an attempt on
// each, and holds them for lease: one not settled by then is due again.
// Concurrent deliverers skip each other's rows.
func (d *DB) ClaimDeliveries(ctx context.Context, limit int, lease time.Duration) ([]Delivery, error) {
	var out []Delivery
	err := d.sel(ctx, &out, `
		WITH c AS (
			UPDATE webhook_deliveries SET attempts = attempts + 1, next_attempt_at = now() + make_interval(secs => $2)
			WHERE id IN (
				SELECT id FROM webhook_deliveries WHERE next_attempt_at <= now()
				ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED)
			RETURNING id, webhook_id, job_id, event, attempts, created_at
		)
		SELECT c.*, h.url, h.secret FROM c JOIN webhooks h ON h.id = c.webhook_id`, limit, lease.Seconds())
	if err != nil {
		return nil, fmt.Errorf("claim webhook deliveries: %w", err)
	}
	return out, nil
}

// DeliveryResult is how one attempt went.
type DeliveryResult struct {
	Status   int    // the response status, 0 for none
	Err      string // why it failed, "" for a 2xx
	Duration time.Duration
	// Retry is when to try again after a failure; zero gives up.
	Retry time.Duration
}

// SettleDelivery logs an attempt and settles its delivery: delivered, due
// again after r.Retry, or given up. An attempt whose lease passed (another
// deliverer has since counted a newer one) is logged but settles nothing.
func (d *DB) SettleDelivery(ctx context.Context, dl Delivery, r DeliveryResult) error {
	status := sql.NullInt32{Int32: int32(r.Status), Valid: r.Status != 0}
	errText := sql.NullString{String: r.Err, Valid: r.Err != ""}
	var next sql.NullFloat64
	if r.Err != "" && r.Retry > 0 {
		next = sql.NullFloat64{Float64: r.Retry.Seconds(), Valid: true}
	}
	var n int
	err := d.get(ctx, &n, `
		WITH a AS (
			INSERT INTO webhook_attempts (delivery_id, attempt, webhook_id, response_status, error, duration_ms)
			VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING
		), s AS (
			UPDATE webhook_deliveries SET
				delivered_at = CASE WHEN $5::text IS NULL THEN now() END,
				next_attempt_at = CASE WHEN $5::text IS NULL OR $7::float8 IS NULL THEN NULL ELSE now() + make_interval(secs => $7) END
			WHERE id = $1 AND attempts = $2
			RETURNING 1
		)
		SELECT count(*) FROM s`, dl.ID, dl.Attempt, dl.WebhookID, status, errText, r.Duration.Milliseconds(), next)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("settle webhook delivery: %w", err)
	}
	return nil
}

// outboxChannel is NOTIFYed for every transaction that writes deliveries.
const outboxChannel = "scrapethis_webhook_outbox"

// WatchOutbox listens on its own connection until ctx ends and calls wake
// for each transaction that wrote webhook deliveries, and after each
// reconnect (one may have been missed meanwhile).
func (d *DB) WatchOutbox(ctx context.Context, wake func()) error {
	l := pq.NewListener(d.dsn, 100*time.Millisecond, 5*time.Second, nil)
	defer l.Close()
	if err := l.Listen(outboxChannel); err != nil {
		return fmt.Errorf("watch the webhook outbox: %w", err)
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-l.Notify:
			wake()
		}
	}
}
