package webhooks_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/scrapethis/scrapethis"
	"github.com/scrapethis/scrapethis/api"
	"github.com/scrapethis/scrapethis/db"
	"github.com/scrapethis/scrapethis/internal/testenv"
	"github.com/scrapethis/scrapethis/webhooks"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// The reference vector of the Standard Webhooks specification.
func TestSignStandardWebhooksVector(t *testing.T) {
	t.Parallel()
	const secret, id, body = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek", `{"test": 2432232314}`
	const want = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
	got, err := webhooks.Sign(secret, id, 1614265330, []byte(body))
	if err != nil || got != want {
		t.Fatalf("signature %q %v, want %q", got, err, want)
	}
	if !webhooks.Verify(secret, id, 1614265330, []byte(body), "v1,bm90IGl0 "+want) {
		t.Fatal("a header holding the signature among others does not verify")
	}
	if webhooks.Verify(secret, id, 1614265331, []byte(body), want) || webhooks.Verify(secret, id, 1614265330, []byte(body+" "), want) {
		t.Fatal("a changed timestamp or body verifies")
	}
	s, err := webhooks.NewSecret()
	if err != nil || !strings.HasPrefix(s, "whsec_") || len(s) != len("whsec_")+32 {
		t.Fatalf("secret %q %v", s, err)
	}
}

func TestCheckURL(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, u := range []string{"http://127.0.0.1/x", "http://localhost:8080/", "http://10.1.2.3/", "http://[::1]/", "http://169.254.169.254/latest/meta-data",
		"http://[fe80::1]/", "http://0.0.0.0/", "http://100.64.0.1/", "http://[::ffff:127.0.0.1]/", "http://192.168.1.1/", "http://172.16.0.1/"} {
		if err := webhooks.CheckURL(ctx, u, false); !errors.Is(err, webhooks.ErrPrivateAddress) {
			t.Errorf("%s: %v, want refused as private", u, err)
		}
		if err := webhooks.CheckURL(ctx, u, true); err != nil {
			t.Errorf("%s allowed: %v", u, err)
		}
	}
	for _, u := range []string{"ftp://example.com/", "/relative", "http://", "http://user:pw@93.184.216.34/", "javascript:alert(1)"} {
		if err := webhooks.CheckURL(ctx, u, true); err == nil {
			t.Errorf("%s accepted", u)
		}
	}
	if err := webhooks.CheckURL(ctx, "https://93.184.216.34/hook", false); err != nil {
		t.Errorf("a public address refused: %v", err)
	}
}

// bundle is a database with a user, a spider and a webhook to a receiver.
type bundle struct {
	db     *db.DB
	sql    *sqlx.DB
	userID string
	spider string
}

func setup(t *testing.T) *bundle {
	t.Helper()
	dsn := testenv.DatabaseDSN(t)
	store := testenv.Open(t, dsn)
	ctx := context.Background()
	u, err := store.EnsureUser(ctx, "a@example.com")
	if err != nil {
		t.Fatal(err)
	}
	sp, err := store.CreateSpider(ctx, u.ID, "s", "s.py")
	if err != nil {
		t.Fatal(err)
	}
	return &bundle{db: store, sql: testenv.SQL(t, dsn), userID: u.ID, spider: sp.ID}
}

func (b *bundle) hook(t *testing.T, url string, events ...string) db.Webhook {
	t.Helper()
	secret, err := webhooks.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	if len(events) == 0 {
		events = []string{"*"}
	}
	h, err := b.db.CreateWebhook(context.Background(), b.userID, url, events, secret)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// finish runs a job to the status through the worker's own calls.
func (b *bundle) finish(t *testing.T, status scrapethis.Status) string {
	t.Helper()
	ctx := context.Background()
	j, err := b.db.CreateJob(ctx, scrapethis.NewJob{UserID: b.userID, SpiderID: b.spider})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, err := b.db.StartJob(ctx, j.ID, "w1"); err != nil || !ok {
		t.Fatalf("start: %v %v", ok, err)
	}
	if ok, err := b.db.FinishJob(ctx, j.ID, "w1", status, nil); err != nil || !ok {
		t.Fatalf("finish: %v %v", ok, err)
	}
	return j.ID
}

// run runs a deliverer until the test ends or stop is called.
func run(t *testing.T, store *db.DB, cfg webhooks.Config) (stop func()) {
	t.Helper()
	d := webhooks.New(cfg, store, api.EncodeJob, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := d.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("deliverer: %v", err)
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}

// fast retries in tests; the real schedule is DefaultBackoff.
func fast() webhooks.Config {
	return webhooks.Config{Poll: 10 * time.Millisecond, Backoff: []time.Duration{10 * time.Millisecond, 10 * time.Millisecond, 10 * time.Millisecond},
		Timeout: 2 * time.Second, AllowPrivate: true}
}

// receiver records what it is sent and answers with answer(n), n from 1.
type receiver struct {
	mu   sync.Mutex
	reqs []received
}

type received struct {
	header http.Header
	body   []byte
}

func (rc *receiver) handler(answer func(n int) int) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		rc.reqs = append(rc.reqs, received{r.Header.Clone(), body})
		n := len(rc.reqs)
		rc.mu.Unlock()
		w.WriteHeader(answer(n))
	})
}

