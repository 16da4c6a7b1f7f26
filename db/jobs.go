package db

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/scrapethis/scrapethis"
)

// MaxListLimit is the most jobs one listing returns; larger limits are clamped.
const MaxListLimit = 1000

// jobRow is a job as SQL sees it; toJob converts it to the domain type.
type jobRow struct {
	ID                string          `db:"id"`
	UserID            string          `db:"user_id"`
	SpiderID          string          `db:"spider_id"`
	SpiderName        string          `db:"spider_name"`
	SpiderRepoPath    string          `db:"spider_repo_path"`
	Status            string          `db:"status"`
	Arguments         json.RawMessage `db:"arguments"`
	TimeoutSeconds    sql.NullInt32   `db:"timeout_seconds"`
	ItemsScraped      int64           `db:"items_scraped"`
	Error             sql.NullString  `db:"error"`
	ScheduleID        sql.NullString  `db:"schedule_id"`
	ScheduledFor      sql.NullTime    `db:"scheduled_for"`
	WorkerID          sql.NullString  `db:"worker_id"`
	Attempts          int             `db:"attempts"`
	CancelRequestedAt sql.NullTime    `db:"cancel_requested_at"`
	CreatedAt         time.Time       `db:"created_at"`
	StartedAt         sql.NullTime    `db:"started_at"`
	FinishedAt        sql.NullTime    `db:"finished_at"`
	PurgedAt          sql.NullTime    `db:"purged_at"`

	VersionID             sql.NullString  `db:"version_id"`
	VersionLabel          sql.NullString  `db:"version_label"`
	Project               sql.NullString  `db:"project"`
	VersionSHA256         sql.NullString  `db:"version_sha256"`
	VersionContentType    sql.NullString  `db:"version_content_type"`
	VersionKind           sql.NullString  `db:"version_kind"`
	VersionSettingsModule sql.NullString  `db:"version_settings_module"`
	VersionPath           sql.NullString  `db:"version_path"`
	Settings              json.RawMessage `db:"settings"`
	MemoryMB              sql.NullInt32   `db:"memory_mb"`
	Stats                 []byte          `db:"stats"`
	Priority              int             `db:"priority"`
	Held                  bool            `db:"held"`
	SpiderMaxRunning      sql.NullInt32   `db:"spider_max_running"`
}

func (r jobRow) toJob() scrapethis.Job {
	j := scrapethis.Job{
		ID:             r.ID,
		UserID:         r.UserID,
		SpiderID:       r.SpiderID,
		SpiderName:     r.SpiderName,
		SpiderRepoPath: r.SpiderRepoPath,
		Status:         scrapethis.Status(r.Status),
		Arguments:      r.Arguments,
		ItemsScraped:   r.ItemsScraped,
		Attempts:       r.Attempts,
		CreatedAt:      r.CreatedAt,
		Priority:       r.Priority,
		Held:           r.Held,
	}
	if r.SpiderMaxRunning.Valid {
		v := int(r.SpiderMaxRunning.Int32)
		j.SpiderMaxRunning = &v
	}
	if r.TimeoutSeconds.Valid {
		v := int(r.TimeoutSeconds.Int32)
		j.TimeoutSeconds = &v
	}
	j.Error = nullString(r.Error)
	j.ScheduleID = nullString(r.ScheduleID)
	j.WorkerID = nullString(r.WorkerID)
	j.ScheduledFor = nullTime(r.ScheduledFor)
	j.CancelRequestedAt = nullTime(r.CancelRequestedAt)
	j.StartedAt = nullTime(r.StartedAt)
	j.FinishedAt = nullTime(r.FinishedAt)
	j.PurgedAt = nullTime(r.PurgedAt)
	j.Settings = r.Settings
	if r.MemoryMB.Valid {
		v := int(r.MemoryMB.Int32)
		j.MemoryMB = &v
	}
	if len(r.Stats) > 0 {
		j.Stats = json.RawMessage(r.Stats)
	}
	if r.VersionID.Valid {
		j.Version = &scrapethis.JobVersion{
			ID: r.VersionID.String, Label: r.VersionLabel.String, Project: r.Project.String,
			SHA256: r.VersionSHA256.String, ContentType: r.VersionContentType.String, Kind: r.VersionKind.String,
			SettingsModule: r.VersionSettingsModule.String, Path: r.VersionPath.String,
		}
	}
	return j
}

