package webhooks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/scrapethis/scrapethis"
	"github.com/scrapethis/scrapethis/db"
)

// DefaultBackoff is the wait before each retry (Standard Webhooks'
// schedule): eight attempts over about 27 hours, then the delivery is
// given up.
var DefaultBackoff = []time.Duration{
	5 * time.Second, 5 * time.Minute, 30 * time.Minute, 2 * time.Hour, 5 * time.Hour, 10 * time.Hour, 10 * time.Hour,
}

// Config tunes a Deliverer. Zero fields take the defaults.
type Config struct {
	Poll         time.Duration   // how often due deliveries are looked for, besides each new one's NOTIFY (1s)
	Batch        int             // deliveries claimed at a time (32)
	Concurrency  int             // requests in flight at once (8)
	Timeout      time.Duration   // per request, connecting included (10s)
	Lease        time.Duration   // a claimed delivery not settled by then is due again (1m)
	Backoff      []time.Duration // waits before retries; len+1 attempts in all (DefaultBackoff)
	AllowPrivate bool            // deliver to private and loopback addresses too
}

func (c Config) withDefaults() Config {
	if c.Poll <= 0 {
		c.Poll = time.Second
	}
	if c.Batch <= 0 {
		c.Batch = 32
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 8
	}
	if c.Timeout <= 0 {
		c.Timeout = 10 * time.Second
	}
	if c.Lease <= 0 {
		c.Lease = time.Minute
	}
	if c.Lease < 2*c.Timeout {
		c.Lease = 2 * c.Timeout
	}
	if c.Backoff == nil {
		c.Backoff = DefaultBackoff
	}
	return c
}

// EncodeJob is a job's JSON as the API shows it (api.EncodeJob).
type EncodeJob func(scrapethis.Job) ([]byte, error)

// Deliverer sends due deliveries from the outbox until its context ends.
// Any number may run, in any processes: each claims rows the others skip.
type Deliverer struct {
	cfg    Config
	db     *db.DB
	encode EncodeJob
	log    *slog.Logger
	client *http.Client
	// Delivered, if set, is called after each attempt that got a 2xx,
	// with the time since the event; for metrics.
	Delivered func(lag time.Duration)
}

