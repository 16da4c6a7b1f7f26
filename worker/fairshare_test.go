package worker_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/scrapethis/scrapethis"
	"github.com/scrapethis/scrapethis/db"
	"github.com/scrapethis/scrapethis/internal/testenv"
	"github.com/scrapethis/scrapethis/tasks"
)

// Fair share against real workers: caps hold a flooding user back without
// delaying another, a capped spider starts its held jobs best first, caps
// hold across several workers, and held jobs cost no work.

// setupCapped is a worker bundle whose store caps each user at userMax.
func setupCapped(t *testing.T, userMax int) *bundle {
	t.Helper()
	b := setup(t)
	store, err := db.Open(t.Context(), b.dsn, db.UserMaxRunning(userMax))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	b.db = store
	b.sql = testenv.SQL(t, b.dsn)
	return b
}

// user creates another user of the bundle's database.
func (b *bundle) user(email string) string {
	b.t.Helper()
	u, err := b.db.EnsureUser(context.Background(), email)
	if err != nil {
		b.t.Fatal(err)
	}
	return u.ID
}

// spiderOf writes an executable spider for a user, with a cap.
func (b *bundle) spiderOf(userID, name, body string, maxRunning *int) string {
	b.t.Helper()
	if err := os.WriteFile(filepath.Join(b.spiders, name), []byte(body), 0o755); err != nil {
		b.t.Fatal(err)
	}
	sp, err := b.db.CreateSpider(context.Background(), userID, name, name, maxRunning)
	if err != nil {
		b.t.Fatal(err)
	}
	return sp.ID
}

// submit creates a job and enqueues it unless a cap holds it back, as the
// API does.
func (b *bundle) submit(nj scrapethis.NewJob) scrapethis.Job {
	b.t.Helper()
	ctx := context.Background()
	j, errs, others, err := b.db.CreateJobsLetGo(ctx, []scrapethis.NewJob{nj})
	if err == nil {
		err = errs[0]
	}
	if err != nil {
		b.t.Fatal(err)
	}
	for _, o := range append(others, j[0]) {
		if !o.Held {
			if err := b.queuer.Enqueue(ctx, o); err != nil {
				b.t.Fatal(err)
			}
		}
	}
	return j[0]
}

func (b *bundle) count(query string, args ...any) int {
	b.t.Helper()
	var n int
	if err := b.sql.QueryRowContext(context.Background(), query, args...).Scan(&n); err != nil {
		b.t.Fatal(err)
	}
	return n
}

// queuedTasks counts the tasks waiting in every spider queue of Redis.
func (b *bundle) queuedTasks() int {
	b.t.Helper()
	n := 0
	for q := range tasks.Queues() {
		if info, err := b.queuer.Inspector().GetQueueInfo(q); err == nil {
			n += info.Pending + info.Scheduled + info.Retry
		}
	}
	return n
}

func (b *bundle) cancelAll(userID string) {
	for _, id := range b.ids(`SELECT id::text FROM jobs WHERE user_id = $1 AND status IN ('pending', 'running')`, userID) {
		b.db.CancelJob(context.Background(), userID, id)
		b.queuer.Cancel(context.Background(), id)
	}
}

func (b *bundle) ids(query string, args ...any) []string {
	b.t.Helper()
	var out []string
	if err := b.sql.SelectContext(context.Background(), &out, query, args...); err != nil {
		b.t.Fatal(err)
	}
	return out
}