func nullString(s sql.NullString) *string {
	if !s.Valid {
		return nil
	}
	return &s.String
}

func nullTime(t sql.NullTime) *time.Time {
	if !t.Valid {
		return nil
	}
	v := t.Time.UTC()
	return &v
}

// jobColumns are selected from jobs j joined to spiders s.
const jobColumns = `j.id, j.user_id, j.spider_id, s.name AS spider_name, s.repo_path AS spider_repo_path,
	j.status, j.arguments, j.timeout_seconds, j.items_scraped, j.error, j.schedule_id, j.scheduled_for,
	j.worker_id, j.attempts, j.cancel_requested_at, j.created_at, j.started_at, j.finished_at,
	j.version_id, v.label AS version_label, p.name AS project, v.sha256 AS version_sha256,
	v.content_type AS version_content_type, v.kind AS version_kind, v.settings_module AS version_settings_module,
	v.spiders->>s.name AS version_path, j.settings, j.memory_mb, j.stats,
	j.priority, j.held, s.max_running AS spider_max_running, j.purged_at`

// jobJoins follow "FROM jobs j" (or a CTE j of jobs rows) for jobColumns.
const jobJoins = `JOIN spiders s ON s.id = j.spider_id
	LEFT JOIN versions v ON v.id = j.version_id LEFT JOIN projects p ON p.id = v.project_id`

// Job returns the user's job with the id.
func (d *DB) Job(ctx context.Context, userID, id string) (scrapethis.Job, error) {
	if !canonicalID(id) {
		return scrapethis.Job{}, scrapethis.Errorf(scrapethis.ENotFound, "Job not found")
	}
	var r jobRow
	err := d.get(ctx, &r, `SELECT `+jobColumns+` FROM jobs j `+jobJoins+`
		WHERE j.id = $1 AND j.user_id = $2`, id, userID)
	if err != nil {
		return scrapethis.Job{}, translate(err, "Job not found")
	}
	return r.toJob(), nil
}

// JobByID returns a job whoever owns it; workers use it.
func (d *DB) JobByID(ctx context.Context, id string) (scrapethis.Job, error) {
	var r jobRow
	err := d.get(ctx, &r, `SELECT `+jobColumns+` FROM jobs j `+jobJoins+`
		WHERE j.id = $1`, id)
	if err != nil {
		return scrapethis.Job{}, translate(err, "Job not found")
	}
	return r.toJob(), nil
}

// Jobs lists jobs newest first. Every filter walks an index on
// (user_id[, status | spider_id], created_at DESC, id DESC), so a page costs
// the same at any table size.
func (d *DB) Jobs(ctx context.Context, f scrapethis.JobFilter) ([]scrapethis.Job, error) {
	where := []string{"j.user_id = $1"}
	args := []any{f.UserID}
	if f.Status != "" {
		args = append(args, string(f.Status))
		where = append(where, fmt.Sprintf("j.status = $%d", len(args)))
	}
	if f.SpiderID != "" {
		args = append(args, f.SpiderID)
		where = append(where, fmt.Sprintf("j.spider_id = $%d", len(args)))
	}
	if f.Before != nil {
		args = append(args, f.Before.CreatedAt, f.Before.ID)
		where = append(where, fmt.Sprintf("(j.created_at, j.id) < ($%d, $%d)", len(args)-1, len(args)))
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 50
	}
	limit = min(limit, MaxListLimit)
	args = append(args, limit)
	query := `SELECT ` + jobColumns + ` FROM jobs j ` + jobJoins + `
		WHERE ` + strings.Join(where, " AND ") + fmt.Sprintf(` ORDER BY j.created_at DESC, j.id DESC LIMIT $%d`, len(args))
	var rows []jobRow
	if err := d.sel(ctx, &rows, query, args...); err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	out := make([]scrapethis.Job, len(rows))
	for i, r := range rows {
		out[i] = r.toJob()
	}
	return out, nil
}

