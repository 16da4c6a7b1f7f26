package schedule_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/scrapethis/scrapethis"
	"github.com/scrapethis/scrapethis/api"
	"github.com/scrapethis/scrapethis/cronspec"
	"github.com/scrapethis/scrapethis/db"
	"github.com/scrapethis/scrapethis/internal/testenv"
	"github.com/scrapethis/scrapethis/schedule"
	"github.com/scrapethis/scrapethis/tasks"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// bundle is one test's database, Redis queue, user and spider. Tests that
// use Redis share its index and must not run in parallel.
type bundle struct {
	t      *testing.T
	dsn    string
	db     *db.DB
	sql    *sqlx.DB // fixtures and checks
	queuer *tasks.Queuer
	log    *slog.Logger
	user   scrapethis.User
	spider scrapethis.Spider
}

// setupDB is a bundle without Redis, for tests that may run in parallel.
func setupDB(t *testing.T) *bundle {
	t.Helper()
	dsn := testenv.DatabaseDSN(t)
	store := openDB(t, dsn)
	b := &bundle{t: t, dsn: dsn, db: store, sql: testenv.SQL(t, dsn), log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if testing.Verbose() {
		b.log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	ctx := context.Background()
	var err error
	if b.user, err = store.EnsureUser(ctx, "sched@example.com"); err != nil {
		t.Fatal(err)
	}
	if b.spider, err = store.CreateSpider(ctx, b.user.ID, "quotes", "quotes.py"); err != nil {
		t.Fatal(err)
	}
	return b
}

// setup is a bundle with the package's Redis database, flushed.
func setup(t *testing.T) *bundle {
	t.Helper()
	b := setupDB(t)
	b.queuer = tasks.NewQueuer(testenv.Redis(t, testenv.RedisSchedule))
	return b
}

// openDB opens another pool on the test database, as another process would.
func openDB(t *testing.T, dsn string) *db.DB {
	t.Helper()
	store, err := db.Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	return store
}

// scheduler returns a scheduler of its own, on its own connection pool.
func (b *bundle) scheduler() *schedule.Scheduler {
	cfg := schedule.DefaultConfig()
	return schedule.New(cfg, openDB(b.t, b.dsn), b.queuer, b.log, nil)
}

// run runs s until the returned stop is called (or the test ends).
func (b *bundle) run(s *schedule.Scheduler) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				b.t.Errorf("scheduler: %v", err)
			}
		})
	}
	b.t.Cleanup(stop)
	return stop
}

// create makes a schedule directly in the store, due first at next (or
// at the spec's next fire time when next is zero).
func (b *bundle) create(spec string, next time.Time, mod func(*scrapethis.Schedule)) scrapethis.Schedule {
	b.t.Helper()
	p, err := cronspec.Parse(spec, "UTC")
	if err != nil {
		b.t.Fatal(err)
	}
	if next.IsZero() {
		next = p.Next(time.Now())
	}
	sc := scrapethis.Schedule{UserID: b.user.ID, SpiderID: b.spider.ID, Cron: spec, Timezone: "UTC", Enabled: true, NextRunAt: &next}
	if mod != nil {
		mod(&sc)
	}
	sc, err = b.db.CreateSchedule(context.Background(), sc)
	if err != nil {
		b.t.Fatal(err)
	}
	return sc
}

type firedJob struct {
	ID           string    `db:"id"`
	Status       string    `db:"status"`
	ScheduledFor time.Time `db:"scheduled_for"`
	CreatedAt    time.Time `db:"created_at"`
}

// jobs returns the schedule's jobs in fire-time order.
func (b *bundle) jobs(scheduleID string) []firedJob {
	b.t.Helper()
	var out []firedJob
	err := b.sql.Select(&out, `SELECT id, status, scheduled_for, created_at FROM jobs WHERE schedule_id = $1 ORDER BY scheduled_for`, scheduleID)
	if err != nil {
		b.t.Fatal(err)
	}
	return out
}

