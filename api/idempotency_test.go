package api_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/scrapethis/scrapethis/api"
	"github.com/scrapethis/scrapethis/internal/testenv"
)

// post sends POST /api/v1/jobs with an Idempotency-Key to base.
func postKeyed(t *testing.T, base, key, idem, body string) response {
	t.Helper()
	req, err := http.NewRequest("POST", base+"/api/v1/jobs", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", idem)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Error(err)
		return response{}
	}
	defer res.Body.Close()
	data, _ := io.ReadAll(res.Body)
	checkOpenAPI(t, req, res.StatusCode, res.Header, data)
	return response{status: res.StatusCode, header: res.Header, body: data}
}

func jobID(t *testing.T, r response) string {
	t.Helper()
	var out struct {
		JobID  string `json:"jobId"`
		Status string `json:"status"`
	}
	r.json(t, &out)
	if out.JobID == "" || out.Status != "pending" {
		t.Fatalf("create answered %s", r.body)
	}
	return out.JobID
}

func TestIdempotencyKey(t *testing.T) {
	t.Parallel()
	b := setup(t)
	uid, key := b.user("a@example.com")
	_, other := b.user("b@example.com")
	b.spider(key, "s", "s.py")
	b.spider(other, "s", "s.py")
	body := `{"spider_name":"s","arguments":{"page":1}}`
	first := b.mustStatus(postKeyed(t, b.url, key, "k-1", body), 200)
	id := jobID(t, first)
	if first.header.Get("Idempotent-Replayed") != "" {
		t.Fatal("a first answer marked replayed")
	}
	again := b.mustStatus(postKeyed(t, b.url, key, "k-1", body), 200)
	if jobID(t, again) != id || again.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("retry answered %s (%v), want job %s", again.body, again.header, id)
	}
	// Another body with the same key, even one the API refuses, is 422.
	for _, other := range []string{`{"spider_name":"s","arguments":{"page":2}}`, `{"spider_name":"nope"}`, `{}`, `not json`} {
		if msg := b.mustStatus(postKeyed(t, b.url, key, "k-1", other), 422).errorMessage(t); !strings.Contains(msg, "Idempotency-Key") {
			t.Errorf("%s: %s", other, msg)
		}
	}
	// Keys are per user; another key is another job; no key, a job each time.
	if jobID(t, b.mustStatus(postKeyed(t, b.url, other, "k-1", body), 200)) == id {
		t.Fatal("another user's key answered the first user's job")
	}
	if jobID(t, b.mustStatus(postKeyed(t, b.url, key, "k-2", body), 200)) == id {
		t.Fatal("another key replayed")
	}
	for _, bad := range []string{"", strings.Repeat("x", 256), "has space", "tab\there", "é"} {
		b.mustStatus(postKeyed(t, b.url, key, bad, body), 400)
	}
	// A refused request stores no key: the same key may be used again.
	b.mustStatus(postKeyed(t, b.url, key, "k-3", `{"spider_name":"nope"}`), 404)
	b.mustStatus(postKeyed(t, b.url, key, "k-3", body), 200)
	var jobs, keys int
	b.sql.QueryRow(`SELECT count(*) FROM jobs WHERE user_id = $1`, uid).Scan(&jobs)
	b.sql.QueryRow(`SELECT count(*) FROM idempotency_keys WHERE user_id = $1`, uid).Scan(&keys)
	if jobs != 3 || keys != 3 {
		t.Fatalf("%d jobs and %d keys, want 3 and 3", jobs, keys)
	}
	// After 24 hours the key is free again.
	b.sql.MustExec(`UPDATE idempotency_keys SET created_at = now() - interval '24 hours 1 second' WHERE key = 'k-1' AND user_id = $1`, uid)
	if jobID(t, b.mustStatus(postKeyed(t, b.url, key, "k-1", body), 200)) == id {
		t.Fatal("an expired key replayed")
	}
	if n, err := b.db.DeleteExpiredIdempotencyKeys(context.Background(), 100); err != nil || n != 0 {
		t.Fatalf("expired keys deleted: %d %v", n, err)
	}
	b.sql.MustExec(`UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE user_id = $1`, uid)
	if n, err := b.db.DeleteExpiredIdempotencyKeys(context.Background(), 100); err != nil || n != 3 {
		t.Fatalf("expired keys deleted: %d %v", n, err)
	}
}

