package db_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/scrapethis/scrapethis"
	"github.com/scrapethis/scrapethis/db"
	"github.com/scrapethis/scrapethis/internal/testenv"
)

// Fair share on real Postgres: caps are exact with many starters at once,
// held jobs are let go best first, and a spider at its cap never blocks
// another spider's jobs.

type capBundle struct {
	store *db.DB
	sql   *sqlx.DB
	user  string
}

func setupCaps(t *testing.T, userMax int) *capBundle {
	t.Helper()
	dsn := testenv.DatabaseDSN(t)
	store, err := db.Open(t.Context(), dsn, db.UserMaxRunning(userMax))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	u, err := store.EnsureUser(t.Context(), "caps@example.com")
	if err != nil {
		t.Fatal(err)
	}
	return &capBundle{store: store, sql: testenv.SQL(t, dsn), user: u.ID}
}

func intp(n int) *int { return &n }

func (b *capBundle) spider(t *testing.T, name string, maxRunning *int) string {
	t.Helper()
	s, err := b.store.CreateSpider(t.Context(), b.user, name, name+".py", maxRunning)
	if err != nil {
		t.Fatal(err)
	}
	if (s.MaxRunning == nil) != (maxRunning == nil) || (s.MaxRunning != nil && *s.MaxRunning != *maxRunning) {
		t.Fatalf("spider max_running %v, want %v", s.MaxRunning, maxRunning)
	}
	return s.ID
}

func (b *capBundle) create(t *testing.T, spider string, priority int) scrapethis.Job {
	t.Helper()
	j, err := b.store.CreateJob(t.Context(), scrapethis.NewJob{UserID: b.user, SpiderID: spider, Priority: &priority})
	if err != nil {
		t.Fatal(err)
	}
	if j.Priority != priority {
		t.Fatalf("job priority %d, want %d", j.Priority, priority)
	}
	return j
}

func (b *capBundle) start(t *testing.T, id string) (scrapethis.Job, bool) {
	t.Helper()
	j, ok, err := b.store.StartJob(t.Context(), id, "w1")
	if err != nil {
		t.Fatal(err)
	}
	return j, ok
}

func (b *capBundle) finish(t *testing.T, j scrapethis.Job) []scrapethis.Job {
	t.Helper()
	if ok, err := b.store.FinishJob(t.Context(), j.ID, "w1", scrapethis.StatusFinished, nil); err != nil || !ok {
		t.Fatalf("finish: %v %v", ok, err)
	}
	let, err := b.store.Release(t.Context(), j)
	if err != nil {
		t.Fatal(err)
	}
	return let
}