// CancelJob records the user's cancel of a job durably. A pending job
// becomes cancelled at once; a running one keeps running with
// cancel_requested_at set until its worker stops the spider. The job is
// returned as it stands after; a job already final is returned unchanged.
func (d *DB) CancelJob(ctx context.Context, userID, id string) (scrapethis.Job, error) {
	if !canonicalID(id) {
		return scrapethis.Job{}, scrapethis.Errorf(scrapethis.ENotFound, "Job not found")
	}
	var n int
	err := d.get(ctx, &n, `
		WITH done AS (
			UPDATE jobs SET
				status = CASE WHEN status = 'pending' THEN 'cancelled' ELSE status END,
				error = CASE WHEN status = 'pending' THEN $3 ELSE error END,
				finished_at = CASE WHEN status = 'pending' THEN now() ELSE finished_at END,
				cancel_requested_at = COALESCE(cancel_requested_at, now())
			WHERE id = $1 AND user_id = $2 AND status IN ('pending', 'running')
			RETURNING id, user_id, status
		), `+outbox+`
		SELECT count(*) FROM done`, id, userID, scrapethis.ReasonCancelled)
	if err != nil {
		return scrapethis.Job{}, fmt.Errorf("cancel job: %w", err)
	}
	return d.Job(ctx, userID, id)
}

// PendingJobs pages through queued pending jobs (not held back by a cap)
// created before olderThan, in (created_at, id) order after the cursor;
// the reconciler walks it.
func (d *DB) PendingJobs(ctx context.Context, after scrapethis.JobCursor, olderThan time.Time, limit int) ([]scrapethis.Job, error) {
	var rows []jobRow
	err := d.sel(ctx, &rows, `SELECT `+jobColumns+` FROM jobs j `+jobJoins+`
		WHERE j.status = 'pending' AND NOT j.held AND j.created_at < $1 AND (j.created_at, j.id) > ($2, $3)
		ORDER BY j.created_at, j.id LIMIT $4`, olderThan, after.CreatedAt, after.ID, limit)
	if err != nil {
		return nil, fmt.Errorf("list pending jobs: %w", err)
	}
	out := make([]scrapethis.Job, len(rows))
	for i, r := range rows {
		out[i] = r.toJob()
	}
	return out, nil
}

// StartJob moves a pending, uncancelled job to running for the worker. It
// reports false, with the job as it stands, when the job is not pending (a
// duplicate delivery, a cancel, a final job) or is held back by a cap (the
// job comes back Held: see fairshare.go): then nothing must run. A job no
// cap applies to starts in one statement. The jobs that holding a job back
// let go are left to the reconciler: workers use StartJobLetGo.
func (d *DB) StartJob(ctx context.Context, id, workerID string) (scrapethis.Job, bool, error) {
	j, ok, _, err := d.StartJobLetGo(ctx, id, workerID)
	return j, ok, err
}

// StartJobLetGo is StartJob that also returns the jobs its decision let go
// (a job held back gives up its place in its caps' queues): enqueue them.
func (d *DB) StartJobLetGo(ctx context.Context, id, workerID string) (scrapethis.Job, bool, []scrapethis.Job, error) {
	var r jobRow
	var err error
	if d.userMax > 0 {
		// Caps at or above the live workers' slots cannot be exceeded (see
		// scrapethis_start_capped): such a start is one statement, which
		// reads the slots and starts the job in one snapshot.
		err = d.get(ctx, &r, `
		WITH f AS (
			SELECT coalesce(sum(w.concurrency), 0) AS slots FROM workers w WHERE w.heartbeat_at > now() - interval '15 seconds'
		), j AS (
			UPDATE jobs SET status = 'running', worker_id = $2, started_at = now(), attempts = attempts + 1
			FROM f
			WHERE jobs.id = $1 AND jobs.status = 'pending' AND jobs.cancel_requested_at IS NULL AND NOT jobs.held
				AND f.slots > 0 AND $3 >= f.slots
				AND coalesce((SELECT c.max_running FROM spiders c WHERE c.id = jobs.spider_id) >= f.slots, true)
			RETURNING jobs.*
		)
		SELECT `+jobColumns+` FROM j `+jobJoins, id, workerID, d.userMax)
	} else {
		err = d.get(ctx, &r, `
		WITH j AS (
			UPDATE jobs SET status = 'running', worker_id = $2, started_at = now(), attempts = attempts + 1
			WHERE id = $1 AND status = 'pending' AND cancel_requested_at IS NULL AND NOT held
				AND (SELECT c.max_running FROM spiders c WHERE c.id = jobs.spider_id) IS NULL
			RETURNING *
		)
		SELECT `+jobColumns+` FROM j `+jobJoins, id, workerID)
	}
	if errors.Is(err, sql.ErrNoRows) {
		// Not pending, or a cap may bind: the capped start decides.
		return d.startCapped(ctx, id, workerID)
	}
	if err != nil {
		return scrapethis.Job{}, false, nil, fmt.Errorf("start job: %w", err)
	}
	return r.toJob(), true, nil, nil
}

