package schedule_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
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

// stubClock is a clock the test holds: it stands still until the test
// moves it. The schedulers of a test share it.
type stubClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *stubClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d and returns the new time.
func (c *stubClock) Advance(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	return c.now
}

// AdvanceTo moves the clock forward to t; a t already passed leaves it.
func (c *stubClock) AdvanceTo(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t.After(c.now) {
		c.now = t
	}
}

// countingMetrics counts what a scheduler reports.
type countingMetrics struct {
	scheduled, skipped, enqueueFailed atomic.Int64
}

func (m *countingMetrics) JobsScheduled(n int) { m.scheduled.Add(int64(n)) }
func (m *countingMetrics) FiresSkipped(n int)  { m.skipped.Add(int64(n)) }
func (m *countingMetrics) EnqueueFailed()      { m.enqueueFailed.Add(1) }

// bundle is one test's database, queue, clock, user and spider. Every
// test has a database of its own; they share the package's Redis index,
// where every task is named by its job's unique id, so they may run in
// parallel.
type bundle struct {
	t       *testing.T
	dsn     string
	db      *db.DB
	sql     *sqlx.DB // fixtures and checks
	queuer  *tasks.Queuer
	log     *slog.Logger
	clock   *stubClock
	metrics *countingMetrics
	user    scrapethis.User
	spider  scrapethis.Spider
}

