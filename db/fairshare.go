package db

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/scrapethis/scrapethis"
)

// Fair share. A user's running jobs are capped by the operator (userMax)
// and each spider's by its max_running. A pending job subject to a cap is
// either queued (its task is in Redis, and it holds a place under the caps)
// or held (in Postgres only, costing nothing while it waits). Every
// decision that gives a job a place is taken under its user's advisory
// lock, so the caps are exact however many API servers, schedulers and
// workers run:
//
//   - a job subject to a cap is inserted held, and its creator then admits
//     (AdmitHeld) as many held jobs as the caps allow;
//   - StartJob of such a job counts the running jobs of its user and spider
//     under the lock and holds the job back again if a cap is reached (a cap
//     lowered since it was queued);
//   - whoever ends a queued or running job of a capped user or spider
//     (finish, cancel, reap, re-hold) calls Release or AdmitHeld, and
//     enqueues what they let go: the best held job first, by priority then
//     creation, skipping spiders at their cap (no head-of-line blocking);
//   - the reconciler admits for every user with held jobs now and then, for
//     a process that died between a commit and its admission.
//
// Spiders belong to one user, so the user's lock covers its spiders' caps.

// fairShareLock is the first key of the two-key advisory locks, one per
// user (the second key is a hash of the user id; a collision only makes
// two users wait for each other).
const fairShareLock = 0x53544653 // "STFS"

// admitBatch is the most held jobs one admission lets go.
const admitBatch = 1000

// capsApply reports whether a cap may hold back a job of a spider whose
// max_running is spiderMax.
func (d *DB) capsApply(spiderMax *int) bool { return d.userMax > 0 || spiderMax != nil }

// UserMaxRunning is the cap on each user's running jobs; 0 is none.
func (d *DB) UserMaxRunning() int { return d.userMax }

// lockUser takes the user's fair-share lock until tx ends.
func lockUser(ctx context.Context, tx *sqlx.Tx, userID string) error {
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1, hashtext($2))`, fairShareLock, userID); err != nil {
		return fmt.Errorf("take fair-share lock: %w", err)
	}
	return nil
}

// startCapped is StartJob for a job that a cap may hold back: under the
// user's lock, it starts the job only if its user and spider run fewer jobs
// than their caps, and holds it back otherwise.
func (d *DB) startCapped(ctx context.Context, id, workerID string) (scrapethis.Job, bool, error) {
	var r jobRow
	started := false
	err := d.inTx(ctx, func(tx *sqlx.Tx) error {
		res, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($2, hashtext(user_id::text)) FROM jobs WHERE id = $1`, id, fairShareLock)
		if err != nil {
			return fmt.Errorf("take fair-share lock: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return nil // no such job: JobByID below says so
		}
		// A statement after the lock sees every start committed before it.
		err = tx.GetContext(ctx, &r, `
			WITH j AS (
				UPDATE jobs SET status = 'running', worker_id = $2, started_at = now(), attempts = attempts + 1
				WHERE id = $1 AND status = 'pending' AND cancel_requested_at IS NULL AND NOT held
					AND ($3 = 0 OR (SELECT count(*) FROM jobs r WHERE r.user_id = jobs.user_id AND r.status = 'running') < $3)
					AND COALESCE((SELECT c.max_running FROM spiders c WHERE c.id = jobs.spider_id) >
						(SELECT count(*) FROM jobs r WHERE r.user_id = jobs.user_id AND r.spider_id = jobs.spider_id AND r.status = 'running'), true)
				RETURNING *
			)
			SELECT `+jobColumns+` FROM j `+jobJoins, id, workerID, d.userMax)
		if err == nil {
			started = true
			return nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("start job: %w", err)
		}
		// Not started: if only a cap stopped it, hold it back.
		_, err = tx.ExecContext(ctx, `UPDATE jobs SET held = true
			WHERE id = $1 AND status = 'pending' AND cancel_requested_at IS NULL AND NOT held`, id)
		if err != nil {
			return fmt.Errorf("hold job back: %w", err)
		}
		return nil
	})
	if err != nil {
		return scrapethis.Job{}, false, err
	}
	if started {
		return r.toJob(), true, nil
	}
	j, err := d.JobByID(ctx, id)
	return j, false, err
}

// Release lets go, after job left its place (it ended, was cancelled while
// queued, or was held back again), the held jobs of its user that now have
// room; see AdmitHeld. It does nothing when no cap applies to the job.
func (d *DB) Release(ctx context.Context, job scrapethis.Job) ([]scrapethis.Job, error) {
	if !d.capsApply(job.SpiderMaxRunning) {
		return nil, nil
	}
	return d.AdmitHeld(ctx, job.UserID)
}

// AdmitHeld lets go as many of the user's held jobs as the caps allow now,
// best first: highest priority, then oldest, skipping jobs whose spider is
// at its cap. The jobs returned are queued (no longer held) and committed:
// enqueue them. A user with no held jobs costs one indexed lookup.
func (d *DB) AdmitHeld(ctx context.Context, userID string) ([]scrapethis.Job, error) {
	var any bool
	if err := d.get(ctx, &any, `SELECT EXISTS (SELECT 1 FROM jobs WHERE user_id = $1 AND status = 'pending' AND held)`, userID); err != nil {
		return nil, fmt.Errorf("look for held jobs: %w", err)
	}
	if !any {
		return nil, nil
	}
	var out []scrapethis.Job
	for {
		var batch []scrapethis.Job
		err := d.inTx(ctx, func(tx *sqlx.Tx) error {
			var err error
			batch, err = admit(ctx, tx, userID, d.userMax)
			return err
		})
		if err != nil {
			return out, err
		}
		out = append(out, batch...)
		if len(batch) < admitBatch {
			return out, nil
		}
	}
}

