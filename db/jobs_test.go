package db_test

import (
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"

	"github.com/scrapethis/scrapethis"
	"github.com/scrapethis/scrapethis/db"
	"github.com/scrapethis/scrapethis/internal/testenv"
)

// The job state machine, every status against every transition, on real
// Postgres. Each case puts its own job into a state with SQL, runs one
// transition through the store and compares the whole row afterwards.

// jobState is a state a job row is put into before a transition.
type jobState struct {
	name   string
	status scrapethis.Status
	cancel bool // cancel_requested_at is set
}

var jobStates = []jobState{
	{"pending", scrapethis.StatusPending, false},
	{"pending-cancel-requested", scrapethis.StatusPending, true},
	{"running", scrapethis.StatusRunning, false},
	{"running-cancel-requested", scrapethis.StatusRunning, true},
	{"finished", scrapethis.StatusFinished, false},
	{"cancelled", scrapethis.StatusCancelled, true},
	{"error", scrapethis.StatusError, false},
}

// owner is the worker that runs (or ran) the jobs the fixture puts in a
// state past pending; stranger is another worker.
const (
	owner    = "w-owner"
	stranger = "w-stranger"
)

// fixtureItems is how many items a job past pending has scraped.
const fixtureItems = 3

// jobRowState is the part of a jobs row the state machine changes, with
// timestamps as Postgres' text ("" for NULL) so that rows compare with ==.
type jobRowState struct {
	Status            string         `db:"status"`
	Error             sql.NullString `db:"error"`
	WorkerID          sql.NullString `db:"worker_id"`
	Attempts          int            `db:"attempts"`
	ItemsScraped      int64          `db:"items_scraped"`
	StoredItems       int64          `db:"stored_items"`
	StartedAt         string         `db:"started_at"`
	FinishedAt        string         `db:"finished_at"`
	CancelRequestedAt string         `db:"cancel_requested_at"`
}

// anyTime in a wanted row's timestamp means "set, to whatever".
const anyTime = "<set>"

func (got jobRowState) matches(want jobRowState) bool {
	ts := func(got, want string) bool {
		if want == anyTime {
			return got != ""
		}
		return got == want
	}
	return got.Status == want.Status && got.Error == want.Error && got.WorkerID == want.WorkerID &&
		got.Attempts == want.Attempts && got.ItemsScraped == want.ItemsScraped && got.StoredItems == want.StoredItems &&
		ts(got.StartedAt, want.StartedAt) && ts(got.FinishedAt, want.FinishedAt) &&
		ts(got.CancelRequestedAt, want.CancelRequestedAt)
}

func null(s string) sql.NullString { return sql.NullString{String: s, Valid: true} }

// jobBundle is a database with two users and a spider of the first.
type jobBundle struct {
	store  *db.DB
	sql    *sqlx.DB
	user   string
	other  string
	spider string
}

func setupJobs(t *testing.T) *jobBundle {
	t.Helper()
	dsn := testenv.DatabaseDSN(t)
	b := &jobBundle{store: testenv.Open(t, dsn), sql: testenv.SQL(t, dsn)}
	ctx := t.Context()
	u, err := b.store.EnsureUser(ctx, "owner@example.com")
	if err != nil {
		t.Fatal(err)
	}
	o, err := b.store.EnsureUser(ctx, "other@example.com")
	if err != nil {
		t.Fatal(err)
	}
	s, err := b.store.CreateSpider(ctx, u.ID, "quotes", "quotes.py")
	if err != nil {
		t.Fatal(err)
	}
	b.user, b.other, b.spider = u.ID, o.ID, s.ID
	return b
}