// FinishJob ends the worker's running job with a final status; a job whose
// cancel was requested ends cancelled whatever its spider did. A job that
// is no longer the worker's or no longer running is left as it is and
// false is returned: a final status is never overwritten.
func (d *DB) FinishJob(ctx context.Context, id, workerID string, status scrapethis.Status, reason *string) (bool, error) {
	var n int
	err := d.get(ctx, &n, `
		WITH done AS (
			UPDATE jobs SET
				status = CASE WHEN cancel_requested_at IS NULL THEN $3 ELSE 'cancelled' END,
				error = CASE WHEN cancel_requested_at IS NULL THEN $4 ELSE $5 END,
				finished_at = now()
			WHERE id = $1 AND worker_id = $2 AND status = 'running'
			RETURNING id, user_id, status
		), `+outbox+`
		SELECT count(*) FROM done`, id, workerID, string(status), reason, scrapethis.ReasonCancelled)
	if err != nil {
		return false, fmt.Errorf("finish job: %w", err)
	}
	return n == 1, nil
}

// SetJobStats stores the latest Scrapy stats of the worker's running job.
func (d *DB) SetJobStats(ctx context.Context, id, workerID string, stats json.RawMessage) error {
	res, err := d.exec(ctx, `UPDATE jobs SET stats = $3 WHERE id = $1 AND worker_id = $2 AND status = 'running'`, id, workerID, []byte(stats))
	if err != nil {
		return fmt.Errorf("store stats: %w", translate(err, "Job not found"))
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNotOwner
	}
	return nil
}

// HandBackJob returns the worker's running job to pending so that another
// worker runs it again from the start: the attempt's items are dropped. A
// job whose cancel was requested is cancelled instead.
func (d *DB) HandBackJob(ctx context.Context, id, workerID string) (scrapethis.Status, error) {
	var status scrapethis.Status
	err := d.inTx(ctx, func(tx *sqlx.Tx) error {
		err := tx.QueryRowContext(ctx, `
			WITH done AS (
			UPDATE jobs SET
				status = CASE WHEN cancel_requested_at IS NULL THEN 'pending' ELSE 'cancelled' END,
				error = CASE WHEN cancel_requested_at IS NULL THEN NULL ELSE $3 END,
				finished_at = CASE WHEN cancel_requested_at IS NULL THEN NULL ELSE now() END,
				worker_id = CASE WHEN cancel_requested_at IS NULL THEN NULL ELSE worker_id END,
				started_at = CASE WHEN cancel_requested_at IS NULL THEN NULL ELSE started_at END,
				items_scraped = CASE WHEN cancel_requested_at IS NULL THEN 0 ELSE items_scraped END,
				stats = CASE WHEN cancel_requested_at IS NULL THEN NULL ELSE stats END
			WHERE id = $1 AND worker_id = $2 AND status = 'running'
			RETURNING id, user_id, status
			), `+outbox+`
			SELECT status FROM done`, id, workerID, scrapethis.ReasonCancelled).Scan(&status)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("hand back job: %w", err)
		}
		if status == scrapethis.StatusPending {
			if _, err := tx.ExecContext(ctx, `DELETE FROM job_items WHERE job_id = $1`, id); err != nil {
				return fmt.Errorf("hand back job: drop items: %w", err)
			}
		}
		return nil
	})
	return status, err
}

