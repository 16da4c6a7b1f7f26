package retention_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/scrapethis/scrapethis"
	"github.com/scrapethis/scrapethis/internal/testenv"
	"github.com/scrapethis/scrapethis/retention"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

type counts struct {
	mu sync.Mutex
	by map[string]int64
}

func (c *counts) RetentionDeleted(kind string, n int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.by[kind] += n
}

// Jobs final for longer than the retention lose their items and logs, in
// batches, and keep their rows with purged_at; newer and unfinished jobs
// keep everything. The clock is moved, not waited for.
func TestSweep(t *testing.T) {
	t.Parallel()
	dsn := testenv.DatabaseDSN(t)
	store := testenv.Open(t, dsn)
	sqlDB := testenv.SQL(t, dsn)
	ctx := context.Background()
	u, _ := store.EnsureUser(ctx, "a@example.com")
	sp, _ := store.CreateSpider(ctx, u.ID, "s", "s.py")
	job := func(final bool, items, logs int) string {
		j, err := store.CreateJob(ctx, scrapethis.NewJob{UserID: u.ID, SpiderID: sp.ID})
		if err != nil {
			t.Fatal(err)
		}
		store.StartJob(ctx, j.ID, "w1")
		batch := make([]string, items)
		for i := range batch {
			batch[i] = fmt.Sprintf(`{"i":%d}`, i)
		}
		if err := store.AppendItems(ctx, j.ID, "w1", 0, batch); err != nil {
			t.Fatal(err)
		}
		lines := make([]string, logs)
		for i := range lines {
			lines[i] = fmt.Sprintf("line %d", i)
		}
		if err := store.AppendLogs(ctx, j.ID, 0, lines); err != nil {
			t.Fatal(err)
		}
		if final {
			store.FinishJob(ctx, j.ID, "w1", scrapethis.StatusFinished, nil)
		}
		return j.ID
	}
	old1, old2, running := job(true, 2500, 30), job(true, 7, 0), job(false, 5, 5)
	now := time.Now()
	c := &counts{by: map[string]int64{}}
	s := &retention.Sweeper{DB: store, Age: 30 * 24 * time.Hour, Batch: 1000, Jobs: 10, Now: func() time.Time { return now },
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Metrics: c}
	if r, err := s.Sweep(ctx); err != nil || r != (retention.Result{}) {
		t.Fatalf("a sweep today removed %+v (%v)", r, err)
	}
	now = now.Add(31 * 24 * time.Hour)
	fresh := job(true, 3, 3) // ended an hour before the moved clock
	sqlDB.MustExec(`UPDATE jobs SET finished_at = $2 WHERE id = $1`, fresh, now.Add(-time.Hour))
	r, err := s.Sweep(ctx)
	if err != nil || r != (retention.Result{Jobs: 2, Items: 2507, Logs: 30}) {
		t.Fatalf("sweep: %+v %v", r, err)
	}
	left := func(id string) (items, logs int, purged bool) {
		sqlDB.QueryRow(`SELECT count(*) FROM job_items WHERE job_id = $1`, id).Scan(&items)
		sqlDB.QueryRow(`SELECT count(*) FROM job_logs WHERE job_id = $1`, id).Scan(&logs)
		sqlDB.QueryRow(`SELECT purged_at IS NOT NULL FROM jobs WHERE id = $1`, id).Scan(&purged)
		return
	}
	for _, id := range []string{old1, old2} {
		if i, l, p := left(id); i != 0 || l != 0 || !p {
			t.Fatalf("old job %s: %d items, %d logs, purged %v", id, i, l, p)
		}
		j, err := store.JobByID(ctx, id)
		if err != nil || j.PurgedAt == nil || j.Status != scrapethis.StatusFinished || (id == old1 && j.ItemsScraped != 2500) {
			t.Fatalf("old job row: %+v %v", j, err)
		}
	}
	if i, l, p := left(running); i != 5 || l != 5 || p {
		t.Fatalf("running job: %d items, %d logs, purged %v", i, l, p)
	}
	if i, l, p := left(fresh); i != 3 || l != 3 || p {
		t.Fatalf("recent job: %d items, %d logs, purged %v", i, l, p)
	}
	if r, err := s.Sweep(ctx); err != nil || r != (retention.Result{}) {
		t.Fatalf("a second sweep removed %+v (%v)", r, err)
	}
	if c.by["jobs"] != 2 || c.by["items"] != 2507 || c.by["log_lines"] != 30 {
		t.Fatalf("metrics %v", c.by)
	}
}