func (rc *receiver) count() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.reqs)
}

func (rc *receiver) get(i int) received {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.reqs[i]
}

// verify checks a request's Standard Webhooks headers and returns its body.
func verify(t *testing.T, secret string, r received) map[string]any {
	t.Helper()
	ts, err := strconv.ParseInt(r.header.Get("webhook-timestamp"), 10, 64)
	if err != nil || time.Since(time.Unix(ts, 0)).Abs() > time.Minute {
		t.Fatalf("webhook-timestamp %q", r.header.Get("webhook-timestamp"))
	}
	if !webhooks.Verify(secret, r.header.Get("webhook-id"), ts, r.body, r.header.Get("webhook-signature")) {
		t.Fatalf("signature %q does not verify", r.header.Get("webhook-signature"))
	}
	var out map[string]any
	if err := json.Unmarshal(r.body, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func attempts(t *testing.T, b *bundle, hookID string) []db.WebhookAttempt {
	t.Helper()
	a, err := b.db.WebhookAttempts(context.Background(), hookID, 100)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// A receiver that fails twice, then succeeds: three signed attempts of
// one message, logged newest first.
func TestDeliveryRetriedUntil2xx(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var rc receiver
	srv := httptest.NewServer(rc.handler(func(n int) int {
		if n <= 2 {
			return 500
		}
		return 204
	}))
	t.Cleanup(srv.Close)
	hook := b.hook(t, srv.URL+"/hook")
	errHook := b.hook(t, srv.URL+"/errors-only", "job.error")
	jobID := b.finish(t, scrapethis.StatusFinished)
	run(t, b.db, fast())
	testenv.WaitFor(t, 20*time.Second, "three attempts", func() bool { return len(attempts(t, b, hook.ID)) == 3 })
	if rc.count() != 3 {
		t.Fatalf("%d requests, want 3", rc.count())
	}
	id := rc.get(0).header.Get("webhook-id")
	for i := range 3 {
		r := rc.get(i)
		if r.header.Get("webhook-id") != id || r.header.Get("Content-Type") != "application/json" {
			t.Fatalf("attempt %d headers %v", i+1, r.header)
		}
		msg := verify(t, hook.Secret, r)
		data, _ := msg["data"].(map[string]any)
		if msg["type"] != "job.finished" || data["id"] != jobID || data["status"] != "finished" || msg["timestamp"] == nil {
			t.Fatalf("attempt %d body %s", i+1, r.body)
		}
		if _, ok := data["spider"].(map[string]any); !ok {
			t.Fatalf("data is not the API's job: %s", r.body)
		}
	}
	log := attempts(t, b, hook.ID)
	for i, want := range []int{204, 500, 500} {
		a := log[i]
		if !a.ResponseStatus.Valid || int(a.ResponseStatus.Int32) != want || a.Attempt != 3-i || a.JobID != jobID || a.Event != "job.finished" || a.DeliveryID != id {
			t.Fatalf("log row %d: %+v", i, a)
		}
		if (want == 204) == a.Error.Valid {
			t.Fatalf("log row %d error %v", i, a.Error)
		}
	}
	// The delivery is settled: no more attempts, and none for a webhook
	// that asked only for job.error.
	var open int
	b.sql.QueryRow(`SELECT count(*) FROM webhook_deliveries WHERE next_attempt_at IS NOT NULL OR delivered_at IS NULL`).Scan(&open)
	if open != 0 || len(attempts(t, b, errHook.ID)) != 0 {
		t.Fatalf("%d open deliveries; %d attempts to the job.error hook", open, len(attempts(t, b, errHook.ID)))
	}
}

// Each way a job ends writes its event: finished, error, cancelled while
// pending, cancelled while running, and reaped when its worker is lost.
func TestEventsOfEveryEnd(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	b.hook(t, "http://192.0.2.1/all")
	b.hook(t, "http://192.0.2.1/cancel", "job.cancelled")
	finished := b.finish(t, scrapethis.StatusFinished)
	failed := b.finish(t, scrapethis.StatusError)
	pending, _ := b.db.CreateJob(ctx, scrapethis.NewJob{UserID: b.userID, SpiderID: b.spider})
	if _, err := b.db.CancelJob(ctx, b.userID, pending.ID); err != nil {
		t.Fatal(err)
	}
	running, _ := b.db.CreateJob(ctx, scrapethis.NewJob{UserID: b.userID, SpiderID: b.spider})
	b.db.StartJob(ctx, running.ID, "w1")
	if _, err := b.db.CancelJob(ctx, b.userID, running.ID); err != nil { // requested: still running
		t.Fatal(err)
	}
	if st, err := b.db.HandBackJob(ctx, running.ID, "w1"); err != nil || st != scrapethis.StatusCancelled {
		t.Fatalf("hand back: %s %v", st, err)
	}
	lost, _ := b.db.CreateJob(ctx, scrapethis.NewJob{UserID: b.userID, SpiderID: b.spider})
	b.db.StartJob(ctx, lost.ID, "dead-worker")
	if reaped, err := b.db.ReapLostJobs(ctx, time.Second); err != nil || len(reaped) != 1 {
		t.Fatalf("reap: %v %v", reaped, err)
	}
	// A job handed back to pending is not final: no event.
	again, _ := b.db.CreateJob(ctx, scrapethis.NewJob{UserID: b.userID, SpiderID: b.spider})
	b.db.StartJob(ctx, again.ID, "w1")
	b.db.HandBackJob(ctx, again.ID, "w1")
	var rows []struct {
		Job   string `db:"job_id"`
		Event string `db:"event"`
		URL   string `db:"url"`
	}
	if err := b.sql.Select(&rows, `SELECT d.job_id, d.event, h.url FROM webhook_deliveries d JOIN webhooks h ON h.id = d.webhook_id`); err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, r := range rows {
		got[r.Job+" "+r.Event+" "+r.URL] = true
	}
	want := []string{
		finished + " job.finished http://192.0.2.1/all",
		failed + " job.error http://192.0.2.1/all",
		pending.ID + " job.cancelled http://192.0.2.1/all", pending.ID + " job.cancelled http://192.0.2.1/cancel",
		running.ID + " job.cancelled http://192.0.2.1/all", running.ID + " job.cancelled http://192.0.2.1/cancel",
		lost.ID + " job.error http://192.0.2.1/all",
	}
	for _, w := range want {
		if !got[w] {
			t.Errorf("missing delivery %s", w)
		}
	}
	if len(rows) != len(want) {
		t.Errorf("%d deliveries, want %d: %v", len(rows), len(want), got)
	}
	// Cancelling again, finishing again: nothing more.
	b.db.CancelJob(ctx, b.userID, pending.ID)
	b.db.FinishJob(ctx, finished, "w1", scrapethis.StatusError, nil)
	var n int
	b.sql.QueryRow(`SELECT count(*) FROM webhook_deliveries`).Scan(&n)
	if n != len(want) {
		t.Fatalf("%d deliveries after repeats", n)
	}
}

// A receiver that is down while its deliverer is stopped and another
// started (a platform restart): the delivery waits in Postgres and arrives
// once the receiver is back; one claimed by a deliverer that died arrives
// when its lease ends.
func TestDeliverySurvivesRestarts(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // down
	hook := b.hook(t, "http://"+addr+"/hook")
	first := b.finish(t, scrapethis.StatusFinished)
	cfg := fast()
	cfg.Backoff = []time.Duration{50 * time.Millisecond, 50 * time.Millisecond, 50 * time.Millisecond, 50 * time.Millisecond, time.Hour}
	stop := run(t, b.db, cfg)
	testenv.WaitFor(t, 20*time.Second, "a failed attempt", func() bool { return len(attempts(t, b, hook.ID)) >= 1 })
	stop() // the platform goes down
	if a := attempts(t, b, hook.ID); a[0].ResponseStatus.Valid || !strings.Contains(a[0].Error.String, "refused") {
		t.Fatalf("attempt against a closed port: %+v", a[0])
	}
	// A deliverer claims the second job's delivery and dies before sending.
	second := b.finish(t, scrapethis.StatusError)
	b.sql.MustExec(`UPDATE webhook_deliveries SET next_attempt_at = now() WHERE job_id = $1`, first)
	claimed, err := b.db.ClaimDeliveries(context.Background(), 10, 2*time.Second)
	if err != nil || len(claimed) != 2 {
		t.Fatalf("claimed %d: %v", len(claimed), err)
	}
	// The receiver comes back on its address, and the platform restarts.
	var rc receiver
	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("the receiver's port was taken meanwhile: %v", err)
	}
	srv := &http.Server{Handler: rc.handler(func(int) int { return 200 })}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	run(t, b.db, cfg)
	testenv.WaitFor(t, 30*time.Second, "both deliveries", func() bool { return rc.count() == 2 })
	jobs := map[string]bool{}
	for i := range 2 {
		data := verify(t, hook.Secret, rc.get(i))["data"].(map[string]any)
		jobs[data["id"].(string)] = true
	}
	if !jobs[first] || !jobs[second] {
		t.Fatalf("delivered %v, want %s and %s", jobs, first, second)
	}
}

// Delivery refuses private targets when they are not allowed (whatever
// the URL was when it was stored), does not follow redirects, and gives
// up on a receiver that does not answer within the timeout.
func TestDeliveryGuards(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var private, target, slow receiver
	privSrv := httptest.NewServer(private.handler(func(int) int { return 200 }))
	t.Cleanup(privSrv.Close)
	targetSrv := httptest.NewServer(target.handler(func(int) int { return 200 }))
	t.Cleanup(targetSrv.Close)
	redirect := httptest.NewServer(http.RedirectHandler(targetSrv.URL, http.StatusFound))
	t.Cleanup(redirect.Close)
	release := make(chan struct{})
	slowSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		slow.handler(func(int) int { return 200 }).ServeHTTP(w, r)
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() { close(release); slowSrv.Close() })

	// No private addresses: the loopback receiver is never reached.
	pHook := b.hook(t, privSrv.URL+"/x")
	b.finish(t, scrapethis.StatusFinished)
	cfg := fast()
	cfg.AllowPrivate = false
	cfg.Backoff = []time.Duration{}
	stop := run(t, b.db, cfg)
	testenv.WaitFor(t, 20*time.Second, "the refused attempt", func() bool { return len(attempts(t, b, pHook.ID)) == 1 })
	stop()
	if a := attempts(t, b, pHook.ID)[0]; private.count() != 0 || !strings.Contains(a.Error.String, "private") {
		t.Fatalf("private target: %d requests, attempt %+v", private.count(), a)
	}
	b.sql.MustExec(`DELETE FROM webhooks`)

	rHook := b.hook(t, redirect.URL+"/x")
	sHook := b.hook(t, slowSrv.URL+"/x")
	b.finish(t, scrapethis.StatusFinished)
	cfg = fast()
	cfg.Backoff = []time.Duration{}
	cfg.Timeout = 300 * time.Millisecond
	run(t, b.db, cfg)
	testenv.WaitFor(t, 20*time.Second, "both attempts", func() bool {
		return len(attempts(t, b, rHook.ID)) == 1 && len(attempts(t, b, sHook.ID)) == 1
	})
	if a := attempts(t, b, rHook.ID)[0]; target.count() != 0 || a.ResponseStatus.Int32 != 302 || !a.Error.Valid {
		t.Fatalf("redirect: %d requests to its target, attempt %+v", target.count(), a)
	}
	if a := attempts(t, b, sHook.ID)[0]; slow.count() != 1 || a.ResponseStatus.Valid || !strings.Contains(a.Error.String, "timed out") {
		t.Fatalf("slow receiver: %d requests, attempt %+v", slow.count(), a)
	}
	// Given up (no retries configured): nothing is due any more.
	var due int
	b.sql.QueryRow(`SELECT count(*) FROM webhook_deliveries WHERE next_attempt_at IS NOT NULL`).Scan(&due)
	if due != 0 {
		t.Fatalf("%d deliveries still due", due)
	}
}

// A new delivery wakes a deliverer at once: with an hour between polls,
// the event still arrives.
func TestDeliveryWokenByNotify(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var rc receiver
	srv := httptest.NewServer(rc.handler(func(int) int { return 200 }))
	t.Cleanup(srv.Close)
	b.hook(t, srv.URL+"/hook")
	cfg := fast()
	cfg.Poll = time.Hour
	run(t, b.db, cfg)
	testenv.WaitFor(t, 20*time.Second, "the deliverer to listen", func() bool {
		var n int
		b.sql.QueryRow(`SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%scrapethis_webhook_outbox%'`).Scan(&n)
		return n == 1
	})
	id := b.finish(t, scrapethis.StatusError)
	testenv.WaitFor(t, 20*time.Second, "the delivery", func() bool { return rc.count() == 1 })
	if msg := verify(t, secretOf(t, b), rc.get(0)); msg["type"] != "job.error" || msg["data"].(map[string]any)["id"] != id {
		t.Fatalf("delivery %v", msg)
	}
}

// secretOf returns the secret of the only webhook.
func secretOf(t *testing.T, b *bundle) string {
	t.Helper()
	var secret string
	if err := b.sql.QueryRow(`SELECT secret FROM webhooks`).Scan(&secret); err != nil {
		t.Fatal(err)
	}
	return secret
}