// JobControl is what a worker needs to know about one of its running jobs.
type JobControl struct {
	ID              string         `db:"id"`
	Status          string         `db:"status"`
	WorkerID        sql.NullString `db:"worker_id"`
	CancelRequested bool           `db:"cancel_requested"`
}

// JobControls returns the control state of the jobs with the ids, one
// query for all of a worker's running jobs.
func (d *DB) JobControls(ctx context.Context, ids []string) ([]JobControl, error) {
	var out []JobControl
	err := d.sel(ctx, &out, `SELECT id, status, worker_id, cancel_requested_at IS NOT NULL AS cancel_requested
		FROM jobs WHERE id = ANY($1)`, pq.Array(ids))
	if err != nil {
		return nil, fmt.Errorf("job controls: %w", err)
	}
	return out, nil
}

// ErrNotOwner means the job is no longer running on this worker (it was
// reaped or finished elsewhere): stop its spider.
var ErrNotOwner = errors.New("job is no longer running on this worker")

// copyMin is the batch size from which COPY beats one multi-row INSERT.
const copyMin = 256

// copyMinBytes: a batch this big in bytes goes by COPY whatever its count.
// The one-statement path sends the batch as one array literal (escaped,
// so about twice its size, then copied again into the driver's buffer);
// COPY sends row by row, so big items cost about their own size once.
const copyMinBytes = 1 << 20

func totalLen(items []string) int {
	n := 0
	for _, it := range items {
		n += len(it)
	}
	return n
}

// AppendItems stores a batch of items of the worker's running job, numbered
// from firstSeq, and adds them to items_scraped in the same transaction: a
// small batch in one statement, a large one with COPY. Retrying a batch
// whose commit did succeed is harmless.
func (d *DB) AppendItems(ctx context.Context, jobID, workerID string, firstSeq int64, items []string) error {
	if len(items) == 0 {
		return nil
	}
	var err error
	if len(items) < copyMin && totalLen(items) < copyMinBytes {
		var res sql.Result
		res, err = d.exec(ctx, `
			WITH up AS (
				UPDATE jobs SET items_scraped = items_scraped + $4
				WHERE id = $1 AND worker_id = $2 AND status = 'running'
				RETURNING id
			)
			INSERT INTO job_items (job_id, seq, data)
			SELECT up.id, $3 + t.i - 1, t.d::json FROM up, unnest($5::text[]) WITH ORDINALITY AS t(d, i)`,
			jobID, workerID, firstSeq, len(items), pq.Array(items))
		if err == nil {
			if n, _ := res.RowsAffected(); n == 0 {
				return ErrNotOwner
			}
		}
	} else {
		err = d.inTx(ctx, func(tx *sqlx.Tx) error {
			res, err := tx.ExecContext(ctx, `UPDATE jobs SET items_scraped = items_scraped + $3
				WHERE id = $1 AND worker_id = $2 AND status = 'running'`, jobID, workerID, len(items))
			if err != nil {
				return fmt.Errorf("count items: %w", err)
			}
			if n, _ := res.RowsAffected(); n == 0 {
				return ErrNotOwner
			}
			return copyRows(ctx, tx, "job_items", []string{"job_id", "seq", "data"}, len(items), func(i int) []any {
				return []any{jobID, firstSeq + int64(i), items[i]}
			})
		})
	}
	if isUniqueViolation(err) {
		return nil // this batch was committed by an earlier try
	}
	if err != nil && !errors.Is(err, ErrNotOwner) {
		return fmt.Errorf("store items: %w", err)
	}
	return err
}

// AppendLogs stores a batch of log lines of a job, numbered from firstSeq.
func (d *DB) AppendLogs(ctx context.Context, jobID string, firstSeq int64, lines []string) error {
	if len(lines) == 0 {
		return nil
	}
	var err error
	if len(lines) < copyMin {
		_, err = d.exec(ctx, `INSERT INTO job_logs (job_id, seq, line)
			SELECT $1, $2 + t.i - 1, t.l FROM unnest($3::text[]) WITH ORDINALITY AS t(l, i)`,
			jobID, firstSeq, pq.Array(lines))
	} else {
		err = d.inTx(ctx, func(tx *sqlx.Tx) error {
			return copyRows(ctx, tx, "job_logs", []string{"job_id", "seq", "line"}, len(lines), func(i int) []any {
				return []any{jobID, firstSeq + int64(i), lines[i]}
			})
		})
	}
	if isUniqueViolation(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("store log lines: %w", err)
	}
	return nil
}