// TestFloodingUserDoesNotStarveAnother: one worker of four slots, users
// capped at 2 running jobs. One user floods 100 long jobs; another user's
// job still runs at once (without the cap it would wait behind the flood
// for all four slots). The flood runs exactly 2 at a time, and its held
// jobs are neither in Redis nor ever taken by the worker.
func TestFloodingUserDoesNotStarveAnother(t *testing.T) {
	t.Parallel()
	b := setupCapped(t, 2)
	flooder, other := b.userID, b.user("other@example.com")
	slow := b.spiderOf(flooder, "slow.sh", "#!/bin/sh\nsleep 60\n", nil)
	quick := b.spiderOf(other, "quick.sh", "#!/bin/sh\necho '{\"ok\": true}'\n", nil)
	b.startWorker(nil)
	defer b.cancelAll(flooder)

	const flood = 100
	for range flood {
		b.submit(scrapethis.NewJob{UserID: flooder, SpiderID: slow})
	}
	b.waitFor("two of the flood running", 30*time.Second, func() bool {
		return b.count(`SELECT count(*) FROM jobs WHERE user_id = $1 AND status = 'running'`, flooder) == 2
	})
	if held := b.count(`SELECT count(*) FROM jobs WHERE user_id = $1 AND status = 'pending' AND held`, flooder); held != flood-2 {
		t.Fatalf("%d held, want %d", held, flood-2)
	}
	if n := b.queuedTasks(); n != 0 {
		t.Fatalf("%d tasks in Redis with only held jobs pending", n)
	}

	j := b.submit(scrapethis.NewJob{UserID: other, SpiderID: quick})
	if j.Held {
		t.Fatal("the other user's job was held back")
	}
	start := time.Now()
	b.waitStatus(j.ID, scrapethis.StatusFinished)
	t.Logf("other user's job: POST to finished in %s while %d of the flood are held", time.Since(start).Round(time.Millisecond), flood-2)

	if n := b.count(`SELECT count(*) FROM jobs WHERE user_id = $1 AND status = 'running'`, flooder); n != 2 {
		t.Fatalf("%d of the flood running, want 2", n)
	}
	// No held job was ever handed to the worker.
	if n := b.count(`SELECT count(*) FROM jobs WHERE user_id = $1 AND held AND attempts > 0`, flooder); n != 0 {
		t.Fatalf("%d held jobs were taken by a worker", n)
	}
}

// TestCappedSpiderStartsBestFirst: a spider capped at 1 has a job running
// and jobs of every priority (two of each) created behind it in a shuffled
// order; once the first ends, they run highest priority first, equal
// priorities in creation order.
func TestCappedSpiderStartsBestFirst(t *testing.T) {
	t.Parallel()
	b := setupCapped(t, 0)
	dir := t.TempDir()
	order, gate := filepath.Join(dir, "order"), filepath.Join(dir, "go")
	// Each run records its n; the first waits for the gate (the spider's own
	// wait, not the test's).
	body := fmt.Sprintf("#!/bin/sh\necho \"$2\" >> %s\nif [ \"$2\" = n=first ]; then while [ ! -e %s ]; do sleep 0.02; done; fi\n", order, gate)
	sp := b.spiderOf(b.userID, "one.sh", body, ptr(1))
	b.startWorker(nil)

	first := b.submit(scrapethis.NewJob{UserID: b.userID, SpiderID: sp, Arguments: []byte(`{"n": "first"}`)})
	b.waitStatus(first.ID, scrapethis.StatusRunning)
	prios := []int{0, 1, 2, 3, 4, 0, 1, 2, 3, 4}
	for i := len(prios) - 1; i > 0; i-- { // a fixed shuffle
		k := (i * 7) % (i + 1)
		prios[i], prios[k] = prios[k], prios[i]
	}
	var want []string
	type held struct{ p, i int }
	var hs []held
	for i, p := range prios {
		j := b.submit(scrapethis.NewJob{UserID: b.userID, SpiderID: sp, Priority: ptr(p),
			Arguments: []byte(fmt.Sprintf(`{"n": "p%d-%d"}`, p, i))})
		if !j.Held {
			t.Fatalf("job of priority %d not held behind the running one", p)
		}
		hs = append(hs, held{p, i})
	}
	slices.SortStableFunc(hs, func(a, b held) int { return b.p - a.p })
	want = append(want, "n=first")
	for _, h := range hs {
		want = append(want, fmt.Sprintf("n=p%d-%d", h.p, h.i))
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	b.waitFor("every job to finish", 60*time.Second, func() bool {
		return b.count(`SELECT count(*) FROM jobs WHERE status = 'finished'`) == len(prios)+1
	})
	data, _ := os.ReadFile(order)
	if got := strings.Fields(string(data)); !slices.Equal(got, want) {
		t.Fatalf("start order\n got %v\nwant %v", got, want)
	}
}

func ptr(n int) *int { return &n }

// TestCapsAcrossWorkers: three workers of four slots each (twelve slots)
// and one user capped at 3: the spiders' own start and end stamps never
// overlap more than three deep, and the cap is reached (the first three
// wait for a gate that opens once three have started).
func TestCapsAcrossWorkers(t *testing.T) {
	t.Parallel()
	b := setupCapped(t, 3)
	dir := t.TempDir()
	stamps, gate := filepath.Join(dir, "stamps"), filepath.Join(dir, "gate")
	body := fmt.Sprintf("#!/bin/sh\necho \"$(date +%%s%%N) 1\" >> %s\n"+
		"i=0; while [ ! -e %s ] && [ $i -lt 6000 ]; do i=$((i+1)); sleep 0.01; done\n"+
		"echo \"$(date +%%s%%N) -1\" >> %s\n", stamps, gate, stamps)
	sp := b.spiderOf(b.userID, "stamp.sh", body, nil)
	for range 3 {
		b.startWorker(nil)
	}
	const n = 24
	for range n {
		b.submit(scrapethis.NewJob{UserID: b.userID, SpiderID: sp})
	}
	b.waitFor("three capped spiders to start", 60*time.Second, func() bool {
		data, _ := os.ReadFile(stamps)
		return strings.Count(string(data), " 1\n") >= 3
	})
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	b.waitFor("every job to finish", 120*time.Second, func() bool {
		return b.count(`SELECT count(*) FROM jobs WHERE status = 'finished'`) == n
	})
	data, err := os.ReadFile(stamps)
	if err != nil {
		t.Fatal(err)
	}
	type ev struct{ at, d int64 }
	var evs []ev
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		f := strings.Fields(line)
		at, _ := strconv.ParseInt(f[0], 10, 64)
		d, _ := strconv.ParseInt(f[1], 10, 64)
		evs = append(evs, ev{at, d})
	}
	if len(evs) != 2*n {
		t.Fatalf("%d stamps, want %d", len(evs), 2*n)
	}
	// Ends before starts at the same instant: touching runs do not overlap.
	slices.SortFunc(evs, func(a, b ev) int {
		if a.at != b.at {
			return int(a.at - b.at)
		}
		return int(a.d - b.d)
	})
	depth, peak := int64(0), int64(0)
	for _, e := range evs {
		depth += e.d
		peak = max(peak, depth)
	}
	if peak > 3 {
		t.Fatalf("%d spiders ran at once under a cap of 3", peak)
	}
	if peak < 3 {
		t.Fatalf("peak %d: the cap of 3 was never reached with twelve slots, so this proves nothing", peak)
	}
}