// TestCapsExactUnderConcurrency: eight starters (workers) take queued jobs
// at once, each running a job for a moment before finishing it and
// enqueueing what its end let go. The user is capped at 3 and one of its
// spiders at 2: neither cap is ever exceeded, both are reached, and every
// job runs exactly once.
func TestCapsExactUnderConcurrency(t *testing.T) {
	t.Parallel()
	b := setupCaps(t, 3)
	ctx := t.Context()
	capped := b.spider(t, "capped", intp(2))
	free := b.spider(t, "free", nil)
	const perSpider = 30
	var news []scrapethis.NewJob
	for i := range 2 * perSpider {
		sp := capped
		if i%2 == 1 {
			sp = free
		}
		news = append(news, scrapethis.NewJob{UserID: b.user, SpiderID: sp, Priority: intp(rand.IntN(5))})
	}
	queue := make(chan scrapethis.Job, 4*perSpider)
	// Created in four batches at once, as four API servers would.
	var wg sync.WaitGroup
	var queuedAtCreate atomic.Int64
	for i := range 4 {
		wg.Go(func() {
			jobs, errs, others, err := b.store.CreateJobsLetGo(ctx, news[i*len(news)/4:(i+1)*len(news)/4])
			if err != nil {
				t.Error(err)
				return
			}
			for _, j := range others {
				queuedAtCreate.Add(1)
				queue <- j
			}
			for k, j := range jobs {
				if errs[k] != nil {
					t.Error(errs[k])
				} else if !j.Held {
					queuedAtCreate.Add(1)
					queue <- j
				}
			}
		})
	}
	wg.Wait()
	// Each batch counts the queue without the lock (the start keeps the
	// caps exact): at most twice the cap's free places each.
	if n := queuedAtCreate.Load(); n > 4*2*3 {
		t.Fatalf("%d jobs queued at creation by 4 batches under a user cap of 3", n)
	}

	var running, runningCapped, maxRunning, maxCapped, finished atomic.Int64
	starts := map[string]int{}
	var mu sync.Mutex
	done := make(chan struct{})
	peak := func(v *atomic.Int64, n int64) {
		for {
			old := v.Load()
			if n <= old || v.CompareAndSwap(old, n) {
				return
			}
		}
	}
	for range 8 {
		wg.Go(func() {
			for {
				var j scrapethis.Job
				select {
				case <-done:
					return
				case j = <-queue:
				}
				sj, ok, let, err := b.store.StartJobLetGo(ctx, j.ID, "w1")
				if err != nil {
					t.Error(err)
					return
				}
				for _, l := range let {
					queue <- l
				}
				if !ok {
					// Held back: a cap was reached, or a better job wanted
					// its place; what that let go is queued above.
					continue
				}
				mu.Lock()
				starts[j.ID]++
				mu.Unlock()
				peak(&maxRunning, running.Add(1))
				if sj.SpiderID == capped {
					peak(&maxCapped, runningCapped.Add(1))
				}
				// The row agrees with the caps too.
				var n, c int
				if err := b.sql.QueryRowContext(ctx, `SELECT count(*), count(*) FILTER (WHERE spider_id = $2)
					FROM jobs WHERE user_id = $1 AND status = 'running'`, b.user, capped).Scan(&n, &c); err != nil {
					t.Error(err)
					return
				}
				if n > 3 || c > 2 {
					t.Errorf("%d running jobs (%d of the capped spider) in Postgres", n, c)
				}
				time.Sleep(time.Millisecond) // the job runs: not a synchronisation
				running.Add(-1)
				if sj.SpiderID == capped {
					runningCapped.Add(-1)
				}
				if ok, err := b.store.FinishJob(ctx, j.ID, "w1", scrapethis.StatusFinished, nil); err != nil || !ok {
					t.Errorf("finish: %v %v", ok, err)
					return
				}
				let, err = b.store.Release(ctx, sj)
				if err != nil {
					t.Error(err)
					return
				}
				for _, l := range let {
					queue <- l
				}
				if finished.Add(1) == 2*perSpider {
					close(done)
				}
			}
		})
	}
	waitDone := make(chan struct{})
	go func() { wg.Wait(); close(waitDone) }()
	select {
	case <-waitDone:
	case <-time.After(60 * time.Second):
		t.Fatalf("only %d of %d jobs finished", finished.Load(), 2*perSpider)
	}
	if maxRunning.Load() > 3 || maxCapped.Load() > 2 {
		t.Fatalf("peak running %d (cap 3), of the capped spider %d (cap 2)", maxRunning.Load(), maxCapped.Load())
	}
	if maxRunning.Load() < 2 {
		t.Fatalf("peak running %d: the caps were never approached, so the test proves nothing", maxRunning.Load())
	}
	for id, n := range starts {
		if n != 1 {
			t.Fatalf("job %s started %d times", id, n)
		}
	}
	if len(starts) != 2*perSpider {
		t.Fatalf("%d jobs started, want %d", len(starts), 2*perSpider)
	}
	t.Logf("peak running %d of cap 3; capped spider %d of cap 2", maxRunning.Load(), maxCapped.Load())
}

// TestHeldJobsStartBestFirst: a spider capped at 1 with one job running and
// two jobs of every priority created behind it in a shuffled order: they
// start highest priority first, equal priorities in creation order.
func TestHeldJobsStartBestFirst(t *testing.T) {
	t.Parallel()
	b := setupCaps(t, 0)
	sp := b.spider(t, "one-at-a-time", intp(1))
	first := b.create(t, sp, 2)
	if first.Held {
		t.Fatal("the first job was held with the cap free")
	}
	cur, ok := b.start(t, first.ID)
	if !ok {
		t.Fatal("first job not started")
	}
	prios := []int{0, 1, 2, 3, 4, 0, 1, 2, 3, 4}
	rand.Shuffle(len(prios), func(i, j int) { prios[i], prios[j] = prios[j], prios[i] })
	var held []scrapethis.Job
	for _, p := range prios {
		j := b.create(t, sp, p)
		if !j.Held {
			t.Fatalf("job of priority %d not held with the cap reached", p)
		}
		held = append(held, j)
	}
	want := slices.Clone(held)
	slices.SortStableFunc(want, func(a, b scrapethis.Job) int { return b.Priority - a.Priority })
	// Each release lets the best held jobs go (the cap's queue is twice its
	// free place). Their tasks are taken worst first, as if the worse job's
	// worker won the race to the lock: the worse job gives the place to the
	// better one, and once one started, the rest are held back at the cap.
	var queue []scrapethis.Job
	for i, w := range want {
		queue = append(queue, b.finish(t, cur)...)
		if len(queue) == 0 || len(queue) > 2 {
			t.Fatalf("release %d: %d jobs queued, want 1 or 2", i, len(queue))
		}
		started := false
		for len(queue) > 0 {
			j := queue[len(queue)-1]
			queue = queue[:len(queue)-1]
			got, ok, let, err := b.store.StartJobLetGo(t.Context(), j.ID, "w1")
			if err != nil {
				t.Fatal(err)
			}
			queue = append(queue, let...)
			if ok {
				if started {
					t.Fatalf("release %d: a second job started under a cap of 1", i)
				}
				if got.ID != w.ID {
					t.Fatalf("release %d started %s(p%d), want job %s of priority %d", i, got.ID, got.Priority, w.ID, w.Priority)
				}
				started, cur = true, got
			} else if !got.Held || got.Status != scrapethis.StatusPending {
				t.Fatalf("release %d: job not started yet not held back: %+v", i, got)
			}
		}
		if !started {
			t.Fatalf("release %d: nothing started", i)
		}
	}
	if let := b.finish(t, cur); len(let) != 0 {
		t.Fatalf("nothing is held, yet %d let go", len(let))
	}
}