// LogSeq returns the next free log sequence number of a job, so that a
// re-run appends after the earlier attempt's lines.
func (d *DB) LogSeq(ctx context.Context, jobID string) (int64, error) {
	var n int64
	err := d.get(ctx, &n, `SELECT COALESCE(max(seq) + 1, 0) FROM job_logs WHERE job_id = $1`, jobID)
	if err != nil {
		return 0, fmt.Errorf("log seq: %w", err)
	}
	return n, nil
}

func copyRows(ctx context.Context, tx *sqlx.Tx, table string, cols []string, n int, row func(i int) []any) error {
	stmt, err := tx.PrepareContext(ctx, pq.CopyIn(table, cols...))
	if err != nil {
		return fmt.Errorf("copy into %s: %w", table, err)
	}
	for i := 0; i < n; i++ {
		if _, err := stmt.ExecContext(ctx, row(i)...); err != nil {
			stmt.Close()
			return fmt.Errorf("copy into %s: %w", table, err)
		}
	}
	if _, err := stmt.ExecContext(ctx); err != nil {
		stmt.Close()
		return fmt.Errorf("copy into %s: %w", table, err)
	}
	if err := stmt.Close(); err != nil {
		return fmt.Errorf("copy into %s: %w", table, err)
	}
	return nil
}

func isUniqueViolation(err error) bool {
	var pqErr *pq.Error
	return errors.As(err, &pqErr) && pqErr.Code == "23505"
}

// EachItem calls fn with each stored item of a job in scrape order,
// streaming rows rather than loading them all.
func (d *DB) EachItem(ctx context.Context, jobID string, fn func(data []byte) error) error {
	rows, err := d.query(ctx, `SELECT data FROM job_items WHERE job_id = $1 ORDER BY seq`, jobID)
	if err != nil {
		return fmt.Errorf("read items: %w", err)
	}
	defer rows.Close()
	var data sql.RawBytes
	for rows.Next() {
		if err := rows.Scan(&data); err != nil {
			return fmt.Errorf("read items: %w", err)
		}
		if err := fn(data); err != nil {
			return err
		}
	}
	return rows.Err()
}

// Item is one stored item of a job.
type Item struct {
	Seq  int64  `db:"seq"`
	Data []byte `db:"data"`
}

// ItemPage returns the job's items after seq afterSeq, in scrape order: at
// most maxRows, and no more than about maxBytes (always at least one item),
// so that a stream holds a connection only while it reads a page and
// holds a bounded page in memory while its client reads.
func (d *DB) ItemPage(ctx context.Context, jobID string, afterSeq int64, maxRows int, maxBytes int64) ([]Item, error) {
	var out []Item
	err := d.sel(ctx, &out, `SELECT seq, data FROM (
			SELECT seq, data, sum(octet_length(data::text)) OVER (ORDER BY seq) - octet_length(data::text) AS before
			FROM (SELECT seq, data FROM job_items WHERE job_id = $1 AND seq > $2 ORDER BY seq LIMIT $3) p
		) t WHERE before < $4 ORDER BY seq`, jobID, afterSeq, maxRows, maxBytes)
	if err != nil {
		return nil, fmt.Errorf("read items: %w", err)
	}
	return out, nil
}

// LogHead is how far a job's log goes, and whether the job is final.
type LogHead struct {
	JobID  string `db:"id"`
	Status string `db:"status"`
	Last   int64  `db:"last"`
}

// LogHeads returns the heads of many jobs' logs in one query: what a
// shared follower polls for every followed log at once.
func (d *DB) LogHeads(ctx context.Context, jobIDs []string) ([]LogHead, error) {
	var out []LogHead
	err := d.sel(ctx, &out, `SELECT j.id, j.status,
			COALESCE((SELECT max(l.seq) FROM job_logs l WHERE l.job_id = j.id), -1) AS last
		FROM jobs j WHERE j.id = ANY($1)`, pq.Array(jobIDs))
	if err != nil {
		return nil, fmt.Errorf("log heads: %w", err)
	}
	return out, nil
}