// New returns a Deliverer.
func New(cfg Config, store *db.DB, encode EncodeJob, log *slog.Logger) *Deliverer {
	cfg = cfg.withDefaults()
	dialer := &net.Dialer{Timeout: cfg.Timeout}
	if !cfg.AllowPrivate {
		dialer.Control = dialControl
	}
	tr := &http.Transport{
		Proxy:               nil, // a proxy would dial for us, past the address check
		DialContext:         dialer.DialContext,
		TLSHandshakeTimeout: cfg.Timeout,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     90 * time.Second,
	}
	client := &http.Client{
		Transport: tr,
		Timeout:   cfg.Timeout,
		// A redirect is an answer, not a place to go: a 3xx is a failure.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return &Deliverer{cfg: cfg, db: store, encode: encode, log: log, client: client}
}

// Run delivers until ctx ends; it waits for its requests before returning.
// A new delivery's NOTIFY wakes it at once; it also looks every Poll, for
// retries coming due and for a notification lost while its listening
// connection was down.
func (d *Deliverer) Run(ctx context.Context) error {
	defer d.client.CloseIdleConnections()
	sem := make(chan struct{}, d.cfg.Concurrency)
	var wg sync.WaitGroup
	defer wg.Wait()
	wake := make(chan struct{}, 1)
	wg.Go(func() {
		err := d.db.WatchOutbox(ctx, func() {
			select {
			case wake <- struct{}{}:
			default:
			}
		})
		if err != nil && ctx.Err() == nil {
			d.log.Warn("webhook outbox watch failed; deliveries wait for the poll", "poll", d.cfg.Poll, "err", err)
		}
	})
	t := time.NewTicker(d.cfg.Poll)
	defer t.Stop()
	for {
		for ctx.Err() == nil {
			n := d.cfg.Batch
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			batch, err := d.db.ClaimDeliveries(cctx, n, d.cfg.Lease)
			cancel()
			if err != nil {
				if ctx.Err() == nil {
					d.log.Warn("claim webhook deliveries failed", "err", err)
				}
				break
			}
			for _, dl := range batch {
				sem <- struct{}{}
				wg.Go(func() {
					defer func() { <-sem }()
					d.deliver(ctx, dl)
				})
			}
			if len(batch) < n {
				break
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		case <-wake:
		}
	}
}

// deliver makes one attempt and settles it.
func (d *Deliverer) deliver(ctx context.Context, dl db.Delivery) {
	start := time.Now()
	status, err := d.send(ctx, dl)
	res := db.DeliveryResult{Status: status, Duration: time.Since(start)}
	if err != nil {
		if ctx.Err() != nil {
			return // shutting down: the lease hands it to the next deliverer
		}
		res.Err = err.Error()
		if dl.Attempt-1 < len(d.cfg.Backoff) {
			res.Retry = d.cfg.Backoff[dl.Attempt-1]
		}
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if serr := d.db.SettleDelivery(sctx, dl, res); serr != nil {
		d.log.Warn("settle webhook delivery failed; it will be tried again", "delivery_id", dl.ID, "err", serr)
		return
	}
	switch {
	case err == nil:
		d.log.Debug("webhook delivered", "delivery_id", dl.ID, "webhook_id", dl.WebhookID, "job_id", dl.JobID, "attempt", dl.Attempt)
		if d.Delivered != nil {
			d.Delivered(time.Since(dl.CreatedAt))
		}
	case res.Retry > 0:
		d.log.Info("webhook delivery failed; will retry", "delivery_id", dl.ID, "webhook_id", dl.WebhookID, "attempt", dl.Attempt, "retry_in", res.Retry, "err", err)
	default:
		d.log.Warn("webhook delivery failed; giving up", "delivery_id", dl.ID, "webhook_id", dl.WebhookID, "attempt", dl.Attempt, "err", err)
	}
}

// payload is a delivery's body.
type payload struct {
	Type      string          `json:"type"`
	Timestamp string          `json:"timestamp"`
	Data      json.RawMessage `json:"data"`
}

// send POSTs the delivery once; a 2xx is success, anything else an error.
func (d *Deliverer) send(ctx context.Context, dl db.Delivery) (int, error) {
	job, err := d.db.JobByID(ctx, dl.JobID)
	if err != nil {
		return 0, fmt.Errorf("read job: %w", err)
	}
	data, err := d.encode(job)
	if err != nil {
		return 0, fmt.Errorf("encode job: %w", err)
	}
	body, err := json.Marshal(payload{Type: dl.Event, Timestamp: dl.CreatedAt.UTC().Format(time.RFC3339), Data: data})
	if err != nil {
		return 0, fmt.Errorf("encode payload: %w", err)
	}
	ts := time.Now().Unix()
	sig, err := Sign(dl.Secret, dl.ID, ts, body)
	if err != nil {
		return 0, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, dl.URL, bytes.NewReader(body))
	if err != nil {
		return 0, fmt.Errorf("request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "ScrapeThis-Webhooks/1")
	req.Header.Set("webhook-id", dl.ID)
	req.Header.Set("webhook-timestamp", strconv.FormatInt(ts, 10))
	req.Header.Set("webhook-signature", sig)
	resp, err := d.client.Do(req)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return 0, fmt.Errorf("timed out after %s", d.cfg.Timeout)
		}
		if errors.Is(err, ErrPrivateAddress) {
			return 0, ErrPrivateAddress
		}
		return 0, fmt.Errorf("request failed: %w", unwrapURL(err))
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.StatusCode, fmt.Errorf("status %d", resp.StatusCode)
	}
	return resp.StatusCode, nil
}

// unwrapURL drops url.Error's method and URL (the URL is the user's, shown
// beside the log already).
func unwrapURL(err error) error {
	var ue interface{ Unwrap() error }
	if errors.As(err, &ue) {
		if inner := ue.Unwrap(); inner != nil {
			return inner
		}
	}
	return err
}