// put creates a job and puts it into st: past pending it ran on worker
// and scraped fixtureItems stored items; a cancelled job says so and an
// error job says "boom".
func (b *jobBundle) put(t *testing.T, st jobState, worker string) string {
	t.Helper()
	ctx := t.Context()
	j, err := b.store.CreateJob(ctx, scrapethis.NewJob{UserID: b.user, SpiderID: b.spider})
	if err != nil {
		t.Fatal(err)
	}
	var reason sql.NullString
	switch st.status {
	case scrapethis.StatusCancelled:
		reason = null(scrapethis.ReasonCancelled)
	case scrapethis.StatusError:
		reason = null("boom")
	}
	past := st.status != scrapethis.StatusPending
	_, err = b.sql.ExecContext(ctx, `
		UPDATE jobs SET
			status = $2,
			error = $3,
			worker_id = CASE WHEN $4 THEN $5 END,
			attempts = CASE WHEN $4 THEN 1 ELSE 0 END,
			items_scraped = CASE WHEN $4 THEN $6 ELSE 0 END,
			started_at = CASE WHEN $4 THEN now() - interval '2 minutes' END,
			finished_at = CASE WHEN $7 THEN now() - interval '1 minute' END,
			cancel_requested_at = CASE WHEN $8 THEN now() - interval '90 seconds' END
		WHERE id = $1`,
		j.ID, string(st.status), reason, past, worker, fixtureItems, st.status.Final(), st.cancel)
	if err != nil {
		t.Fatalf("put job in state %s: %v", st.name, err)
	}
	if past {
		_, err = b.sql.ExecContext(ctx, `INSERT INTO job_items (job_id, seq, data)
			SELECT $1, g, '{"n": 1}' FROM generate_series(0, $2 - 1) g`, j.ID, fixtureItems)
		if err != nil {
			t.Fatalf("store items: %v", err)
		}
	}
	return j.ID
}

func (b *jobBundle) row(t *testing.T, id string) jobRowState {
	t.Helper()
	var r jobRowState
	err := b.sql.GetContext(t.Context(), &r, `
		SELECT status, error, worker_id, attempts, items_scraped,
			(SELECT count(*) FROM job_items i WHERE i.job_id = j.id) AS stored_items,
			COALESCE(started_at::text, '') AS started_at,
			COALESCE(finished_at::text, '') AS finished_at,
			COALESCE(cancel_requested_at::text, '') AS cancel_requested_at
		FROM jobs j WHERE id = $1`, id)
	if err != nil {
		t.Fatalf("read job row: %v", err)
	}
	return r
}

func checkRow(t *testing.T, got, want jobRowState) {
	t.Helper()
	if !got.matches(want) {
		t.Fatalf("job row\n got %+v\nwant %+v", got, want)
	}
}

// checkFinalUnchanged holds the rule above all: a final status never changes.
func checkFinalUnchanged(t *testing.T, before, after jobRowState) {
	t.Helper()
	if scrapethis.Status(before.Status).Final() && after != before {
		t.Fatalf("final job changed\nbefore %+v\n after %+v", before, after)
	}
}

func TestStartJob(t *testing.T) {
	t.Parallel()
	b := setupJobs(t)
	for _, st := range jobStates {
		t.Run(st.name, func(t *testing.T) {
			t.Parallel()
			id := b.put(t, st, owner)
			before := b.row(t, id)
			j, started, err := b.store.StartJob(t.Context(), id, stranger)
			if err != nil {
				t.Fatal(err)
			}
			after := b.row(t, id)
			checkFinalUnchanged(t, before, after)
			runs := st.status == scrapethis.StatusPending && !st.cancel
			if started != runs {
				t.Fatalf("started %v, want %v", started, runs)
			}
			want := before
			if runs {
				want.Status = string(scrapethis.StatusRunning)
				want.WorkerID = null(stranger)
				want.Attempts = before.Attempts + 1
				want.StartedAt = anyTime
			}
			checkRow(t, after, want)
			// The job returned is the job as it stands after.
			if j.ID != id || string(j.Status) != after.Status || j.Attempts != after.Attempts ||
				(j.WorkerID == nil) == after.WorkerID.Valid || (j.WorkerID != nil && *j.WorkerID != after.WorkerID.String) ||
				(j.StartedAt == nil) != (after.StartedAt == "") || j.SpiderName != "quotes" {
				t.Fatalf("returned job %+v, row %+v", j, after)
			}
		})
	}
	t.Run("unknown job", func(t *testing.T) {
		t.Parallel()
		_, started, err := b.store.StartJob(t.Context(), uuid.NewString(), stranger)
		if started || scrapethis.ErrorCode(err) != scrapethis.ENotFound {
			t.Fatalf("started %v, err %v; want not found", started, err)
		}
	})
}

