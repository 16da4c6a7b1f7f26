package db

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/jmoiron/sqlx"

	"github.com/scrapethis/scrapethis"
)

// Fair share. A user's running jobs are capped by the operator (userMax)
// and each spider's by its max_running. A pending job subject to a cap is
// either queued (its task is in Redis) or held (in Postgres only, costing
// nothing while it waits). Each cap has a queue: held jobs are let go
// while its queued jobs are fewer than twice its free places (free = cap
// minus running), so that a slot that frees finds the next job already
// queued, and a job beyond that is inserted held. A cap at or above the
// live workers' slots cannot hold a start back, so its jobs are inserted
// queued whatever the queue's depth (the start still counts).
//
// The caps themselves are decided where the truth is: a job starts only
// under its user's advisory lock, after counting the running jobs of its
// user and spider (scrapethis_start_capped, migration 0008: a PL/pgSQL
// function, so that the lock and the counts take one round trip and each
// count sees every start committed before the lock). The same start gives
// a cap's last free place to the best job waiting for it: a job that would
// take it from a better one (higher priority, or equal and older; queued
// or held) is held back instead, and a better held job is let go in its
// place. So the caps are exact, and priority order holds, however many API
// servers, schedulers and workers run:
//
//   - a job is inserted queued or held by the queues' counts (no lock:
//     the start keeps the caps exact); its creator then admits
//     (AdmitHeld) if it was held, since a place may have freed meanwhile;
//   - a start that finds a cap reached holds the job back, and lets go
//     what its place in the queue makes room for (another spider's jobs);
//   - whoever ends a queued or running job of a capped user or spider
//     (finish, cancel, reap, hand-back) calls Release or AdmitHeld, and
//     enqueues what they let go, best first, skipping spiders at their cap
//     (no head-of-line blocking);
//   - the reconciler admits for every user with held jobs now and then, for
//     a process that died between a commit and its admission.
//
// Spiders belong to one user, so the user's lock covers its spiders' caps.

// fairShareLock is the first key of the two-key advisory locks, one per
// user (the second key is a hash of the user id; a collision only makes
// two users wait for each other). Migration 0008's functions use it too.
const fairShareLock = 0x53544653 // "STFS"

// activeCounts counts the running and queued jobs of jobs x matched by a
// WHERE that follows.
const activeCounts = `SELECT count(*) FILTER (WHERE x.status = 'running') AS running,
		count(*) FILTER (WHERE x.status = 'pending') AS queued
	FROM jobs x WHERE (x.status = 'running' OR (x.status = 'pending' AND NOT x.held)) AND`

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

// startCapped is StartJob for a job that a cap may hold back, in one call
// of scrapethis_start_capped: the job started, or held back (then it comes
// back Held), and the jobs that decision let go, to enqueue.
func (d *DB) startCapped(ctx context.Context, id, workerID string) (scrapethis.Job, bool, []scrapethis.Job, error) {
	var rows []jobRow
	err := d.sel(ctx, &rows, `SELECT `+jobColumns+` FROM scrapethis_start_capped($1, $2, $3) j `+jobJoins, id, workerID, d.userMax)
	if err != nil {
		return scrapethis.Job{}, false, nil, fmt.Errorf("start job: %w", err)
	}
	var job *scrapethis.Job
	var let []scrapethis.Job
	for _, r := range rows {
		j := r.toJob()
		if j.ID == id {
			job = &j
		} else {
			let = append(let, j)
		}
	}
	sortBestFirst(let)
	if job == nil { // not pending, cancelled or held: nothing to run
		j, err := d.JobByID(ctx, id)
		return j, false, let, err
	}
	return *job, job.Status == scrapethis.StatusRunning, let, nil
}

// Release lets go, after job left its place (it ended, was cancelled while
// queued, or was handed back), the held jobs of its user that now have
// room; see AdmitHeld. It does nothing when no cap applies to the job.
func (d *DB) Release(ctx context.Context, job scrapethis.Job) ([]scrapethis.Job, error) {
	if !d.capsApply(job.SpiderMaxRunning) {
		return nil, nil
	}
	// Most ends find no held job: one cheap lookup after the caller's
	// commit (so that of this and a hold's own admission, the later sees
	// the other's write) instead of the admission's call.
	var held bool
	if err := d.get(ctx, &held, `SELECT EXISTS (SELECT 1 FROM jobs WHERE user_id = $1 AND status = 'pending' AND held)`, job.UserID); err != nil {
		return nil, fmt.Errorf("look for held jobs: %w", err)
	}
	if !held {
		return nil, nil
	}
	return d.AdmitHeld(ctx, job.UserID)
}

// AdmitHeld lets go as many of the user's held jobs as the caps' queues
// have room for now, best first: highest priority, then oldest, skipping
// jobs whose spider is at its cap. The jobs returned are queued (no longer
// held) and committed: enqueue them. A user with no held jobs costs one
// indexed lookup.
func (d *DB) AdmitHeld(ctx context.Context, userID string) ([]scrapethis.Job, error) {
	var out []scrapethis.Job
	for {
		var rows []jobRow
		err := d.sel(ctx, &rows, `SELECT `+jobColumns+` FROM scrapethis_admit($1, $2, NULL) j `+jobJoins, userID, d.userMax)
		if err != nil {
			return out, fmt.Errorf("let held jobs go: %w", err)
		}
		batch := make([]scrapethis.Job, len(rows))
		for i, r := range rows {
			batch[i] = r.toJob()
		}
		sortBestFirst(batch)
		out = append(out, batch...)
		if len(batch) < admitBatch {
			return out, nil
		}
	}
}

// admitBatch is the most held jobs one admission lets go (scrapethis_admit's).
const admitBatch = 1000

// sortBestFirst orders jobs as they are let go and enqueued: highest
// priority first, then oldest.
func sortBestFirst(jobs []scrapethis.Job) {
	slices.SortStableFunc(jobs, func(a, b scrapethis.Job) int {
		if a.Priority != b.Priority {
			return b.Priority - a.Priority
		}
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
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
