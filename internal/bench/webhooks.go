package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/scrapethis/scrapethis/webhooks"
)

// webhookLag: the completion run again with a webhook on every job (a
// receiver in this process that verifies each signature), measuring the
// lag from a job's final status (its outbox row, written in the same
// statement) to the receiver's 200 under that load, and completion
// throughput against the completion row of this run (no webhook).
func (b *Benchmarker) webhookLag(ctx context.Context) error {
	var mu sync.Mutex
	received := map[string]time.Time{}
	var bad int
	var secret string
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		at := time.Now()
		body, _ := io.ReadAll(r.Body)
		ts, _ := strconv.ParseInt(r.Header.Get("webhook-timestamp"), 10, 64)
		id := r.Header.Get("webhook-id")
		mu.Lock()
		ok := webhooks.Verify(secret, id, ts, body, r.Header.Get("webhook-signature"))
		if !ok {
			bad++
		} else if _, dup := received[id]; !dup {
			received[id] = at
		}
		mu.Unlock()
	}), ReadHeaderTimeout: 5 * time.Second}
	var wg sync.WaitGroup
	wg.Go(func() { srv.Serve(ln) })
	defer func() { srv.Close(); wg.Wait() }()

	body, _ := json.Marshal(map[string]any{"url": "http://" + ln.Addr().String() + "/hook", "events": []string{"*"}})
	st, out, err := b.client.do(ctx, http.MethodPost, "/api/v1/webhooks", body)
	if err != nil || st != http.StatusCreated {
		return fmt.Errorf("create webhook: %d %s %v", st, out, err)
	}
	var hook struct{ ID, Secret string }
	if err := json.Unmarshal(out, &hook); err != nil {
		return err
	}
	mu.Lock()
	secret = hook.Secret
	mu.Unlock()
	defer b.client.do(context.WithoutCancel(ctx), http.MethodDelete, "/api/v1/webhooks/"+hook.ID, nil)

	n := b.sz.CompletionJobs
	limit := time.Duration(n)*20*time.Millisecond + 10*time.Second
	start := time.Now()
	jobBody := b.jobBody("noop", nil)
	p := hammer(ctx, 8, n, limit, func(ctx context.Context) error { _, err := b.post(ctx, jobBody); return err })
	if p.err != nil {
		return fmt.Errorf("POST: %d errors, first: %w", p.errs, p.err)
	}
	for {
		open, err := b.store.OpenJobCount(ctx)
		if err != nil {
			return err
		}
		if open == 0 {
			break
		}
		if time.Since(start) > limit || ctx.Err() != nil {
			return fmt.Errorf("%d of %d jobs not final after %s", open, n, limit)
		}
		time.Sleep(5 * time.Millisecond)
	}
	rate := float64(p.ok) / time.Since(start).Seconds()
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		have := len(received)
		mu.Unlock()
		if have >= p.ok {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%d of %d webhook deliveries received after 30 s", have, p.ok)
		}
		time.Sleep(5 * time.Millisecond)
	}
	final, err := b.store.DeliveryTimes(ctx, hook.ID)
	if err != nil {
		return err
	}
	mu.Lock()
	lags := make([]time.Duration, 0, len(received))
	for id, at := range received {
		if t, ok := final[id]; ok {
			lags = append(lags, at.Sub(t))
		}
	}
	badSigs := bad
	mu.Unlock()
	note := fmt.Sprintf("%d deliveries of %d jobs, %d bad signatures; the deliverer is woken by NOTIFY and polls every second", len(lags), p.ok, badSigs)
	b.res.add("webhooks: delivery lag p50 (final status -> receiver)", ms(percentile(lags, 50)), "ms", nil, false, nil, note)
	b.res.add("webhooks: delivery lag p99 (final status -> receiver)", ms(percentile(lags, 99)), "ms", nil, false, atMost(2000), note)
	var base *float64
	if b.completionRate > 0 {
		base = ptr(b.completionRate)
	}
	b.res.add("webhooks: no-op jobs/s with a webhook on every job", rate, "jobs/s", base, true, nil,
		"baseline: the completion row of this run, without a webhook")
	return nil
}
