package db

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"

	"github.com/scrapethis/scrapethis"
)

// scheduleRow is a schedule as SQL sees it; toSchedule converts it.
type scheduleRow struct {
	ID             string          `db:"id"`
	UserID         string          `db:"user_id"`
	SpiderID       string          `db:"spider_id"`
	SpiderName     string          `db:"spider_name"`
	Name           sql.NullString  `db:"name"`
	Cron           string          `db:"cron"`
	Timezone       string          `db:"timezone"`
	Arguments      json.RawMessage `db:"arguments"`
	Enabled        bool            `db:"enabled"`
	TimeoutSeconds sql.NullInt32   `db:"timeout_seconds"`
	NoOverlap      bool            `db:"no_overlap"`
	Priority       int             `db:"priority"`
	NextRunAt      sql.NullTime    `db:"next_run_at"`
	LastRunAt      sql.NullTime    `db:"last_run_at"`
	CreatedAt      time.Time       `db:"created_at"`
	UpdatedAt      time.Time       `db:"updated_at"`
}

func (r scheduleRow) toSchedule() scrapethis.Schedule {
	s := scrapethis.Schedule{
		ID:         r.ID,
		UserID:     r.UserID,
		SpiderID:   r.SpiderID,
		SpiderName: r.SpiderName,
		Name:       nullString(r.Name),
		Cron:       r.Cron,
		Timezone:   r.Timezone,
		Arguments:  r.Arguments,
		Enabled:    r.Enabled,
		NoOverlap:  r.NoOverlap,
		Priority:   &r.Priority,
		NextRunAt:  nullTime(r.NextRunAt),
		LastRunAt:  nullTime(r.LastRunAt),
		CreatedAt:  r.CreatedAt.UTC(),
		UpdatedAt:  r.UpdatedAt.UTC(),
	}
	if r.TimeoutSeconds.Valid {
		v := int(r.TimeoutSeconds.Int32)
		s.TimeoutSeconds = &v
	}
	return s
}

// scheduleColumns are selected from schedules sc joined to spiders s.
const scheduleColumns = `sc.id, sc.user_id, sc.spider_id, s.name AS spider_name, sc.name, sc.cron, sc.timezone,
	sc.arguments, sc.enabled, sc.timeout_seconds, sc.no_overlap, sc.next_run_at, sc.last_run_at,
	sc.created_at, sc.updated_at, sc.priority`

const errScheduleNotFound = "Schedule not found"

// schedulePriority is a schedule's priority to store: nil is the default.
func schedulePriority(p *int) int {
	if p == nil {
		return scrapethis.PriorityDefault
	}
	return *p
}

func scheduleArgs(a json.RawMessage) []byte {
	if len(a) == 0 {
		return []byte(`{}`)
	}
	return a
}

// CreateSchedule inserts a schedule for one of the user's live spiders, in
// one statement: a spider that is missing or not the user's inserts nothing
// and answers not-found. The caller has validated the spec and computed
// NextRunAt.
func (d *DB) CreateSchedule(ctx context.Context, sc scrapethis.Schedule) (scrapethis.Schedule, error) {
	if !canonicalID(sc.SpiderID) {
		return scrapethis.Schedule{}, scrapethis.Errorf(scrapethis.ENotFound, "Spider not found")
	}
	id, err := uuid.NewV7()
	if err != nil {
		return scrapethis.Schedule{}, fmt.Errorf("new schedule id: %w", err)
	}
	var r scheduleRow
	err = d.get(ctx, &r, `
		WITH s AS (
			SELECT id, name FROM spiders WHERE id = $2 AND user_id = $3 AND deleted_at IS NULL
		), sc AS (
			INSERT INTO schedules (id, user_id, spider_id, name, cron, timezone, arguments, enabled,
				timeout_seconds, no_overlap, next_run_at, priority)
			SELECT $1, $3, s.id, $4, $5, $6, $7, $8, $9, $10, $11, $12 FROM s
			RETURNING *
		)
		SELECT `+scheduleColumns+` FROM sc JOIN s ON s.id = sc.spider_id`,
		id.String(), sc.SpiderID, sc.UserID, sc.Name, sc.Cron, sc.Timezone, scheduleArgs(sc.Arguments),
		sc.Enabled, sc.TimeoutSeconds, sc.NoOverlap, sc.NextRunAt, schedulePriority(sc.Priority))
	if err != nil {
		err = translate(err, "Spider not found")
		if scrapethis.ErrorCode(err) == scrapethis.EInternal {
			err = fmt.Errorf("create schedule: %w", err)
		}
		return scrapethis.Schedule{}, err
	}
	return r.toSchedule(), nil
}