func ids(jobs []scrapethis.Job) []string {
	out := make([]string, len(jobs))
	for i, j := range jobs {
		out[i] = fmt.Sprintf("%s(p%d)", j.ID, j.Priority)
	}
	return out
}

// TestNoHeadOfLineBlocking: held jobs of a full spider, even of the highest
// priority, do not keep a slot of the user's cap from another spider's job.
func TestNoHeadOfLineBlocking(t *testing.T) {
	t.Parallel()
	b := setupCaps(t, 2)
	full := b.spider(t, "full", intp(1))
	other := b.spider(t, "other", nil)
	a := b.create(t, full, 2)
	ra, ok := b.start(t, a.ID)
	if !ok {
		t.Fatal("not started")
	}
	o1 := b.create(t, other, 2)
	if o1.Held {
		t.Fatal("job of the other spider held with a place free")
	}
	ro1, ok := b.start(t, o1.ID)
	if !ok {
		t.Fatal("not started")
	}
	// The user is at its cap now: everything is held.
	top := b.create(t, full, 4)
	o2 := b.create(t, other, 0)
	if !top.Held || !o2.Held {
		t.Fatalf("held %v %v with the user at its cap", top.Held, o2.Held)
	}
	// The other spider's job ends: the full spider's priority-4 job cannot
	// take the place, the other spider's priority-0 job does.
	let := b.finish(t, ro1)
	if len(let) != 1 || let[0].ID != o2.ID {
		t.Fatalf("let go %v, want the other spider's job %s", ids(let), o2.ID)
	}
	// The full spider's job ends: its held one goes.
	if let := b.finish(t, ra); len(let) != 1 || let[0].ID != top.ID {
		t.Fatalf("let go %v, want %s", ids(let), top.ID)
	}
	// Held jobs are not the reconciler's: PendingJobs lists queued ones only.
	if _, ok := b.start(t, top.ID); !ok {
		t.Fatal("top not started")
	}
	h := b.create(t, full, 1)
	if !h.Held {
		t.Fatal("not held")
	}
	pend, err := b.store.PendingJobs(t.Context(), scrapethis.JobCursor{ID: "00000000-0000-0000-0000-000000000000"}, time.Now().Add(time.Hour), 100)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pend {
		if p.ID == h.ID {
			t.Fatal("a held job is listed for the reconciler")
		}
	}
	users, err := b.store.HeldUsers(t.Context(), 10)
	if err != nil || len(users) != 1 || users[0] != b.user {
		t.Fatalf("held users %v %v", users, err)
	}
	if n, err := b.store.HeldJobCount(t.Context()); err != nil || n != 1 {
		t.Fatalf("held count %d %v", n, err)
	}
}

