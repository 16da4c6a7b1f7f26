package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/lib/pq"

	"github.com/scrapethis/scrapethis"
)

// listLatency: GET /api/v1/jobs?limit=50, plain and with a status filter,
// for a user with listUser jobs in a table of listTotal, all final (no
// pending or running rows, which the worker's reconciler and reaper would
// pick up). Rows are seeded with INSERT ... SELECT generate_series, with
// created_at spread over a year. The baseline is the store's own query
// (db.Jobs) called in this process: the rest is HTTP, auth and JSON.
func (b *bench) listLatency(ctx context.Context) error {
	seedStart := time.Now()
	userID, key, spiderID, err := b.seedJobs(ctx)
	if err != nil {
		return err
	}
	b.say("   seeded %d job rows (%d the listed user's) in %s", b.sz.listTotal, b.sz.listUser, time.Since(seedStart).Round(time.Millisecond))

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
		for i := 0; i < b.sz.listN && time.Now().Before(deadline); i++ {
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
			if _, err := b.sql.ExecContext(ctx, `SELECT 1`); err != nil {
				return err
			}
			ping = append(ping, time.Since(t))
		}
		note := fmt.Sprintf("%d sequential requests, %d rows in the table, %d the user's; machine noise: SELECT 1 round trip p50 %.2f ms, p99 %.2f ms",
			len(lat), b.sz.listTotal, b.sz.listUser, ms(percentile(ping, 50)), ms(percentile(ping, 99)))
		b.res.add(v.name+" p50", ms(percentile(lat, 50)), "ms", ptr(ms(percentile(raw, 50))), false, nil, note)
		b.res.add(v.name+" p99", ms(percentile(lat, 99)), "ms", ptr(ms(percentile(raw, 99))), false, atMost(5), "")
	}
	return nil
}

// seedJobs makes the listed user (with a key and a spider) and nine
// others, and inserts listTotal final jobs, listUser of them the listed
// user's: 90% finished, 7% error, 3% cancelled.
func (b *bench) seedJobs(ctx context.Context) (userID, key, spiderID string, err error) {
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
	// The listed user's rows land every listTotal/listUser-th row, so its
	// jobs are spread through the table as in a shared server.
	every := max(b.sz.listTotal/max(b.sz.listUser, 1), 1)
	const chunk = 100_000
	for lo := 1; lo <= b.sz.listTotal; lo += chunk {
		hi := min(lo+chunk-1, b.sz.listTotal)
		_, err := b.sql.ExecContext(ctx, `
			INSERT INTO jobs (id, user_id, spider_id, status, error, items_scraped, attempts, worker_id, created_at, started_at, finished_at)
			SELECT gen_random_uuid(), u, s,
				CASE WHEN g % 100 < 90 THEN 'finished' WHEN g % 100 < 97 THEN 'error' ELSE 'cancelled' END,
				CASE WHEN g % 100 < 90 THEN NULL WHEN g % 100 < 97 THEN 'exit status 1' ELSE 'cancelled' END,
				g % 500, 1, 'bench-seed', c, c + interval '1 second', c + interval '1 minute'
			FROM (
				SELECT g,
					CASE WHEN g % $3 = 0 AND g / $3 <= $4 THEN $5::uuid ELSE ($6::uuid[])[1 + g % 9] END AS u,
					CASE WHEN g % $3 = 0 AND g / $3 <= $4 THEN $7::uuid ELSE ($8::uuid[])[1 + g % 9] END AS s,
					now() - interval '1 hour' - random() * interval '365 days' AS c
				FROM generate_series($1::int, $2::int) g
			) x`, lo, hi, every, b.sz.listUser, userID, pq.Array(others), spiderID, pq.Array(otherSpiders))
		if err != nil {
			return "", "", "", fmt.Errorf("seed jobs: %w", err)
		}
	}
	// What autovacuum would do after this burst and the item runs before
	// it, and the write-back of the burst, done now rather than during the
	// measurement.
	for _, q := range []string{`VACUUM ANALYZE`, `CHECKPOINT`} {
		if _, err := b.sql.ExecContext(ctx, q); err != nil {
			return "", "", "", fmt.Errorf("%s: %w", q, err)
		}
	}
	var n int
	if err := b.sql.GetContext(ctx, &n, `SELECT count(*) FROM jobs WHERE user_id = $1`, userID); err != nil {
		return "", "", "", err
	}
	if n != b.sz.listUser {
		return "", "", "", fmt.Errorf("seeded %d jobs for the listed user, want %d", n, b.sz.listUser)
	}
	return userID, key, spiderID, nil
}