// LogLine is one line of a job's log.
type LogLine struct {
	Seq  int64  `db:"seq"`
	Line string `db:"line"`
}

// Logs returns up to limit log lines of a job after seq afterSeq.
func (d *DB) Logs(ctx context.Context, jobID string, afterSeq int64, limit int) ([]LogLine, error) {
	var out []LogLine
	err := d.sel(ctx, &out, `SELECT seq, line FROM job_logs WHERE job_id = $1 AND seq > $2 ORDER BY seq LIMIT $3`,
		jobID, afterSeq, limit)
	if err != nil {
		return nil, fmt.Errorf("read logs: %w", err)
	}
	return out, nil
}

// Heartbeat records that the worker is alive, and the jobs whose tasks it
// holds.
func (d *DB) Heartbeat(ctx context.Context, workerID, hostname string, pid, concurrency int, holding []string) error {
	if holding == nil {
		holding = []string{}
	}
	_, err := d.exec(ctx, `
		INSERT INTO workers (id, hostname, pid, concurrency, holding) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (id) DO UPDATE SET heartbeat_at = now(), holding = EXCLUDED.holding`, workerID, hostname, pid, concurrency, pq.Array(holding))
	if err != nil {
		return fmt.Errorf("heartbeat: %w", err)
	}
	return nil
}

// HeldJobs returns the jobs whose tasks live workers (those that beat
// within liveWithin) say they hold.
func (d *DB) HeldJobs(ctx context.Context, liveWithin time.Duration) (map[string]bool, error) {
	var ids []string
	err := d.sel(ctx, &ids, `SELECT DISTINCT unnest(holding)::text FROM workers
		WHERE heartbeat_at > now() - make_interval(secs => $1)`, liveWithin.Seconds())
	if err != nil {
		return nil, fmt.Errorf("held jobs: %w", err)
	}
	out := make(map[string]bool, len(ids))
	for _, id := range ids {
		out[id] = true
	}
	return out, nil
}

// RemoveWorker forgets a worker that stopped cleanly.
func (d *DB) RemoveWorker(ctx context.Context, workerID string) error {
	_, err := d.exec(ctx, `DELETE FROM workers WHERE id = $1`, workerID)
	if err != nil {
		return fmt.Errorf("remove worker: %w", err)
	}
	return nil
}

// LostJob is a job reaped because its worker died.
type LostJob struct {
	ID     string `db:"id"`
	UserID string `db:"user_id"`
	Spider string `db:"spider"`
	Status string `db:"status"`
}

// ReapLostJobs ends every running job whose worker has not beaten for
// staleAfter: in error with reason "worker lost", or cancelled if a cancel
// was requested. It returns the jobs it ended.
func (d *DB) ReapLostJobs(ctx context.Context, staleAfter time.Duration) ([]LostJob, error) {
	var ids []LostJob
	err := d.sel(ctx, &ids, `
		WITH done AS (
			UPDATE jobs j SET
				status = CASE WHEN cancel_requested_at IS NULL THEN 'error' ELSE 'cancelled' END,
				error = CASE WHEN cancel_requested_at IS NULL THEN $2 ELSE $3 END,
				finished_at = now()
			WHERE j.status = 'running' AND NOT EXISTS (
				SELECT 1 FROM workers w WHERE w.id = j.worker_id AND w.heartbeat_at > now() - make_interval(secs => $1))
			RETURNING j.id, j.user_id, j.status, (SELECT name FROM spiders s WHERE s.id = j.spider_id) AS spider
		), `+outbox+`
		SELECT id, user_id, status, spider FROM done`, staleAfter.Seconds(), scrapethis.ReasonWorkerLost, scrapethis.ReasonCancelled)
	if err != nil {
		return nil, fmt.Errorf("reap lost jobs: %w", err)
	}
	if _, err := d.exec(ctx, `DELETE FROM workers WHERE heartbeat_at < now() - interval '1 hour'`); err != nil {
		return ids, fmt.Errorf("forget dead workers: %w", err)
	}
	return ids, nil
}