// TestCapChanges: a cap set on a spider with jobs already queued holds back
// the one that would start beyond it; raising the cap lets held jobs go at
// once; a cap of 0 holds everything.
func TestCapChanges(t *testing.T) {
	t.Parallel()
	b := setupCaps(t, 0)
	ctx := t.Context()
	sp := b.spider(t, "late-cap", nil)
	j1, j2 := b.create(t, sp, 2), b.create(t, sp, 2)
	if j1.Held || j2.Held {
		t.Fatal("held without a cap")
	}
	if _, let, err := b.store.SetSpiderMaxRunning(ctx, b.user, sp, intp(1)); err != nil || len(let) != 0 {
		t.Fatalf("set cap: %v %v", let, err)
	}
	r1, ok := b.start(t, j1.ID)
	if !ok {
		t.Fatal("first not started")
	}
	if j, ok := b.start(t, j2.ID); ok || !j.Held || j.Status != scrapethis.StatusPending {
		t.Fatalf("second started %v held %v status %s, want held back", ok, j.Held, j.Status)
	}
	if let := b.finish(t, r1); len(let) != 1 || let[0].ID != j2.ID {
		t.Fatalf("let go %v, want %s", ids(let), j2.ID)
	}
	r2, ok := b.start(t, j2.ID)
	if !ok {
		t.Fatal("second not started after the first ended")
	}
	// Paused: nothing starts, whatever runs ends.
	s, _, err := b.store.SetSpiderMaxRunning(ctx, b.user, sp, intp(0))
	if err != nil || s.MaxRunning == nil || *s.MaxRunning != 0 {
		t.Fatalf("pause: %+v %v", s, err)
	}
	j3 := b.create(t, sp, 4)
	if !j3.Held {
		t.Fatal("job of a paused spider not held")
	}
	if let := b.finish(t, r2); len(let) != 0 {
		t.Fatalf("paused spider let %v go", ids(let))
	}
	// Cap removed: the held job goes at once.
	s, let, err := b.store.SetSpiderMaxRunning(ctx, b.user, sp, nil)
	if err != nil || s.MaxRunning != nil || len(let) != 1 || let[0].ID != j3.ID {
		t.Fatalf("uncap: %+v %v %v", s, ids(let), err)
	}
	if _, ok := b.start(t, j3.ID); !ok {
		t.Fatal("job not started once uncapped")
	}
	if _, _, err := b.store.SetSpiderMaxRunning(ctx, b.user, "00000000-0000-0000-0000-000000000000", nil); scrapethis.ErrorCode(err) != scrapethis.ENotFound {
		t.Fatalf("unknown spider: %v", err)
	}
	// A cancelled held job leaves nothing behind to let go.
	if _, _, err := b.store.SetSpiderMaxRunning(ctx, b.user, sp, intp(0)); err != nil {
		t.Fatal(err)
	}
	j4 := b.create(t, sp, 2)
	if c, err := b.store.CancelJob(ctx, b.user, j4.ID); err != nil || c.Status != scrapethis.StatusCancelled || !c.Held {
		t.Fatalf("cancel held: %+v %v", c, err)
	}
	if n, err := b.store.HeldJobCount(ctx); err != nil || n != 0 {
		t.Fatalf("held count after cancel %d %v", n, err)
	}
}

// TestCapAboveTheFleet: with no live worker a cap keeps its queue (twice
// its free places, the rest held); once the live workers' slots are at or
// below the cap, it cannot be exceeded, so jobs are queued at creation and
// start without waiting for the lock or counting.
func TestCapAboveTheFleet(t *testing.T) {
	t.Parallel()
	b := setupCaps(t, 3)
	ctx := t.Context()
	sp := b.spider(t, "fleet", nil)
	held := 0
	var first []scrapethis.Job
	for range 10 {
		j := b.create(t, sp, 2)
		if j.Held {
			held++
		}
		first = append(first, j)
	}
	if held != 4 {
		t.Fatalf("%d of 10 jobs held with no worker and a cap of 3; want 4 (6 queued)", held)
	}
	for _, j := range first { // out of the way of the jobs below
		if _, err := b.store.CancelJob(ctx, b.user, j.ID); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.store.Heartbeat(ctx, "fleet-w1", "host", 1, 2, nil); err != nil {
		t.Fatal(err)
	}
	var queued []scrapethis.Job
	for range 10 {
		j := b.create(t, sp, 2)
		if j.Held {
			t.Fatal("a job held under a cap above the fleet's 2 slots")
		}
		queued = append(queued, j)
	}
	for _, j := range queued[:2] {
		if _, ok := b.start(t, j.ID); !ok {
			t.Fatal("job not started under a cap above the fleet")
		}
	}
	// The fleet grows past the cap: the start counts again.
	if err := b.store.Heartbeat(ctx, "fleet-w2", "host", 2, 8, nil); err != nil {
		t.Fatal(err)
	}
	if _, ok := b.start(t, queued[2].ID); !ok {
		t.Fatal("third job not started under a cap of 3")
	}
	if j, ok := b.start(t, queued[3].ID); ok || !j.Held {
		t.Fatalf("a fourth job started under a cap of 3 (held %v)", j.Held)
	}
}
