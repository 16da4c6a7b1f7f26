package main

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/lib/pq"

	"github.com/scrapethis/scrapethis/worker"
)

// itemIngestion: one spider prints n small JSON items; items/s is n over
// the job's started_at..finished_at (both Postgres clock), so it covers
// reading, checking, batching and storing every item and ending the job.
// The baseline is a raw COPY (pq.CopyIn) of byte-for-byte the same rows
// into job_items from this process, in transactions of the worker's batch
// size: what Postgres alone takes to store them.
func (b *bench) itemIngestion(ctx context.Context) error {
	n := b.sz.items
	snap := b.snapshot(ctx)
	t0 := time.Now()
	id, err := b.postJob(ctx, "items", map[string]string{"mode": "items", "n": strconv.Itoa(n)})
	if err != nil {
		return err
	}
	limit := time.Duration(n)*50*time.Microsecond + 30*time.Second // 20k items/s at worst
	st, err := b.waitFinal(ctx, id, limit)
	if err != nil {
		return err
	}
	endToEnd := time.Since(t0)
	used := b.cpuSince(ctx, snap)
	if st != "finished" {
		return fmt.Errorf("items job ended %s", st)
	}
	var row struct {
		Started  time.Time `db:"started_at"`
		Finished time.Time `db:"finished_at"`
		Items    int64     `db:"items_scraped"`
	}
	if err := b.sql.GetContext(ctx, &row, `SELECT started_at, finished_at, items_scraped FROM jobs WHERE id = $1`, id); err != nil {
		return err
	}
	var stored int
	if err := b.sql.GetContext(ctx, &stored, `SELECT count(*) FROM job_items WHERE job_id = $1`, id); err != nil {
		return err
	}
	if row.Items != int64(n) || stored != n {
		return fmt.Errorf("items job stored %d rows, counted %d, of %d printed", stored, row.Items, n)
	}
	var printed sql.NullString
	b.sql.GetContext(ctx, &printed, `SELECT line FROM job_logs WHERE job_id = $1 AND line LIKE 'printed %' LIMIT 1`, id)
	ran := row.Finished.Sub(row.Started)
	rate := float64(n) / ran.Seconds()

	baseRate, err := b.rawCopy(ctx, n)
	if err != nil {
		return fmt.Errorf("raw COPY: %w", err)
	}
	b.say("   raw COPY: %.0f items/s", baseRate)
	note := fmt.Sprintf("%d items, job ran %s (POST -> final %s; spider alone: %q); CPU s: worker %.2f, Postgres %.2f, spider %.2f",
		n, ran.Round(time.Millisecond), endToEnd.Round(time.Millisecond), printed.String,
		used.worker.Seconds(), used.pg.Seconds(), used.spiders.Seconds())
	b.res.add(fmt.Sprintf("item ingestion, 1 spider, %s items", count(n)), rate, "items/s", ptr(baseRate), true, ratioAtLeast(0.7), note)
	return nil
}

// rawCopy stores n items under a job row of its own with COPY, batch by
// batch as the worker does (without its per-batch UPDATE of the count).
func (b *bench) rawCopy(ctx context.Context, n int) (float64, error) {
	jobID := uuid.NewString()
	if _, err := b.sql.ExecContext(ctx, `INSERT INTO jobs (id, user_id, spider_id, status, finished_at)
		VALUES ($1, $2, $3, 'finished', now())`, jobID, b.userID, b.spiders["items"]); err != nil {
		return 0, err
	}
	batch := worker.DefaultConfig().ItemBatch
	buf := make([]byte, 0, 128)
	start := time.Now()
	for first := 0; first < n; first += batch {
		tx, err := b.sql.BeginTx(ctx, nil)
		if err != nil {
			return 0, err
		}
		stmt, err := tx.PrepareContext(ctx, pq.CopyIn("job_items", "job_id", "seq", "data"))
		if err != nil {
			tx.Rollback()
			return 0, err
		}
		for i := first; i < min(first+batch, n); i++ {
			buf = item(buf[:0], i)
			if _, err := stmt.ExecContext(ctx, jobID, int64(i), string(buf)); err != nil {
				tx.Rollback()
				return 0, err
			}
		}
		if _, err := stmt.ExecContext(ctx); err != nil {
			tx.Rollback()
			return 0, err
		}
		if err := stmt.Close(); err != nil {
			tx.Rollback()
			return 0, err
		}
		if err := tx.Commit(); err != nil {
			return 0, err
		}
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// item appends item i: {"i":42,"name":"item-42","price":0.42}. It is
// benchspider's Item, copied: both sides must print the same bytes.
func item(b []byte, i int) []byte {
	b = append(b, `{"i":`...)
	b = strconv.AppendInt(b, int64(i), 10)
	b = append(b, `,"name":"item-`...)
	b = strconv.AppendInt(b, int64(i), 10)
	b = append(b, `","price":`...)
	b = strconv.AppendInt(b, int64(i%1000/100), 10)
	b = append(b, '.')
	c := i % 100
	b = append(b, byte('0'+c/10), byte('0'+c%10))
	return append(b, '}')
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