func TestFinishJob(t *testing.T) {
	t.Parallel()
	b := setupJobs(t)
	timeout := scrapethis.ReasonTimeout
	cancelled := scrapethis.ReasonCancelled
	endings := []struct {
		status scrapethis.Status
		reason *string
	}{
		{scrapethis.StatusFinished, nil},
		{scrapethis.StatusError, &timeout},
		{scrapethis.StatusCancelled, &cancelled},
	}
	for _, st := range jobStates {
		for _, end := range endings {
			for _, worker := range []string{owner, stranger} {
				t.Run(fmt.Sprintf("%s/%s/by-%s", st.name, end.status, worker), func(t *testing.T) {
					t.Parallel()
					id := b.put(t, st, owner)
					before := b.row(t, id)
					ok, err := b.store.FinishJob(t.Context(), id, worker, end.status, end.reason)
					if err != nil {
						t.Fatal(err)
					}
					after := b.row(t, id)
					checkFinalUnchanged(t, before, after)
					ends := st.status == scrapethis.StatusRunning && worker == owner
					if ok != ends {
						t.Fatalf("finished %v, want %v", ok, ends)
					}
					want := before
					if ends {
						want.FinishedAt = anyTime
						want.Status = string(end.status)
						want.Error = sql.NullString{}
						if end.reason != nil {
							want.Error = null(*end.reason)
						}
						if st.cancel { // a requested cancel wins over what the spider did
							want.Status = string(scrapethis.StatusCancelled)
							want.Error = null(scrapethis.ReasonCancelled)
						}
					}
					checkRow(t, after, want)
				})
			}
		}
	}
}

func TestHandBackJob(t *testing.T) {
	t.Parallel()
	b := setupJobs(t)
	for _, st := range jobStates {
		for _, worker := range []string{owner, stranger} {
			t.Run(st.name+"/by-"+worker, func(t *testing.T) {
				t.Parallel()
				ctx := t.Context()
				id := b.put(t, st, owner)
				before := b.row(t, id)
				status, err := b.store.HandBackJob(ctx, id, worker)
				if err != nil {
					t.Fatal(err)
				}
				after := b.row(t, id)
				checkFinalUnchanged(t, before, after)
				handed := st.status == scrapethis.StatusRunning && worker == owner
				want := before
				var wantStatus scrapethis.Status // "": nothing was handed back
				switch {
				case handed && st.cancel:
					// Cancelled instead: the attempt's items stay.
					wantStatus = scrapethis.StatusCancelled
					want.Status = string(scrapethis.StatusCancelled)
					want.Error = null(scrapethis.ReasonCancelled)
					want.FinishedAt = anyTime
				case handed:
					// Pending again, from the start: the items are dropped,
					// the attempt is still counted.
					wantStatus = scrapethis.StatusPending
					want.Status = string(scrapethis.StatusPending)
					want.Error = sql.NullString{}
					want.WorkerID = sql.NullString{}
					want.StartedAt = ""
					want.FinishedAt = ""
					want.ItemsScraped = 0
					want.StoredItems = 0
				}
				if status != wantStatus {
					t.Fatalf("handed back to %q, want %q", status, wantStatus)
				}
				checkRow(t, after, want)
				if wantStatus != scrapethis.StatusPending {
					return
				}
				// The next attempt counts on from the first.
				j, started, err := b.store.StartJob(ctx, id, stranger)
				if err != nil || !started {
					t.Fatalf("start again: %v %v", started, err)
				}
				if j.Attempts != before.Attempts+1 || *j.WorkerID != stranger || j.ItemsScraped != 0 {
					t.Fatalf("second attempt %+v", j)
				}
			})
		}
	}
}

