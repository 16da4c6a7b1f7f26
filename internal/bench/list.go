package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/scrapethis/scrapethis"
	"github.com/scrapethis/scrapethis/db"
)

// listLatency: GET /api/v1/jobs?limit=50, plain and with a status filter,
// for a user with listUser jobs in a table of listTotal, all final (no
// pending or running rows, which the worker's reconciler and reaper would
// pick up). Rows are seeded by db.SeedFinalJobs, with created_at spread
// over a year. The baseline is the store's own query
// (db.Jobs) called in this process: the rest is HTTP, auth and JSON.
func (b *Benchmarker) listLatency(ctx context.Context) error {
	seedStart := time.Now()
	userID, key, spiderID, err := b.seedJobs(ctx)
	if err != nil {
		return err
	}
	b.say("   seeded %d job rows (%d the listed user's) in %s", b.sz.ListRows, b.sz.ListUserRows, time.Since(seedStart).Round(time.Millisecond))

	auth := "Bearer " + key
	variants := []struct {
		name   string
		query  string
		filter scrapethis.JobFilter
	}{
		{"list jobs limit=50", "?limit=50", scrapethis.JobFilter{UserID: userID, Limit: 50}},
		{"list jobs status=error limit=50", "?status=error&limit=50", scrapethis.JobFilter{UserID: userID, Status: scrapethis.StatusError, Limit: 50}},
		{"list jobs spider_id limit=50", "?spider_id=" + spiderID + "&limit=50", scrapethis.JobFilter{UserID: userID, SpiderID: spiderID, Limit: 50}},
	}
	for _, v := range variants {
		get := func() error {
			st, body, err := b.client.doKey(ctx, auth, http.MethodGet, "/api/v1/jobs"+v.query, nil)
			if err != nil {
				return err
			}
			if st != http.StatusOK {
				return fmt.Errorf("GET /api/v1/jobs%s: %d %s", v.query, st, body)
			}
			return nil
		}
		// Warm up, and check that a page is full.
		st, body, err := b.client.doKey(ctx, auth, http.MethodGet, "/api/v1/jobs"+v.query, nil)
		if err != nil || st != http.StatusOK {
			return fmt.Errorf("GET /api/v1/jobs%s: %d %s %v", v.query, st, body, err)
		}
		var page []json.RawMessage
		if err := json.Unmarshal(body, &page); err != nil || len(page) != 50 {
			return fmt.Errorf("GET /api/v1/jobs%s: want 50 jobs, got %d (%v)", v.query, len(page), err)
		}
		for range 50 {
			if err := get(); err != nil {
				return err
			}
		}
		// HTTP and the raw query alternate, so both see the same machine.
		var lat, raw, ping []time.Duration
		deadline := time.Now().Add(30 * time.Second)
		for i := 0; i < b.sz.ListRequests && time.Now().Before(deadline); i++ {
			t := time.Now()
			if err := get(); err != nil {
				return err
			}
			lat = append(lat, time.Since(t))
			t = time.Now()
			if _, err := b.store.Jobs(ctx, v.filter); err != nil {
				return err
			}
			raw = append(raw, time.Since(t))
			t = time.Now()
			if err := b.store.RoundTrip(ctx); err != nil {
				return err
			}
			ping = append(ping, time.Since(t))
		}
		note := fmt.Sprintf("%d sequential requests, %d rows in the table, %d the user's; machine noise: SELECT 1 round trip p50 %.2f ms, p99 %.2f ms",
			len(lat), b.sz.ListRows, b.sz.ListUserRows, ms(percentile(ping, 50)), ms(percentile(ping, 99)))
		b.res.add(v.name+" p50", ms(percentile(lat, 50)), "ms", ptr(ms(percentile(raw, 50))), false, nil, note)
		b.res.add(v.name+" p99", ms(percentile(lat, 99)), "ms", ptr(ms(percentile(raw, 99))), false, atMost(5), "")
	}
	return b.consoleLatency(ctx, userID, key)
}

// seedJobs makes the listed user (with a key and a spider) and nine
// others, and inserts listTotal final jobs, listUser of them the listed
// user's: 90% finished, 7% error, 3% cancelled.
func (b *Benchmarker) seedJobs(ctx context.Context) (userID, key, spiderID string, err error) {
	var others, otherSpiders []string
	for i := range 10 {
		u, err := b.store.EnsureUser(ctx, fmt.Sprintf("list-%d@scrapethis.local", i))
		if err != nil {
			return "", "", "", err
		}
		sp, err := b.store.CreateSpider(ctx, u.ID, "list", "noop.sh")
		if err != nil {
			return "", "", "", err
		}
		if i == 0 {
			userID, spiderID = u.ID, sp.ID
			if _, key, err = b.store.CreateAPIKey(ctx, u.ID, "list"); err != nil {
				return "", "", "", err
			}
			continue
		}
		others = append(others, u.ID)
		otherSpiders = append(otherSpiders, sp.ID)
	}
	// The listed user's rows land every ListRows/ListUserRows-th row, so
	// its jobs are spread through the table as in a shared server.
	if err := b.store.SeedFinalJobs(ctx, db.FinalJobs{
		Total: b.sz.ListRows, UserRows: b.sz.ListUserRows, UserID: userID, SpiderID: spiderID,
		Others: others, OtherSpiders: otherSpiders,
	}); err != nil {
		return "", "", "", err
	}
	// What autovacuum would do after this burst and the item runs before
	// it, and the write-back of the burst, done now rather than during the
	// measurement.
	if err := b.store.Settle(ctx); err != nil {
		return "", "", "", err
	}
	n, err := b.store.UserJobCount(ctx, userID)
	if err != nil {
		return "", "", "", err
	}
	if n != b.sz.ListUserRows {
		return "", "", "", fmt.Errorf("seeded %d jobs for the listed user, want %d", n, b.sz.ListUserRows)
	}
	return userID, key, spiderID, nil
}