// setupDB is a bundle without Redis. Its clock starts at the current time
// half-way between two whole seconds, so that the fire times of
// "@every 1s" fall strictly between two readings a second apart.
func setupDB(t *testing.T) *bundle {
	t.Helper()
	dsn := testenv.DatabaseDSN(t)
	store := openDB(t, dsn)
	b := &bundle{
		t: t, dsn: dsn, db: store, sql: testenv.SQL(t, dsn),
		log:     slog.New(slog.NewTextHandler(io.Discard, nil)),
		clock:   &stubClock{now: time.Now().UTC().Truncate(time.Second).Add(500 * time.Millisecond)},
		metrics: &countingMetrics{},
	}
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

// setup is a bundle with the package's Redis database.
func setup(t *testing.T) *bundle {
	t.Helper()
	b := setupDB(t)
	b.queuer = tasks.NewQueuer(testenv.RedisClient(t))
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

// config is the default configuration on the bundle's stub clock.
func (b *bundle) config() schedule.Config {
	cfg := schedule.DefaultConfig()
	cfg.Clock = b.clock.Now
	return cfg
}

// scheduler returns a scheduler of its own, on its own connection pool
// and the bundle's clock.
func (b *bundle) scheduler() *schedule.Scheduler {
	return b.schedulerWith(b.config(), b.dsn)
}

func (b *bundle) schedulerWith(cfg schedule.Config, dsn string) *schedule.Scheduler {
	return schedule.New(cfg, openDB(b.t, dsn), b.queuer, b.log, b.metrics)
}

// tick runs one tick of s and returns how many due schedules it handled.
func (b *bundle) tick(s *schedule.Scheduler) int {
	b.t.Helper()
	n, err := s.Tick(context.Background())
	if err != nil {
		b.t.Fatalf("tick: %v", err)
	}
	return n
}

// run runs s's real loop until the returned stop is called (or the test
// ends); stop waits for Run to return.
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
// at the spec's first fire time after the clock's time when next is zero).
func (b *bundle) create(spec string, next time.Time, mod func(*scrapethis.Schedule)) scrapethis.Schedule {
	b.t.Helper()
	p, err := cronspec.Parse(spec, "UTC")
	if err != nil {
		b.t.Fatal(err)
	}
	if next.IsZero() {
		next = p.Next(b.clock.Now())
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
}

// jobs returns the schedule's jobs in fire-time order.
func (b *bundle) jobs(scheduleID string) []firedJob {
	b.t.Helper()
	var out []firedJob
	err := b.sql.Select(&out, `SELECT id, status, scheduled_for FROM jobs WHERE schedule_id = $1 ORDER BY scheduled_for`, scheduleID)
	if err != nil {
		b.t.Fatal(err)
	}
	return out
}

// fireTimes returns the fire times of the schedule's jobs, in order.
func (b *bundle) fireTimes(scheduleID string) []time.Time {
	b.t.Helper()
	var out []time.Time
	for _, j := range b.jobs(scheduleID) {
		out = append(out, j.ScheduledFor.UTC())
	}
	return out
}

// wantFireTimes fails the test unless the schedule's jobs are exactly one
// for each of want.
func (b *bundle) wantFireTimes(scheduleID string, want ...time.Time) {
	b.t.Helper()
	got := b.fireTimes(scheduleID)
	if len(got) != len(want) {
		b.t.Fatalf("schedule %s: jobs for %v, want %v", scheduleID, got, want)
	}
	for i := range want {
		if !got[i].Equal(want[i]) {
			b.t.Fatalf("schedule %s: jobs for %v, want %v", scheduleID, got, want)
		}
	}
}

// waitFor polls cond until it holds, failing the test after a generous
// deadline: these tests assert what happens, not how fast.
func (b *bundle) waitFor(what string, cond func() bool) {
	b.t.Helper()
	deadline := time.NewTimer(30 * time.Second)
	defer deadline.Stop()
	poll := time.NewTicker(20 * time.Millisecond)
	defer poll.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			b.t.Fatalf("timed out waiting for %s", what)
		case <-poll.C:
		}
	}
}

// setDue sets a schedule's next_run_at, as if it were due then.
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

// wantNext fails the test unless the schedule is next due at want.
func (b *bundle) wantNext(id string, want time.Time) {
	b.t.Helper()
	if got := b.schedule(id).NextRunAt; got == nil || !got.Equal(want) {
		b.t.Fatalf("schedule %s: next_run_at %v, want %s", id, got, want)
	}
}

// TestExactlyOnceWithManySchedulers has three schedulers, each on its own
// pool and in small batches, tick at once at each of five fire times of
// ten schedules: between them they handle every due schedule exactly once
// per fire time, and every job is committed and enqueued.
func TestExactlyOnceWithManySchedulers(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var ids []string
	for range 10 {
		ids = append(ids, b.create("@every 1s", time.Time{}, nil).ID)
	}
	anchor := *b.schedule(ids[0]).NextRunAt
	cfg := b.config()
	cfg.Batch = 3
	var schedulers []*schedule.Scheduler
	for range 3 {
		schedulers = append(schedulers, b.schedulerWith(cfg, b.dsn))
	}
	var want []time.Time
	for k := range 5 {
		b.clock.Advance(time.Second)
		want = append(want, anchor.Add(time.Duration(k)*time.Second))
		var handled atomic.Int64
		var wg sync.WaitGroup
		for _, s := range schedulers {
			wg.Go(func() {
				// Twice each: a scheduler ticking again finds nothing left.
				for range 2 {
					n, err := s.Tick(context.Background())
					if err != nil {
						t.Errorf("tick: %v", err)
					}
					handled.Add(int64(n))
				}
			})
		}
		wg.Wait()
		if n := handled.Load(); n != int64(len(ids)) {
			t.Fatalf("fire time %d: the schedulers handled %d due schedules, want each of %d once", k, n, len(ids))
		}
	}

	for _, id := range ids {
		b.wantFireTimes(id, want...)
		for _, j := range b.jobs(id) {
			if j.Status != string(scrapethis.StatusPending) {
				t.Errorf("job %s is %s", j.ID, j.Status)
			}
			if _, err := b.queuer.Inspector().GetTaskInfo(tasks.Queue, j.ID); err != nil {
				t.Errorf("job %s was not enqueued: %v", j.ID, err)
			}
		}
		sc := b.schedule(id)
		if sc.LastRunAt == nil || !sc.LastRunAt.Equal(want[len(want)-1]) {
			t.Errorf("last_run_at %v, want the last fire time %s", sc.LastRunAt, want[len(want)-1])
		}
		b.wantNext(id, want[len(want)-1].Add(time.Second))
	}
	if got, want := b.metrics.scheduled.Load(), int64(5*len(ids)); got != want {
		t.Errorf("JobsScheduled counted %d, want %d", got, want)
	}
	if n := b.metrics.enqueueFailed.Load(); n != 0 {
		t.Errorf("EnqueueFailed counted %d", n)
	}
}

// TestRestartDoesNotBurst stops the scheduler for several fire times and
// starts a new one: it fires once for the latest missed fire time, then
// keeps going; it never replays the missed ones.
func TestRestartDoesNotBurst(t *testing.T) {
	t.Parallel()
	b := setup(t)
	sc := b.create("@every 1s", time.Time{}, nil)
	first := *sc.NextRunAt
	s := b.scheduler()
	for range 2 {
		b.clock.Advance(time.Second)
		if n := b.tick(s); n != 1 {
			t.Fatalf("a tick at a fire time handled %d schedules", n)
		}
	}
	b.wantFireTimes(sc.ID, first, first.Add(time.Second))

	// Four fire times pass with no scheduler; a new one (a restart, on a
	// pool of its own) fires once, for the latest.
	b.clock.Advance(4 * time.Second)
	restarted := b.scheduler()
	if n := b.tick(restarted); n != 1 {
		t.Fatalf("the first tick after the restart handled %d schedules", n)
	}
	if n := b.tick(restarted); n != 0 {
		t.Fatalf("a second tick at the same time handled %d schedules", n)
	}
	b.wantFireTimes(sc.ID, first, first.Add(time.Second), first.Add(5*time.Second))
	b.wantNext(sc.ID, first.Add(6*time.Second))

	// And it keeps the schedule's phase from there.
	b.clock.Advance(time.Second)
	b.tick(restarted)
	b.wantFireTimes(sc.ID, first, first.Add(time.Second), first.Add(5*time.Second), first.Add(6*time.Second))
}

// TestMissedFiresPolicy: a schedule due long ago fires once, for its
// latest fire time not after now, and is next due at the one after.
func TestMissedFiresPolicy(t *testing.T) {
	t.Parallel()
	b := setup(t)
	now := b.clock.Now()
	every := b.create("@every 1s", now.Add(-time.Hour).Truncate(time.Second), nil)
	minutely := b.create("* * * * *", now.Add(-72*time.Hour).Truncate(time.Minute), nil)
	s := b.scheduler()
	if n := b.tick(s); n != 2 {
		t.Fatalf("the tick handled %d schedules, want 2", n)
	}
	for sc, step := range map[string]time.Duration{every.ID: time.Second, minutely.ID: time.Minute} {
		fire := now.Truncate(step)
		b.wantFireTimes(sc, fire)
		b.wantNext(sc, fire.Add(step))
	}
	// The next tick at the same time has nothing more to do.
	if n := b.tick(s); n != 0 {
		t.Fatalf("a second tick handled %d schedules", n)
	}
}

// TestNoOverlap skips fires while the schedule's previous job is pending
// or running, moving the schedule on each time, and fires again once the
// job has ended.
func TestNoOverlap(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	sc := b.create("@every 1s", time.Time{}, func(sc *scrapethis.Schedule) { sc.NoOverlap = true })
	other := b.create("@every 1s", time.Time{}, nil)
	first := *sc.NextRunAt
	s := b.scheduler()
	for round := range 4 {
		b.clock.Advance(time.Second)
		if n := b.tick(s); n != 2 {
			t.Fatalf("round %d: the tick handled %d schedules, want 2", round, n)
		}
		b.wantNext(sc.ID, first.Add(time.Duration(round+1)*time.Second))
	}
	b.wantFireTimes(sc.ID, first)
	if n := len(b.jobs(other.ID)); n != 4 {
		t.Fatalf("without no_overlap: %d jobs, want one per fire", n)
	}
	if got := b.metrics.skipped.Load(); got != 3 {
		t.Fatalf("FiresSkipped counted %d, want 3", got)
	}

	// The job ends: the next fire starts a new one.
	if _, err := b.db.CancelJob(ctx, b.user.ID, b.jobs(sc.ID)[0].ID); err != nil {
		t.Fatal(err)
	}
	b.clock.Advance(time.Second)
	b.tick(s)
	b.wantFireTimes(sc.ID, first, first.Add(4*time.Second))
}

// TestDuplicateFireTimeIsBackstopped shows the UNIQUE (schedule_id,
// scheduled_for) backstop: a schedule made due again for a fire time it
// already fired starts no second job, and still moves on.
func TestDuplicateFireTimeIsBackstopped(t *testing.T) {
	t.Parallel()
	b := setup(t)
	at := b.clock.Now().Truncate(time.Second)
	sc := b.create("@every 1h", at, nil)
	s := b.scheduler()
	b.tick(s)
	b.setDue(sc.ID, at)
	if n := b.tick(s); n != 1 {
		t.Fatalf("the tick handled %d schedules, want the one made due again", n)
	}
	b.wantFireTimes(sc.ID, at)
	b.wantNext(sc.ID, at.Add(time.Hour))
	if got := b.metrics.scheduled.Load(); got != 1 {
		t.Fatalf("JobsScheduled counted %d, want 1", got)
	}
}

// TestBadStoredSpecStops covers a row whose spec no longer parses (written
// around the API): it stops firing instead of failing every tick, and the
// others still fire.
func TestBadStoredSpecStops(t *testing.T) {
	t.Parallel()
	b := setup(t)
	at := b.clock.Now().Truncate(time.Second)
	bad := b.create("@every 1s", at, nil)
	good := b.create("@every 1s", at, nil)
	if _, err := b.sql.Exec(`UPDATE schedules SET timezone = 'Mars/Olympus' WHERE id = $1`, bad.ID); err != nil {
		t.Fatal(err)
	}
	s := b.scheduler()
	b.tick(s)
	b.wantFireTimes(bad.ID)
	if got := b.schedule(bad.ID); got.NextRunAt != nil {
		t.Fatalf("bad spec: next_run_at %v, want null", got.NextRunAt)
	}
	b.wantFireTimes(good.ID, at)
	b.clock.Advance(time.Second)
	if n := b.tick(s); n != 1 {
		t.Fatalf("the next tick handled %d schedules, want only the good one", n)
	}
}

// TestBacklogDrains: one tick fires more due schedules than one batch,
// batch after batch.
func TestBacklogDrains(t *testing.T) {
	t.Parallel()
	b := setup(t)
	at := b.clock.Now().Add(-time.Minute).Truncate(time.Second)
	var ids []string
	for range 35 {
		ids = append(ids, b.create("@every 1h", at, nil).ID)
	}
	cfg := b.config()
	cfg.Batch = 10
	s := b.schedulerWith(cfg, b.dsn)
	if n := b.tick(s); n != len(ids) {
		t.Fatalf("one tick handled %d of %d due schedules", n, len(ids))
	}
	for _, id := range ids {
		b.wantFireTimes(id, at)
	}
	if n := b.tick(s); n != 0 {
		t.Fatalf("a second tick handled %d schedules", n)
	}
}

// TestTickStopsWithContext: a tick whose context has ended fires nothing
// and says why.
func TestTickStopsWithContext(t *testing.T) {
	t.Parallel()
	b := setup(t)
	sc := b.create("@every 1h", b.clock.Now().Truncate(time.Second), nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	n, err := b.scheduler().Tick(ctx)
	if !errors.Is(err, context.Canceled) || n != 0 {
		t.Fatalf("tick with an ended context: %d, %v; want 0 and context.Canceled", n, err)
	}
	b.wantFireTimes(sc.ID)
}

// apiClient drives the HTTP API as a client would.
type apiClient struct {
	t   *testing.T
	url string
	key string
}

func (b *bundle) api() *apiClient {
	b.t.Helper()
	url := testenv.Serve(b.t, api.New(b.db, b.queuer, b.log))
	_, key, err := b.db.CreateAPIKey(context.Background(), b.user.ID, "test")
	if err != nil {
		b.t.Fatal(err)
	}
	return &apiClient{t: b.t, url: url, key: key}
}

func (c *apiClient) do(method, path, body string, want int, out any) {
	c.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, c.url+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+c.key)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(res.Body)
	if err != nil {
		c.t.Fatalf("%s %s: read body: %v", method, path, err)
	}
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

// TestScheduleChangesTakeEffect drives two schedulers through the API:
// jobs appear in GET /api/v1/jobs with their schedule_id; disabling stops
// them at once; enabling, changing the spec or the arguments take effect
// at the next fire time; deleting stops them and keeps the jobs.
func TestScheduleChangesTakeEffect(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := b.api()
	s1, s2 := b.scheduler(), b.scheduler()
	tick := func() int { return b.tick(s1) + b.tick(s2) }
	// fireNext moves the clock to the schedule's next fire time (the API
	// computed it from the real clock) and ticks.
	var id string
	fireNext := func() int {
		t.Helper()
		next := b.schedule(id).NextRunAt
		if next == nil {
			t.Fatal("the schedule has no next_run_at")
		}
		b.clock.AdvanceTo(*next)
		return tick()
	}
	listJobs := func() []apiJob {
		var js []apiJob
		c.do("GET", "/api/v1/jobs?limit=1000", "", 200, &js)
		return js
	}

	var sc struct {
		ID        string  `json:"id"`
		NextRunAt *string `json:"next_run_at"`
	}
	c.do("POST", "/api/v1/schedules", `{"spider_name":"quotes","cron":"@every 1s","arguments":{"page":1}}`, 201, &sc)
	id = sc.ID
	if n := fireNext(); n != 1 {
		t.Fatalf("the first fire time handled %d schedules", n)
	}
	js := listJobs()
	if len(js) != 1 || js[0].ScheduleID == nil || *js[0].ScheduleID != sc.ID || !sameJSON(string(js[0].Arguments), `{"page":1}`) {
		t.Fatalf("jobs %+v, want one with schedule_id %s and arguments {\"page\":1}", js, sc.ID)
	}

	// Disable: once PATCH has answered, no fire starts another job.
	c.do("PATCH", "/api/v1/schedules/"+sc.ID, `{"enabled":false}`, 200, &sc)
	if sc.NextRunAt != nil {
		t.Fatalf("disabled schedule has next_run_at %s", *sc.NextRunAt)
	}
	b.clock.Advance(10 * time.Second)
	if n := tick(); n != 0 {
		t.Fatalf("a disabled schedule was handled %d times", n)
	}

	// Enable with new arguments: the next fire carries them.
	c.do("PATCH", "/api/v1/schedules/"+sc.ID, `{"enabled":true,"arguments":{"page":2}}`, 200, &sc)
	if n := fireNext(); n != 1 {
		t.Fatalf("the re-enabled schedule was handled %d times", n)
	}
	js = listJobs()
	if len(js) != 2 || !sameJSON(string(js[0].Arguments), `{"page":2}`) {
		t.Fatalf("jobs after enabling with new arguments: %+v", js)
	}

	// A spec far off: no job up to a second before its fire time. Every two seconds: jobs resume, two
	// seconds apart.
	c.do("PATCH", "/api/v1/schedules/"+sc.ID, `{"cron":"0 0 1 1 *","timezone":"Pacific/Kiritimati"}`, 200, &sc)
	b.clock.AdvanceTo(b.schedule(sc.ID).NextRunAt.Add(-time.Second))
	if n := tick(); n != 0 {
		t.Fatalf("a schedule changed to yearly was handled %d times", n)
	}
	c.do("PATCH", "/api/v1/schedules/"+sc.ID, `{"cron":"@every 2s"}`, 200, &sc)
	fireNext()
	b.clock.Advance(2 * time.Second)
	if n := tick(); n != 1 {
		t.Fatalf("@every 2s: the tick two seconds on handled %d schedules", n)
	}
	ft := b.fireTimes(sc.ID)
	if len(ft) != 4 || ft[3].Sub(ft[2]) != 2*time.Second {
		t.Fatalf("fire times %v, want four, the last two 2s apart", ft)
	}

	// Delete: no more jobs, and the jobs stay with schedule_id null.
	c.do("DELETE", "/api/v1/schedules/"+sc.ID, "", 200, nil)
	b.clock.Advance(10 * time.Second)
	if n := tick(); n != 0 {
		t.Fatalf("a deleted schedule was handled %d times", n)
	}
	js = listJobs()
	if len(js) != 4 {
		t.Fatalf("%d jobs after the delete, want the 4 started", len(js))
	}
	for _, j := range js {
		if j.ScheduleID != nil {
			t.Fatalf("job %s of a deleted schedule keeps schedule_id %s", j.ID, *j.ScheduleID)
		}
	}
	c.do("GET", "/api/v1/schedules/"+sc.ID, "", 404, nil)
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

// TestRealClockAndRestart is the one test on real time: schedulers with
// the default clock and interval run their loops on "@every 1s", a second
// one started after the first has stopped (a restart) fires too, and the
// fire times keep the schedule's whole-second grid.
func TestRealClockAndRestart(t *testing.T) {
	t.Parallel()
	b := setup(t)
	spec, err := cronspec.Parse("@every 1s", "UTC")
	if err != nil {
		t.Fatal(err)
	}
	sc := b.create("@every 1s", spec.Next(time.Now()), nil)
	cfg := schedule.DefaultConfig()
	stop := b.run(b.schedulerWith(cfg, b.dsn))
	b.waitFor("a fire", func() bool { return len(b.jobs(sc.ID)) >= 1 })
	stop()
	n := len(b.jobs(sc.ID))
	b.run(b.schedulerWith(cfg, b.dsn))
	b.waitFor("a fire after the restart", func() bool { return len(b.jobs(sc.ID)) > n })
	ft := b.fireTimes(sc.ID)
	for i, at := range ft {
		if !at.Equal(at.Truncate(time.Second)) || i > 0 && !at.After(ft[i-1]) {
			t.Fatalf("fire times %v: not increasing whole seconds", ft)
		}
	}
}

// TestSurvivesLostConnections: the connections of a running scheduler
// are cut (as in a Postgres restart); its loop keeps going and fires at
// the next fire times.
func TestSurvivesLostConnections(t *testing.T) {
	t.Parallel()
	b := setup(t)
	sc := b.create("@every 1s", time.Time{}, nil)
	u, err := url.Parse(b.dsn)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("application_name", "scheduler-under-test")
	u.RawQuery = q.Encode()
	cfg := b.config()
	cfg.Interval = 10 * time.Millisecond
	b.run(b.schedulerWith(cfg, u.String()))
	b.clock.Advance(time.Second)
	b.waitFor("a fire", func() bool { return len(b.jobs(sc.ID)) == 1 })
	for round := range 2 {
		b.waitFor("the scheduler's connection", func() bool {
			var killed int
			if err := b.sql.Get(&killed, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
				WHERE datname = current_database() AND application_name = 'scheduler-under-test'`); err != nil {
				t.Fatal(err)
			}
			return killed > 0
		})
		b.clock.Advance(time.Second)
		b.waitFor("a fire after the connections were cut", func() bool { return len(b.jobs(sc.ID)) == round+2 })
	}
}