// TestHeldJobsCostNothing measures a standalone worker's CPU while idle,
// then while 500 jobs are held back behind two running ones (the spiders'
// CPU is not the worker's). Held jobs are in Postgres only: the worker
// never takes one, and Redis holds none. The figures are logged, not
// asserted: timing is the machine's.
func TestHeldJobsCostNothing(t *testing.T) {
	t.Parallel()
	b := setupCapped(t, 2)
	slow := b.spiderOf(b.userID, "slow.sh", "#!/bin/sh\nsleep 60\n", nil)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "WORKER_CHILD_DSN="+b.dsn, "WORKER_CHILD_REDIS="+b.redisDSN,
		"WORKER_CHILD_SPIDERS="+b.spiders, "WORKER_CHILD_USER_MAX=2", "WORKER_CHILD_CACHE="+t.TempDir())
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	b.waitFor("the worker to register", 30*time.Second, func() bool { return b.count(`SELECT count(*) FROM workers`) == 1 })

	const window = 3 * time.Second
	idle := b.cpuOver(cmd.Process.Pid, window)
	for range 500 {
		b.submit(scrapethis.NewJob{UserID: b.userID, SpiderID: slow})
	}
	b.waitFor("two running", 30*time.Second, func() bool {
		return b.count(`SELECT count(*) FROM jobs WHERE status = 'running'`) == 2
	})
	heldCPU := b.cpuOver(cmd.Process.Pid, window)
	t.Logf("worker CPU over %s: idle %s (%.2f%% of a core), with 498 held and 2 running %s (%.2f%% of a core)",
		window, idle, 100*idle.Seconds()/window.Seconds(), heldCPU, 100*heldCPU.Seconds()/window.Seconds())
	if n := b.count(`SELECT count(*) FROM jobs WHERE held AND attempts > 0`); n != 0 {
		t.Fatalf("%d held jobs were taken by the worker", n)
	}
	if n := b.queuedTasks(); n != 0 {
		t.Fatalf("%d tasks in Redis while every pending job is held", n)
	}
	b.cancelAll(b.userID)
}

// cpuOver returns the user+system CPU a process spends over d (its own,
// not its children's), from /proc.
func (b *bundle) cpuOver(pid int, d time.Duration) time.Duration {
	b.t.Helper()
	read := func() time.Duration {
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			b.t.Fatal(err)
		}
		s := string(st)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		stt, _ := strconv.ParseInt(f[12], 10, 64)
		return time.Duration(ut+stt) * 10 * time.Millisecond // USER_HZ 100
	}
	c0 := read()
	time.Sleep(d) // a measurement window, not a synchronisation
	return read() - c0
}