// waitFor polls cond until it holds, failing the test after a generous
// deadline: these tests assert what happens, not how fast.
func (b *bundle) waitFor(what string, cond func() bool) {
	b.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			b.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (b *bundle) dbNow() time.Time {
	b.t.Helper()
	var now time.Time
	if err := b.sql.Get(&now, `SELECT now()`); err != nil {
		b.t.Fatal(err)
	}
	return now
}

// setDue makes a schedule due now, as if its next_run_at had just passed.
func (b *bundle) setDue(id string, at time.Time) {
	b.t.Helper()
	if _, err := b.sql.Exec(`UPDATE schedules SET next_run_at = $2 WHERE id = $1`, id, at); err != nil {
		b.t.Fatal(err)
	}
}

func (b *bundle) schedule(id string) scrapethis.Schedule {
	b.t.Helper()
	sc, err := b.db.Schedule(context.Background(), b.user.ID, id)
	if err != nil {
		b.t.Fatal(err)
	}
	return sc
}

// TestExactlyOnceWithManySchedulers runs three schedulers at once on
// schedules firing every second, and checks that every fire time of
// every schedule started exactly one job, each committed and enqueued.
func TestExactlyOnceWithManySchedulers(t *testing.T) {
	b := setup(t)
	var ids []string
	for range 10 {
		ids = append(ids, b.create("@every 1s", time.Time{}, nil).ID)
	}
	anchor := map[string]time.Time{}
	for _, id := range ids {
		anchor[id] = *b.schedule(id).NextRunAt
	}
	var stops []func()
	for range 3 {
		stops = append(stops, b.run(b.scheduler()))
	}
	b.waitFor("5 fire times of every schedule", func() bool {
		for _, id := range ids {
			if len(b.jobs(id)) < 5 {
				return false
			}
		}
		return true
	})
	for _, stop := range stops {
		stop()
	}

	var dups []struct {
		ScheduleID   string    `db:"schedule_id"`
		ScheduledFor time.Time `db:"scheduled_for"`
		N            int       `db:"n"`
	}
	if err := b.sql.Select(&dups, `SELECT schedule_id, scheduled_for, count(*) AS n FROM jobs
		GROUP BY schedule_id, scheduled_for HAVING count(*) > 1`); err != nil {
		t.Fatal(err)
	}
	if len(dups) > 0 {
		t.Fatalf("fire times with more than one job: %+v", dups)
	}
	for _, id := range ids {
		for _, j := range b.jobs(id) {
			// Fire times keep the schedule's phase: anchor + k seconds.
			if d := j.ScheduledFor.Sub(anchor[id]); d < 0 || d%time.Second != 0 {
				t.Errorf("schedule %s fired at %s, off its 1s grid from %s", id, j.ScheduledFor, anchor[id])
			}
			if j.Status != string(scrapethis.StatusPending) {
				t.Errorf("job %s is %s", j.ID, j.Status)
			}
			if _, err := b.queuer.Inspector().GetTaskInfo(tasks.Queue, j.ID); err != nil {
				t.Errorf("job %s was not enqueued: %v", j.ID, err)
			}
		}
		sc := b.schedule(id)
		last := b.jobs(id)
		if sc.LastRunAt == nil || !sc.LastRunAt.Equal(last[len(last)-1].ScheduledFor) {
			t.Errorf("last_run_at %v, want the last fire time %s", sc.LastRunAt, last[len(last)-1].ScheduledFor)
		}
	}
}

// TestRestartDoesNotBurst stops the scheduler for several fire times and
// starts a new one: it fires once for the latest missed fire time, then
// keeps going; it never replays the missed ones.
func TestRestartDoesNotBurst(t *testing.T) {
	b := setup(t)
	sc := b.create("@every 1s", time.Time{}, nil)
	stop := b.run(b.scheduler())
	b.waitFor("two fires", func() bool { return len(b.jobs(sc.ID)) >= 2 })
	stop()
	before := b.jobs(sc.ID)
	lastBefore := before[len(before)-1].ScheduledFor

	time.Sleep(4 * time.Second) // at least three fire times pass with no scheduler
	restart := b.dbNow()
	b.run(b.scheduler())
	b.waitFor("fires after the restart", func() bool {
		js := b.jobs(sc.ID)
		return js[len(js)-1].ScheduledFor.After(restart.Add(time.Second))
	})
	missed := 0
	for _, j := range b.jobs(sc.ID) {
		if j.ScheduledFor.After(lastBefore) && j.ScheduledFor.Before(restart) {
			missed++
		}
	}
	if missed > 1 {
		t.Fatalf("%d jobs for fire times missed while down (%s to %s): a burst", missed, lastBefore, restart)
	}
}

// TestMissedFiresPolicy is the same policy, tick by tick: a schedule due
// long ago fires once, for its latest fire time, and is next due after now.
func TestMissedFiresPolicy(t *testing.T) {
	b := setup(t)
	now := b.dbNow()
	every := b.create("@every 1s", now.Add(-time.Hour).Truncate(time.Second), nil)
	minutely := b.create("* * * * *", now.Add(-72*time.Hour).Truncate(time.Minute), nil)
	s := b.scheduler()
	if _, err := s.Tick(context.Background()); err != nil {
		t.Fatal(err)
	}
	after := b.dbNow()
	for _, sc := range []scrapethis.Schedule{every, minutely} {
		js := b.jobs(sc.ID)
		if len(js) != 1 {
			t.Fatalf("%s: %d jobs after a long outage, want 1", sc.Cron, len(js))
		}
		fire := js[0].ScheduledFor
		step := time.Second
		if sc.Cron == "* * * * *" {
			step = time.Minute
		}
		if fire.After(after) || !fire.Add(step).After(now) {
			t.Errorf("%s: fired for %s, want the latest fire time before %s", sc.Cron, fire, now)
		}
		got := b.schedule(sc.ID)
		if got.NextRunAt == nil || !got.NextRunAt.Equal(fire.Add(step)) {
			t.Errorf("%s: next_run_at %v, want %s", sc.Cron, got.NextRunAt, fire.Add(step))
		}
	}
	// The next tick has nothing more to do for them.
	if _, err := s.Tick(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := len(b.jobs(minutely.ID)); n != 1 {
		t.Fatalf("minutely: %d jobs after a second tick", n)
	}
}

// TestNoOverlap skips fires while the schedule's previous job is pending
// or running, and fires again once it has ended.
func TestNoOverlap(t *testing.T) {
	b := setup(t)
	ctx := context.Background()
	sc := b.create("@every 1s", b.dbNow().Add(-time.Second).Truncate(time.Second), func(sc *scrapethis.Schedule) { sc.NoOverlap = true })
	other := b.create("@every 1s", b.dbNow().Add(-time.Second).Truncate(time.Second), nil)
	s := b.scheduler()
	if _, err := s.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(b.jobs(sc.ID)); n != 1 {
		t.Fatalf("%d jobs after the first fire", n)
	}
	for range 3 {
		b.setDue(sc.ID, b.dbNow().Add(-time.Second).Truncate(time.Second))
		b.setDue(other.ID, b.dbNow().Add(-time.Second).Truncate(time.Second))
		time.Sleep(1100 * time.Millisecond) // a new fire time each round
		if _, err := s.Tick(ctx); err != nil {
			t.Fatal(err)
		}
		got := b.schedule(sc.ID)
		if got.NextRunAt == nil || !got.NextRunAt.After(b.dbNow().Add(-time.Second)) {
			t.Fatalf("a skipped fire did not advance next_run_at: %v", got.NextRunAt)
		}
	}
	if n := len(b.jobs(sc.ID)); n != 1 {
		t.Fatalf("no_overlap: %d jobs while the first is pending, want 1", n)
	}
	if n := len(b.jobs(other.ID)); n < 3 {
		t.Fatalf("without no_overlap: %d jobs, want one per fire", n)
	}
	// The job ends: the next fire starts a new one.
	if _, err := b.db.CancelJob(ctx, b.user.ID, b.jobs(sc.ID)[0].ID); err != nil {
		t.Fatal(err)
	}
	b.setDue(sc.ID, b.dbNow().Add(-time.Second).Truncate(time.Second))
	if _, err := s.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(b.jobs(sc.ID)); n != 2 {
		t.Fatalf("no_overlap after the job ended: %d jobs, want 2", n)
	}
}

// TestDuplicateFireTimeIsBackstopped shows the UNIQUE (schedule_id,
// scheduled_for) backstop: a schedule made due again for a fire time it
// already fired starts no second job, and still moves on.
func TestDuplicateFireTimeIsBackstopped(t *testing.T) {
	b := setup(t)
	at := b.dbNow().Add(-time.Second).Truncate(time.Second)
	sc := b.create("@every 1h", at, nil)
	s := b.scheduler()
	if _, err := s.Tick(context.Background()); err != nil {
		t.Fatal(err)
	}
	b.setDue(sc.ID, at)
	if _, err := s.Tick(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := len(b.jobs(sc.ID)); n != 1 {
		t.Fatalf("%d jobs for one fire time", n)
	}
	if got := b.schedule(sc.ID); got.NextRunAt == nil || !got.NextRunAt.Equal(at.Add(time.Hour)) {
		t.Fatalf("next_run_at %v, want %s", got.NextRunAt, at.Add(time.Hour))
	}
}

// TestBadStoredSpecStops covers a row whose spec no longer parses (written
// around the API): it stops firing instead of failing every tick, and the
// others still fire.
func TestBadStoredSpecStops(t *testing.T) {
	b := setup(t)
	at := b.dbNow().Add(-time.Second).Truncate(time.Second)
	bad := b.create("@every 1s", at, nil)
	good := b.create("@every 1s", at, nil)
	if _, err := b.sql.Exec(`UPDATE schedules SET timezone = 'Mars/Olympus' WHERE id = $1`, bad.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := b.scheduler().Tick(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := len(b.jobs(bad.ID)); n != 0 {
		t.Fatalf("bad spec: %d jobs", n)
	}
	if got := b.schedule(bad.ID); got.NextRunAt != nil {
		t.Fatalf("bad spec: next_run_at %v, want null", got.NextRunAt)
	}
	if n := len(b.jobs(good.ID)); n != 1 {
		t.Fatalf("good spec: %d jobs", n)
	}
}

// apiClient drives the HTTP API as a client would.
type apiClient struct {
	t   *testing.T
	url string
	key string
}

func (b *bundle) api() *apiClient {
	b.t.Helper()
	srv := httptest.NewServer(api.New(b.db, b.queuer, b.log).Handler())
	b.t.Cleanup(srv.Close)
	_, key, err := b.db.CreateAPIKey(context.Background(), b.user.ID, "test")
	if err != nil {
		b.t.Fatal(err)
	}
	return &apiClient{t: b.t, url: srv.URL, key: key}
}

func (c *apiClient) do(method, path, body string, want int, out any) {
	c.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, c.url+path, rd)
	req.Header.Set("Authorization", "Bearer "+c.key)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer res.Body.Close()
	data, _ := io.ReadAll(res.Body)
	if res.StatusCode != want {
		c.t.Fatalf("%s %s: %d %s, want %d", method, path, res.StatusCode, data, want)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			c.t.Fatalf("%s %s: decode %s: %v", method, path, data, err)
		}
	}
}

type apiJob struct {
	ID         string          `json:"id"`
	ScheduleID *string         `json:"schedule_id"`
	Arguments  json.RawMessage `json:"arguments"`
	Status     string          `json:"status"`
}

// TestScheduleChangesTakeEffect drives a running scheduler through the
// API: jobs appear in GET /api/v1/jobs with their schedule_id; disabling
// stops them at once; enabling, changing the spec or the arguments take
// effect within seconds; deleting stops them and keeps the jobs.
func TestScheduleChangesTakeEffect(t *testing.T) {
	b := setup(t)
	c := b.api()
	b.run(b.scheduler())
	b.run(b.scheduler())

	var sc struct {
		ID        string  `json:"id"`
		NextRunAt *string `json:"next_run_at"`
	}
	c.do("POST", "/api/v1/schedules", `{"spider_name":"quotes","cron":"@every 1s","arguments":{"page":1}}`, 201, &sc)
	listJobs := func() []apiJob {
		var js []apiJob
		c.do("GET", "/api/v1/jobs?limit=1000", "", 200, &js)
		return js
	}
	b.waitFor("a scheduled job in GET /api/v1/jobs", func() bool { return len(listJobs()) >= 1 })
	j := listJobs()[0]
	if j.ScheduleID == nil || *j.ScheduleID != sc.ID || !sameJSON(string(j.Arguments), `{"page":1}`) {
		t.Fatalf("scheduled job %+v (arguments %s), want schedule_id %s", j, j.Arguments, sc.ID)
	}

	// Disable: once PATCH has answered, no fire starts another job.
	c.do("PATCH", "/api/v1/schedules/"+sc.ID, `{"enabled":false}`, 200, &sc)
	if sc.NextRunAt != nil {
		t.Fatalf("disabled schedule has next_run_at %s", *sc.NextRunAt)
	}
	n := len(b.jobs(sc.ID))
	time.Sleep(2500 * time.Millisecond)
	if m := len(b.jobs(sc.ID)); m != n {
		t.Fatalf("disabled schedule started %d more jobs", m-n)
	}

	// Enable with new arguments: jobs resume and carry them.
	c.do("PATCH", "/api/v1/schedules/"+sc.ID, `{"enabled":true,"arguments":{"page":2}}`, 200, &sc)
	b.waitFor("jobs with the new arguments", func() bool {
		for _, j := range listJobs() {
			if sameJSON(string(j.Arguments), `{"page":2}`) {
				return true
			}
		}
		return false
	})

	// A spec far off: no more jobs. Back to every second: jobs resume.
	c.do("PATCH", "/api/v1/schedules/"+sc.ID, `{"cron":"0 0 1 1 *","timezone":"Pacific/Kiritimati"}`, 200, &sc)
	n = len(b.jobs(sc.ID))
	time.Sleep(2500 * time.Millisecond)
	if m := len(b.jobs(sc.ID)); m != n {
		t.Fatalf("schedule changed to yearly started %d more jobs", m-n)
	}
	c.do("PATCH", "/api/v1/schedules/"+sc.ID, `{"cron":"@every 2s"}`, 200, &sc)
	b.waitFor("jobs after changing the spec back", func() bool { return len(b.jobs(sc.ID)) >= n+2 })
	js := b.jobs(sc.ID)
	if d := js[len(js)-1].ScheduledFor.Sub(js[len(js)-2].ScheduledFor); d%(2*time.Second) != 0 {
		t.Errorf("@every 2s fired %s apart", d)
	}

	// Delete: no more jobs, and the jobs stay with schedule_id null.
	c.do("DELETE", "/api/v1/schedules/"+sc.ID, "", 200, nil)
	before := listJobs()
	time.Sleep(2500 * time.Millisecond)
	after := listJobs()
	if len(after) != len(before) {
		t.Fatalf("deleted schedule started %d more jobs", len(after)-len(before))
	}
	for _, j := range after {
		if j.ScheduleID != nil {
			t.Fatalf("job %s of a deleted schedule keeps schedule_id %s", j.ID, *j.ScheduleID)
		}
	}
	c.do("GET", "/api/v1/schedules/"+sc.ID, "", 404, nil)
}

// TestSchedulesSurviveRestart: schedules live in Postgres, so a new
// scheduler (a restart) fires those made before it.
func TestSchedulesSurviveRestart(t *testing.T) {
	b := setup(t)
	sc := b.create("@every 1s", time.Time{}, nil)
	stop := b.run(b.scheduler())
	b.waitFor("a fire", func() bool { return len(b.jobs(sc.ID)) >= 1 })
	stop()
	n := len(b.jobs(sc.ID))
	b.run(b.scheduler())
	b.waitFor("fires after the restart", func() bool { return len(b.jobs(sc.ID)) >= n+2 })
}

// sameJSON reports whether two JSON texts hold the same value (jsonb
// reformats what it stores).
func sameJSON(a, b string) bool {
	var x, y any
	if json.Unmarshal([]byte(a), &x) != nil || json.Unmarshal([]byte(b), &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}

// TestBacklogDrains: more due schedules than one batch are all fired in
// one go, batch after batch.
func TestBacklogDrains(t *testing.T) {
	b := setup(t)
	at := b.dbNow().Add(-time.Minute).Truncate(time.Second)
	var ids []string
	for range 35 {
		ids = append(ids, b.create("@every 1h", at, nil).ID)
	}
	cfg := schedule.DefaultConfig()
	cfg.Batch = 10
	b.run(schedule.New(cfg, openDB(t, b.dsn), b.queuer, b.log, nil))
	b.waitFor("a job for every due schedule", func() bool {
		var n int
		if err := b.sql.Get(&n, `SELECT count(DISTINCT schedule_id) FROM jobs`); err != nil {
			t.Fatal(err)
		}
		return n == len(ids)
	})
}

// TestSurvivesLostConnections: the scheduler's connections are cut (as in
// a Postgres restart); it keeps running and fires again.
func TestSurvivesLostConnections(t *testing.T) {
	b := setup(t)
	sc := b.create("@every 1s", time.Time{}, nil)
	u, err := url.Parse(b.dsn)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("application_name", "scheduler-under-test")
	u.RawQuery = q.Encode()
	b.run(schedule.New(schedule.DefaultConfig(), openDB(t, u.String()), b.queuer, b.log, nil))
	b.waitFor("a fire", func() bool { return len(b.jobs(sc.ID)) >= 1 })
	for range 2 {
		b.waitFor("the scheduler's connection", func() bool {
			var killed int
			if err := b.sql.Get(&killed, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
				WHERE datname = current_database() AND application_name = 'scheduler-under-test'`); err != nil {
				t.Fatal(err)
			}
			return killed > 0
		})
		n := len(b.jobs(sc.ID))
		b.waitFor("fires after the connections were cut", func() bool { return len(b.jobs(sc.ID)) >= n+2 })
	}
}