func TestCancelJob(t *testing.T) {
	t.Parallel()
	b := setupJobs(t)
	for _, st := range jobStates {
		t.Run(st.name, func(t *testing.T) {
			t.Parallel()
			id := b.put(t, st, owner)
			before := b.row(t, id)
			j, err := b.store.CancelJob(t.Context(), b.user, id)
			if err != nil {
				t.Fatal(err)
			}
			after := b.row(t, id)
			checkFinalUnchanged(t, before, after)
			want := before
			switch st.status {
			case scrapethis.StatusPending: // cancelled at once
				want.Status = string(scrapethis.StatusCancelled)
				want.Error = null(scrapethis.ReasonCancelled)
				want.FinishedAt = anyTime
				if !st.cancel {
					want.CancelRequestedAt = anyTime
				}
			case scrapethis.StatusRunning: // its worker stops it; an earlier request keeps its time
				if !st.cancel {
					want.CancelRequestedAt = anyTime
				}
			}
			checkRow(t, after, want)
			if j.ID != id || string(j.Status) != after.Status || (j.CancelRequestedAt == nil) != (after.CancelRequestedAt == "") ||
				(j.FinishedAt == nil) != (after.FinishedAt == "") {
				t.Fatalf("returned job %+v, row %+v", j, after)
			}
		})
		t.Run(st.name+"/another-users", func(t *testing.T) {
			t.Parallel()
			id := b.put(t, st, owner)
			before := b.row(t, id)
			_, err := b.store.CancelJob(t.Context(), b.other, id)
			if scrapethis.ErrorCode(err) != scrapethis.ENotFound {
				t.Fatalf("err %v, want not found", err)
			}
			if after := b.row(t, id); after != before {
				t.Fatalf("another user's cancel changed the job\nbefore %+v\n after %+v", before, after)
			}
		})
	}
	for _, id := range []string{uuid.NewString(), "not-a-uuid", ""} {
		t.Run("unknown/"+id, func(t *testing.T) {
			t.Parallel()
			if _, err := b.store.CancelJob(t.Context(), b.user, id); scrapethis.ErrorCode(err) != scrapethis.ENotFound {
				t.Fatalf("err %v, want not found", err)
			}
		})
	}
}

