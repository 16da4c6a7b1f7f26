package bench

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/scrapethis/scrapethis"
	"github.com/scrapethis/scrapethis/internal/bench/itemgen"
	"github.com/scrapethis/scrapethis/worker"
)

// itemIngestion: one spider prints n small JSON items; items/s is n over
// the job's started_at..finished_at (both Postgres clock), so it covers
// reading, checking, batching and storing every item and ending the job.
// The baseline is a raw COPY of byte-for-byte the same rows (itemgen) into
// job_items from this process, in transactions of the worker's batch
// size: what Postgres alone takes to store them.
func (b *Benchmarker) itemIngestion(ctx context.Context) error {
	n := b.sz.Items
	snap := b.snapshot(ctx)
	t0 := time.Now()
	id, err := b.postJob(ctx, "items", map[string]string{"mode": "items", "n": strconv.Itoa(n)})
	if err != nil {
		return err
	}
	limit := time.Duration(n)*50*time.Microsecond + 30*time.Second // 20k items/s at worst
	job, err := b.waitFinal(ctx, id, limit)
	if err != nil {
		return err
	}
	endToEnd := time.Since(t0)
	used := b.cpuSince(ctx, snap)
	if job.Status != scrapethis.StatusFinished {
		return fmt.Errorf("items job ended %s", job.Status)
	}
	if job.StartedAt == nil || job.FinishedAt == nil {
		return fmt.Errorf("items job %s has no start or end time", id)
	}
	stored, err := b.store.ItemCount(ctx, id)
	if err != nil {
		return err
	}
	if job.ItemsScraped != int64(n) || stored != n {
		return fmt.Errorf("items job stored %d rows, counted %d, of %d printed", stored, job.ItemsScraped, n)
	}
	var printed string
	if lines, err := b.store.Logs(ctx, id, -1, 100); err == nil {
		for _, l := range lines {
			if strings.HasPrefix(l.Line, "printed ") {
				printed = l.Line
				break
			}
		}
	}
	ran := job.FinishedAt.Sub(*job.StartedAt)
	rate := float64(n) / ran.Seconds()

	baseRate, err := b.rawCopy(ctx, n)
	if err != nil {
		return fmt.Errorf("raw COPY: %w", err)
	}
	b.say("   raw COPY: %.0f items/s", baseRate)
	note := fmt.Sprintf("%d items, job ran %s (POST -> final %s; spider alone: %q); CPU s: worker %.2f, Postgres %.2f, spider %.2f",
		n, ran.Round(time.Millisecond), endToEnd.Round(time.Millisecond), printed,
		used.worker.Seconds(), used.pg.Seconds(), used.spiders.Seconds())
	b.res.add(fmt.Sprintf("item ingestion, 1 spider, %s items", count(n)), rate, "items/s", ptr(baseRate), true, ratioAtLeast(0.7), note)
	return nil
}

// rawCopy stores n items under a job row of its own with COPY, batch by
// batch as the worker does (without its per-batch UPDATE of the count).
func (b *Benchmarker) rawCopy(ctx context.Context, n int) (float64, error) {
	jobID, err := b.store.InsertFinishedJob(ctx, b.userID, b.spiders["items"])
	if err != nil {
		return 0, err
	}
	batch := worker.DefaultConfig().ItemBatch
	rows := make([]string, 0, batch)
	buf := make([]byte, 0, 128)
	start := time.Now()
	for first := 0; first < n; first += batch {
		rows = rows[:0]
		for i := first; i < min(first+batch, n); i++ {
			buf = itemgen.Append(buf[:0], i)
			rows = append(rows, string(buf))
		}
		if err := b.store.CopyItems(ctx, jobID, int64(first), rows); err != nil {
			return 0, err
		}
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// count formats 1000000 as 1M and 100000 as 100k.
func count(n int) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return strconv.Itoa(n/1_000_000) + "M"
	case n >= 1000 && n%1000 == 0:
		return strconv.Itoa(n/1000) + "k"
	}
	return strconv.Itoa(n)
}