// getFunc runs a query for one row: (*DB).get, through prepared
// statements, or a transaction's GetContext.
type getFunc func(ctx context.Context, dest any, query string, args ...any) error

// Schedule returns the user's schedule with the id.
func (d *DB) Schedule(ctx context.Context, userID, id string) (scrapethis.Schedule, error) {
	return getSchedule(ctx, d.get, userID, id, false)
}

func getSchedule(ctx context.Context, get getFunc, userID, id string, forUpdate bool) (scrapethis.Schedule, error) {
	if !canonicalID(id) {
		return scrapethis.Schedule{}, scrapethis.Errorf(scrapethis.ENotFound, errScheduleNotFound)
	}
	query := `SELECT ` + scheduleColumns + ` FROM schedules sc JOIN spiders s ON s.id = sc.spider_id
		WHERE sc.id = $1 AND sc.user_id = $2`
	if forUpdate {
		query += ` FOR UPDATE OF sc`
	}
	var r scheduleRow
	if err := get(ctx, &r, query, id, userID); err != nil {
		err = translate(err, errScheduleNotFound)
		if scrapethis.ErrorCode(err) == scrapethis.EInternal {
			err = fmt.Errorf("read schedule: %w", err)
		}
		return scrapethis.Schedule{}, err
	}
	return r.toSchedule(), nil
}

// Schedules lists the user's schedules, newest first.
func (d *DB) Schedules(ctx context.Context, userID string) ([]scrapethis.Schedule, error) {
	var rows []scheduleRow
	err := d.sel(ctx, &rows, `SELECT `+scheduleColumns+` FROM schedules sc JOIN spiders s ON s.id = sc.spider_id
		WHERE sc.user_id = $1 ORDER BY sc.created_at DESC, sc.id DESC`, userID)
	if err != nil {
		return nil, fmt.Errorf("list schedules: %w", err)
	}
	out := make([]scrapethis.Schedule, len(rows))
	for i, r := range rows {
		out[i] = r.toSchedule()
	}
	return out, nil
}

// UpdateSchedule changes the user's schedule in a transaction: it locks the
// row, lets fn edit it (fn also recomputes NextRunAt when the timing
// changed), and writes back every editable field. An error from fn rolls
// back and is returned as it is.
func (d *DB) UpdateSchedule(ctx context.Context, userID, id string, fn func(*scrapethis.Schedule) error) (scrapethis.Schedule, error) {
	var out scrapethis.Schedule
	err := d.inTx(ctx, func(tx *sqlx.Tx) error {
		sc, err := getSchedule(ctx, tx.GetContext, userID, id, true)
		if err != nil {
			return err
		}
		if err := fn(&sc); err != nil {
			return err
		}
		var r scheduleRow
		err = tx.GetContext(ctx, &r, `
			WITH sc AS (
				UPDATE schedules SET cron = $2, timezone = $3, arguments = $4, enabled = $5,
					timeout_seconds = $6, no_overlap = $7, next_run_at = $8, priority = $9, updated_at = now()
				WHERE id = $1
				RETURNING *
			)
			SELECT `+scheduleColumns+` FROM sc JOIN spiders s ON s.id = sc.spider_id`,
			sc.ID, sc.Cron, sc.Timezone, scheduleArgs(sc.Arguments), sc.Enabled, sc.TimeoutSeconds,
			sc.NoOverlap, sc.NextRunAt, schedulePriority(sc.Priority))
		if err != nil {
			return fmt.Errorf("update schedule: %w", err)
		}
		out = r.toSchedule()
		return nil
	})
	return out, err
}