// admit is one admission of the user's held jobs, in tx.
func admit(ctx context.Context, tx *sqlx.Tx, userID string, userMax int) ([]scrapethis.Job, error) {
	if err := lockUser(ctx, tx, userID); err != nil {
		return nil, err
	}
	var spiders []struct {
		ID         string        `db:"id"`
		MaxRunning sql.NullInt32 `db:"max_running"`
		Active     int           `db:"active"`
	}
	err := tx.SelectContext(ctx, &spiders, `SELECT s.id, s.max_running,
			(SELECT count(*) FROM jobs j WHERE j.user_id = $1 AND j.spider_id = s.id
				AND (j.status = 'running' OR (j.status = 'pending' AND NOT j.held))) AS active
		FROM spiders s WHERE s.user_id = $1`, userID)
	if err != nil {
		return nil, fmt.Errorf("count active jobs: %w", err)
	}
	room := admitBatch
	if userMax > 0 {
		active := 0
		for _, s := range spiders {
			active += s.Active
		}
		room = min(room, userMax-active)
	}
	if room <= 0 {
		return nil, nil
	}
	var ids []string
	var limits []int64
	for _, s := range spiders {
		n := room
		if s.MaxRunning.Valid {
			n = min(n, int(s.MaxRunning.Int32)-s.Active)
		}
		if n > 0 {
			ids = append(ids, s.ID)
			limits = append(limits, int64(n))
		}
	}
	if len(ids) == 0 {
		return nil, nil
	}
	// The best few held jobs of each spider with room, best first overall.
	var cands []struct {
		ID       string `db:"id"`
		SpiderID string `db:"spider_id"`
	}
	err = tx.SelectContext(ctx, &cands, `SELECT c.id, c.spider_id
		FROM unnest($2::uuid[], $3::int[]) AS s(id, n)
		CROSS JOIN LATERAL (
			SELECT j.id, j.spider_id, j.priority, j.created_at FROM jobs j
			WHERE j.user_id = $1 AND j.spider_id = s.id AND j.status = 'pending' AND j.held
			ORDER BY j.priority DESC, j.created_at, j.id LIMIT s.n
		) c
		ORDER BY c.priority DESC, c.created_at, c.id LIMIT $4`, userID, pq.Array(ids), pq.Array(limits), room)
	if err != nil {
		return nil, fmt.Errorf("pick held jobs: %w", err)
	}
	if len(cands) == 0 {
		return nil, nil
	}
	let := make([]string, len(cands))
	for i, c := range cands {
		let[i] = c.ID
	}
	var rows []jobRow
	err = tx.SelectContext(ctx, &rows, `
		WITH j AS (
			UPDATE jobs SET held = false WHERE id = ANY($1::uuid[]) AND status = 'pending' AND held
			RETURNING *
		)
		SELECT `+jobColumns+` FROM j `+jobJoins, pq.Array(let))
	if err != nil {
		return nil, fmt.Errorf("let held jobs go: %w", err)
	}
	// In the order they were picked, so that they are enqueued best first.
	out := make([]scrapethis.Job, len(rows))
	for i, r := range rows {
		out[i] = r.toJob()
	}
	slices.SortFunc(out, func(a, b scrapethis.Job) int {
		return slices.Index(let, a.ID) - slices.Index(let, b.ID)
	})
	return out, nil
}

// HeldUsers lists the users that have held jobs, at most limit, walking
// the held-jobs index one user at a time.
func (d *DB) HeldUsers(ctx context.Context, limit int) ([]string, error) {
	var out []string
	err := d.sel(ctx, &out, `
		WITH RECURSIVE u AS (
			(SELECT user_id FROM jobs WHERE status = 'pending' AND held ORDER BY user_id LIMIT 1)
			UNION ALL
			SELECT (SELECT j.user_id FROM jobs j WHERE j.status = 'pending' AND j.held AND j.user_id > u.user_id
				ORDER BY j.user_id LIMIT 1)
			FROM u WHERE u.user_id IS NOT NULL
		)
		SELECT user_id FROM u WHERE user_id IS NOT NULL LIMIT $1`, limit)
	if err != nil {
		return nil, fmt.Errorf("list users with held jobs: %w", err)
	}
	return out, nil
}

// HeldJobCount counts the jobs held back by a cap now, for metrics.
func (d *DB) HeldJobCount(ctx context.Context) (int, error) {
	var n int
	if err := d.get(ctx, &n, `SELECT count(*) FROM jobs WHERE status = 'pending' AND held`); err != nil {
		return 0, fmt.Errorf("count held jobs: %w", err)
	}
	return n, nil
}

// admitCreated admits, after jobs were inserted, for each user whose new
// jobs were held, and clears Held on those let go: the caller enqueues
// every job that is not Held, and the others let go (older held jobs with
// a higher priority, or those of a batch created at the same time).
func (d *DB) admitCreated(ctx context.Context, jobs []scrapethis.Job, errs []error) ([]scrapethis.Job, error) {
	var users []string
	index := map[string]int{}
	for i, j := range jobs {
		if errs[i] != nil || !j.Held {
			continue
		}
		index[j.ID] = i
		if !slices.Contains(users, j.UserID) {
			users = append(users, j.UserID)
		}
	}
	var others []scrapethis.Job
	for _, u := range users {
		let, err := d.AdmitHeld(ctx, u)
		if err != nil {
			return others, err
		}
		for _, j := range let {
			if i, ok := index[j.ID]; ok {
				jobs[i].Held = false
			} else {
				others = append(others, j)
			}
		}
	}
	return others, nil
}