// TestReapLostJobs puts a job in every state on a worker whose heartbeat is
// stale, and running jobs on a live worker, a worker with no row and one
// dead for hours, then reaps once. The staleness is set with SQL, never
// waited for.
func TestReapLostJobs(t *testing.T) {
	t.Parallel()
	b := setupJobs(t)
	ctx := t.Context()
	const (
		live     = "w-live"
		stale    = "w-stale"
		longDead = "w-long-dead"
		gone     = "w-gone" // never had a row
	)
	for _, w := range []struct {
		id  string
		age string
	}{{live, "0 seconds"}, {stale, "10 minutes"}, {longDead, "2 hours"}} {
		if err := b.store.Heartbeat(ctx, w.id, "host", 1, 1, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := b.sql.ExecContext(ctx, `UPDATE workers SET heartbeat_at = now() - $2::interval WHERE id = $1`, w.id, w.age); err != nil {
			t.Fatal(err)
		}
	}
	type reapCase struct {
		st     jobState
		worker string
		id     string
		before jobRowState
	}
	var cases []*reapCase
	for _, st := range jobStates {
		cases = append(cases, &reapCase{st: st, worker: stale})
		if st.status == scrapethis.StatusRunning {
			for _, w := range []string{live, gone, longDead} {
				cases = append(cases, &reapCase{st: st, worker: w})
			}
		}
	}
	for _, c := range cases {
		c.id = b.put(t, c.st, c.worker)
		c.before = b.row(t, c.id)
	}

	lost, err := b.store.ReapLostJobs(ctx, time.Minute)
	if err != nil {
		t.Fatal(err)
	}

	byID := map[string]db.LostJob{}
	for _, l := range lost {
		byID[l.ID] = l
	}
	reaped := 0
	for _, c := range cases {
		wantLost := c.st.status == scrapethis.StatusRunning && c.worker != live
		if wantLost {
			reaped++
		}
		t.Run(c.st.name+"/on-"+c.worker, func(t *testing.T) {
			t.Parallel()
			after := b.row(t, c.id)
			checkFinalUnchanged(t, c.before, after)
			want := c.before
			wantStatus := ""
			if wantLost {
				wantStatus = string(scrapethis.StatusError)
				want.Error = null(scrapethis.ReasonWorkerLost)
				if c.st.cancel {
					wantStatus = string(scrapethis.StatusCancelled)
					want.Error = null(scrapethis.ReasonCancelled)
				}
				want.Status = wantStatus
				want.FinishedAt = anyTime
			}
			checkRow(t, after, want)
			l, ok := byID[c.id]
			if ok != wantLost {
				t.Fatalf("reported lost %v, want %v", ok, wantLost)
			}
			if ok && (l.Status != wantStatus || l.UserID != b.user || l.Spider != "quotes") {
				t.Fatalf("lost job %+v", l)
			}
		})
	}
	if len(lost) != reaped {
		t.Fatalf("%d jobs reaped, want %d", len(lost), reaped)
	}
	// Workers dead for an hour are forgotten; the others are kept.
	var workers []string
	if err := b.sql.SelectContext(ctx, &workers, `SELECT id FROM workers ORDER BY id`); err != nil {
		t.Fatal(err)
	}
	if want := []string{live, stale}; !slices.Equal(workers, want) {
		t.Fatalf("workers %v, want %v", workers, want)
	}
}

// TestJobLifecycle walks one job through the store as a worker does: it
// starts, stores items, is handed back (its items dropped), starts again
// elsewhere, is cancelled while running and ends cancelled whatever its
// spider did; after that its old workers own nothing.
func TestJobLifecycle(t *testing.T) {
	t.Parallel()
	b := setupJobs(t)
	ctx := t.Context()
	j, err := b.store.CreateJob(ctx, scrapethis.NewJob{UserID: b.user, SpiderID: b.spider})
	if err != nil {
		t.Fatal(err)
	}
	if _, started, err := b.store.StartJob(ctx, j.ID, "w1"); err != nil || !started {
		t.Fatalf("start: %v %v", started, err)
	}
	if _, started, err := b.store.StartJob(ctx, j.ID, "w2"); err != nil || started {
		t.Fatalf("duplicate delivery started: %v %v", started, err)
	}
	if err := b.store.AppendItems(ctx, j.ID, "w1", 0, []string{`{"a":1}`, `{"a":2}`}); err != nil {
		t.Fatal(err)
	}
	if err := b.store.AppendItems(ctx, j.ID, "w2", 2, []string{`{"a":3}`}); !errors.Is(err, db.ErrNotOwner) {
		t.Fatalf("another worker's items: %v, want ErrNotOwner", err)
	}
	if st, err := b.store.HandBackJob(ctx, j.ID, "w1"); err != nil || st != scrapethis.StatusPending {
		t.Fatalf("hand back: %q %v", st, err)
	}
	if err := b.store.AppendItems(ctx, j.ID, "w1", 2, []string{`{"a":3}`}); !errors.Is(err, db.ErrNotOwner) {
		t.Fatalf("items after hand-back: %v, want ErrNotOwner", err)
	}
	if _, started, err := b.store.StartJob(ctx, j.ID, "w2"); err != nil || !started {
		t.Fatalf("start again: %v %v", started, err)
	}
	if err := b.store.AppendItems(ctx, j.ID, "w2", 0, []string{`{"b":1}`}); err != nil {
		t.Fatal(err)
	}
	c, err := b.store.CancelJob(ctx, b.user, j.ID)
	if err != nil || c.Status != scrapethis.StatusRunning || c.CancelRequestedAt == nil {
		t.Fatalf("cancel running: %+v %v", c, err)
	}
	if ok, err := b.store.FinishJob(ctx, j.ID, "w1", scrapethis.StatusFinished, nil); err != nil || ok {
		t.Fatalf("old worker finished it: %v %v", ok, err)
	}
	if ok, err := b.store.FinishJob(ctx, j.ID, "w2", scrapethis.StatusFinished, nil); err != nil || !ok {
		t.Fatalf("finish: %v %v", ok, err)
	}
	if ok, err := b.store.FinishJob(ctx, j.ID, "w2", scrapethis.StatusError, nil); err != nil || ok {
		t.Fatalf("finished twice: %v %v", ok, err)
	}
	checkRow(t, b.row(t, j.ID), jobRowState{
		Status: string(scrapethis.StatusCancelled), Error: null(scrapethis.ReasonCancelled), WorkerID: null("w2"),
		Attempts: 2, ItemsScraped: 1, StoredItems: 1,
		StartedAt: anyTime, FinishedAt: anyTime, CancelRequestedAt: anyTime,
	})
	var items []string
	err = b.store.EachItem(ctx, j.ID, func(data []byte) error {
		items = append(items, string(data))
		return nil
	})
	if err != nil || !slices.Equal(items, []string{`{"b":1}`}) {
		t.Fatalf("items %v %v", items, err)
	}
}