// DeleteSchedule deletes the user's schedule. Its jobs stay, with their
// schedule_id set to null by the foreign key.
func (d *DB) DeleteSchedule(ctx context.Context, userID, id string) error {
	if !canonicalID(id) {
		return scrapethis.Errorf(scrapethis.ENotFound, errScheduleNotFound)
	}
	res, err := d.exec(ctx, `DELETE FROM schedules WHERE id = $1 AND user_id = $2`, id, userID)
	if err != nil {
		return fmt.Errorf("delete schedule: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return scrapethis.Errorf(scrapethis.ENotFound, errScheduleNotFound)
	}
	return nil
}

// UpsertNamedSchedules writes static schedules, keyed by (user_id, name),
// in one transaction: all of them or none. Each must carry a Name, its
// user's id and a live spider of that user. An existing schedule keeps its
// next_run_at (and so its missed-fire catch-up) unless its cron or time
// zone changed or it was just enabled; a disabled one has none.
func (d *DB) UpsertNamedSchedules(ctx context.Context, list []scrapethis.Schedule) ([]scrapethis.Schedule, error) {
	out := make([]scrapethis.Schedule, 0, len(list))
	err := d.inTx(ctx, func(tx *sqlx.Tx) error {
		for _, sc := range list {
			if sc.Name == nil || *sc.Name == "" {
				return errors.New("upsert schedule: no name")
			}
			id, err := uuid.NewV7()
			if err != nil {
				return fmt.Errorf("new schedule id: %w", err)
			}
			var r scheduleRow
			err = tx.GetContext(ctx, &r, `
				WITH s AS (
					SELECT id, name FROM spiders WHERE id = $2 AND user_id = $3 AND deleted_at IS NULL
				), sc AS (
					INSERT INTO schedules AS cur (id, user_id, spider_id, name, cron, timezone, arguments, enabled,
						timeout_seconds, no_overlap, next_run_at)
					SELECT $1, $3, s.id, $4, $5, $6, $7, $8, $9, $10, $11 FROM s
					ON CONFLICT (user_id, name) WHERE name IS NOT NULL DO UPDATE SET
						spider_id = EXCLUDED.spider_id,
						cron = EXCLUDED.cron,
						timezone = EXCLUDED.timezone,
						arguments = EXCLUDED.arguments,
						enabled = EXCLUDED.enabled,
						timeout_seconds = EXCLUDED.timeout_seconds,
						no_overlap = EXCLUDED.no_overlap,
						next_run_at = CASE
							WHEN NOT EXCLUDED.enabled THEN NULL
							WHEN cur.enabled AND cur.next_run_at IS NOT NULL
								AND cur.cron = EXCLUDED.cron AND cur.timezone = EXCLUDED.timezone THEN cur.next_run_at
							ELSE EXCLUDED.next_run_at END,
						updated_at = now()
					WHERE (cur.spider_id, cur.cron, cur.timezone, cur.arguments, cur.enabled, cur.timeout_seconds, cur.no_overlap)
						IS DISTINCT FROM (EXCLUDED.spider_id, EXCLUDED.cron, EXCLUDED.timezone, EXCLUDED.arguments,
							EXCLUDED.enabled, EXCLUDED.timeout_seconds, EXCLUDED.no_overlap)
					RETURNING *
				)
				SELECT `+scheduleColumns+` FROM sc JOIN s ON s.id = sc.spider_id`,
				id.String(), sc.SpiderID, sc.UserID, *sc.Name, sc.Cron, sc.Timezone, scheduleArgs(sc.Arguments),
				sc.Enabled, sc.TimeoutSeconds, sc.NoOverlap, sc.NextRunAt)
			if errors.Is(err, sql.ErrNoRows) {
				// Either nothing changed, or the spider is gone: tell them apart.
				err = tx.GetContext(ctx, &r, `SELECT `+scheduleColumns+` FROM schedules sc JOIN spiders s ON s.id = sc.spider_id
					WHERE sc.user_id = $1 AND sc.name = $2 AND sc.spider_id = $3 AND s.deleted_at IS NULL`,
					sc.UserID, *sc.Name, sc.SpiderID)
				if errors.Is(err, sql.ErrNoRows) {
					return scrapethis.Errorf(scrapethis.ENotFound, "schedule %q: spider not found", *sc.Name)
				}
			}
			if err != nil {
				return fmt.Errorf("upsert schedule %q: %w", *sc.Name, err)
			}
			out = append(out, r.toSchedule())
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Fire is a scheduler's decision about one due schedule.
type Fire struct {
	// At is the fire time to start a job for; zero starts none.
	At time.Time
	// Next is when the schedule is due again; zero stops it firing until
	// its timing is changed.
	Next time.Time
}

// FireOutcome is what firing one due schedule did.
type FireOutcome struct {
	Schedule scrapethis.Schedule
	Fire     Fire
	// Job is the job started, committed and ready to enqueue; nil when
	// none was started.
	Job *scrapethis.Job
	// Skipped means no_overlap held the fire back: an earlier job of the
	// schedule is still pending or running.
	Skipped bool
	// Duplicate means a job for this fire time already existed.
	Duplicate bool
	// Err is why this schedule failed; its changes were rolled back and
	// it was moved on to its next fire time so that it cannot block others.
	Err error
}

// FireDueSchedules fires up to limit enabled schedules whose next_run_at
// has come, in one transaction. The rows are taken with FOR UPDATE SKIP
// LOCKED, so schedulers running at once share the due schedules and never
// fire one twice; UNIQUE (schedule_id, scheduled_for) is the backstop. For
// each schedule plan decides the fire time and the next one, given now;
// then the job is inserted (unless no_overlap holds it back) and
// next_run_at advanced. now is the caller's clock (the scheduler's, which
// a test may stub): it alone decides which schedules are due and, through
// plan, their fire times; created_at and the like keep the database's
// clock. Jobs are returned only once committed: enqueue them after, never
// before.
func (d *DB) FireDueSchedules(ctx context.Context, now time.Time, limit int, plan func(sc scrapethis.Schedule, now time.Time) Fire) ([]FireOutcome, error) {
	if now.IsZero() {
		return nil, errors.New("fire schedules: no time given")
	}
	var out []FireOutcome
	err := d.inTx(ctx, func(tx *sqlx.Tx) error {
		out = out[:0]
		var rows []scheduleRow
		err := tx.SelectContext(ctx, &rows, `SELECT `+scheduleColumns+` FROM schedules sc JOIN spiders s ON s.id = sc.spider_id
			WHERE sc.enabled AND sc.next_run_at <= $1
			ORDER BY sc.next_run_at LIMIT $2
			FOR UPDATE OF sc SKIP LOCKED`, now, limit)
		if err != nil {
			return fmt.Errorf("fire schedules: select due: %w", err)
		}
		for _, r := range rows {
			sc := r.toSchedule()
			o := FireOutcome{Schedule: sc, Fire: plan(sc, now)}
			if _, err := tx.ExecContext(ctx, `SAVEPOINT fire`); err != nil {
				return fmt.Errorf("fire schedules: %w", err)
			}
			if err := fireOne(ctx, tx, &o, d.userMax); err != nil {
				o.Job, o.Skipped, o.Duplicate, o.Err = nil, false, false, err
				if _, err := tx.ExecContext(ctx, `ROLLBACK TO SAVEPOINT fire`); err != nil {
					return fmt.Errorf("fire schedules: %w", err)
				}
				// Move it on past this fire time, or it would fail again at every pass.
				if err := advanceSchedule(ctx, tx, sc.ID, o.Fire.Next, nil); err != nil {
					return err
				}
			}
			if _, err := tx.ExecContext(ctx, `RELEASE SAVEPOINT fire`); err != nil {
				return fmt.Errorf("fire schedules: %w", err)
			}
			out = append(out, o)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// fireOne starts the job of one locked due schedule, unless no_overlap
// holds it back, and advances the schedule.
func fireOne(ctx context.Context, tx *sqlx.Tx, o *FireOutcome, userMax int) error {
	sc := o.Schedule
	if o.Fire.At.IsZero() {
		return advanceSchedule(ctx, tx, sc.ID, o.Fire.Next, nil)
	}
	if sc.NoOverlap {
		var active bool
		err := tx.GetContext(ctx, &active, `SELECT EXISTS (SELECT 1 FROM jobs
			WHERE schedule_id = $1 AND status IN ('pending', 'running'))`, sc.ID)
		if err != nil {
			return fmt.Errorf("fire schedule %s: check active jobs: %w", sc.ID, err)
		}
		if active {
			o.Skipped = true
			return advanceSchedule(ctx, tx, sc.ID, o.Fire.Next, nil)
		}
	}
	at := o.Fire.At
	jobs, errs, err := insertJobs(ctx, tx.SelectContext, []scrapethis.NewJob{{
		UserID: sc.UserID, SpiderID: sc.SpiderID, Arguments: sc.Arguments, TimeoutSeconds: sc.TimeoutSeconds,
		ScheduleID: &sc.ID, ScheduledFor: &at, Priority: sc.Priority,
	}}, userMax)
	switch {
	case err != nil:
		return fmt.Errorf("fire schedule %s: insert job: %w", sc.ID, err)
	case errs[0] != nil:
		// A job for this fire time exists already (or the spider is gone).
		o.Duplicate = true
		return advanceSchedule(ctx, tx, sc.ID, o.Fire.Next, nil)
	}
	job := jobs[0]
	o.Job = &job
	return advanceSchedule(ctx, tx, sc.ID, o.Fire.Next, &o.Fire.At)
}

// advanceSchedule sets next_run_at (null when next is zero) and, when a
// job was started, last_run_at.
func advanceSchedule(ctx context.Context, tx *sqlx.Tx, id string, next time.Time, ran *time.Time) error {
	var nextArg *time.Time
	if !next.IsZero() {
		nextArg = &next
	}
	_, err := tx.ExecContext(ctx, `UPDATE schedules SET next_run_at = $2, last_run_at = COALESCE($3, last_run_at)
		WHERE id = $1`, id, nextArg, ran)
	if err != nil {
		return fmt.Errorf("advance schedule %s: %w", id, err)
	}
	return nil
}