// Racing retries, on one API process and on two: one job, and every
// answer is that job or 409.
func TestIdempotencyKeyRace(t *testing.T) {
	t.Parallel()
	b := setup(t)
	uid, key := b.user("a@example.com")
	b.spider(key, "s", "s.py")
	second := testenv.Serve(t, api.New(b.db, b.queuer, slog.New(slog.NewTextHandler(io.Discard, nil))))
	body := `{"spider_name":"s"}`
	for round := 0; round < 5; round++ {
		idem := "race-" + string(rune('a'+round))
		var wg sync.WaitGroup
		answers := make([]response, 40)
		for i := range answers {
			base := b.url
			if i%2 == 1 {
				base = second
			}
			wg.Go(func() { answers[i] = postKeyed(t, base, key, idem, body) })
		}
		wg.Wait()
		ids := map[string]bool{}
		for _, a := range answers {
			switch a.status {
			case 200:
				ids[jobID(t, a)] = true
			case 409:
			default:
				t.Fatalf("racing answer %d %s", a.status, a.body)
			}
		}
		var n int
		b.sql.QueryRow(`SELECT count(*) FROM jobs j JOIN idempotency_keys k ON k.job_id = j.id WHERE k.key = $1`, idem).Scan(&n)
		if len(ids) != 1 || n != 1 {
			t.Fatalf("round %d: answered jobs %v, %d rows", round, ids, n)
		}
	}
	var jobs int
	b.sql.QueryRow(`SELECT count(*) FROM jobs WHERE user_id = $1`, uid).Scan(&jobs)
	if jobs != 5 {
		t.Fatalf("%d jobs for 5 keys", jobs)
	}
}

// While the first request is in flight (held here by a lock on the key
// table), a retry on the same process answers 409 and one on another
// process waits, then one of the two creates the job and the other
// answers the same job.
func TestIdempotencyKeyInFlight(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, key := b.user("a@example.com")
	b.spider(key, "s", "s.py")
	second := testenv.Serve(t, api.New(b.db, b.queuer, slog.New(slog.NewTextHandler(io.Discard, nil))))
	body := `{"spider_name":"s"}`
	tx := b.sql.MustBegin()
	defer tx.Rollback()
	tx.MustExec(`LOCK TABLE idempotency_keys IN EXCLUSIVE MODE`)
	var first, other response
	var wg sync.WaitGroup
	wg.Go(func() { first = postKeyed(t, b.url, key, "slow", body) })
	waitBlocked(t, b, 1)
	wg.Go(func() { other = postKeyed(t, second, key, "slow", body) })
	waitBlocked(t, b, 2)
	b.mustStatus(postKeyed(t, b.url, key, "slow", body), 409)
	tx.Rollback()
	wg.Wait()
	// Which of the two gets the lock first once it is free is Postgres'
	// choice: one creates the job, the other replays it.
	id := jobID(t, b.mustStatus(first, 200))
	replays := first.header.Get("Idempotent-Replayed") + other.header.Get("Idempotent-Replayed")
	if jobID(t, b.mustStatus(other, 200)) != id || replays != "true" {
		t.Fatalf("the other process answered %s, want job %s, and one replay (%q)", other.body, id, replays)
	}
}

// waitBlocked waits until n statements of the test's database wait on a lock.
func waitBlocked(t *testing.T, b *bundle, n int) {
	t.Helper()
	testenv.WaitFor(t, 10*time.Second, "requests blocked on the key table", func() bool {
		var blocked int
		b.sql.QueryRow(`SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&blocked)
		return blocked >= n
	})
}
