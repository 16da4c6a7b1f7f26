package db

import (
	"context"
	"database/sql"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/google/uuid"
	"github.com/lib/pq"

	"github.com/scrapethis/scrapethis"
)

// CreateJobs inserts many pending jobs in one statement and one commit.
// Each job's spider must be one of its user's live spiders; a job whose
// spider is not gets a not-found error in its slot and is not inserted.
// Ids are UUIDv7, taken in order, so jobs created in one batch still list
// in the order they were asked for.
//
// A job that a cap may hold back (see fairshare.go) comes back Held unless
// the admission right after the insert let it go; enqueue only the jobs
// that are not Held. That admission may let go, best first, older held
// jobs instead: CreateJobsLetGo returns those to enqueue as well, and
// CreateJobs leaves them to the reconciler.
func (d *DB) CreateJobs(ctx context.Context, jobs []scrapethis.NewJob) ([]scrapethis.Job, []error, error) {
	out, errs, _, err := d.CreateJobsLetGo(ctx, jobs)
	return out, errs, err
}

// CreateJobsLetGo is CreateJobs that also returns the jobs other than
// these that the admission let go: enqueue them too.
func (d *DB) CreateJobsLetGo(ctx context.Context, jobs []scrapethis.NewJob) ([]scrapethis.Job, []error, []scrapethis.Job, error) {
	out, errs, err := insertJobs(ctx, d.sel, jobs, d.userMax)
	if err != nil {
		return nil, nil, nil, err
	}
	// A failed admission leaves the jobs committed and held: the
	// reconciler admits them.
	others, _ := d.admitCreated(ctx, out, errs)
	return out, errs, others, nil
}

// CreateJob inserts one pending job (see CreateJobs).
func (d *DB) CreateJob(ctx context.Context, nj scrapethis.NewJob) (scrapethis.Job, error) {
	jobs, errs, err := d.CreateJobs(ctx, []scrapethis.NewJob{nj})
	if err != nil {
		return scrapethis.Job{}, err
	}
	return jobs[0], errs[0]
}

// selectFunc runs a query and scans all its rows: (*DB).sel, through
// prepared statements, or a transaction's SelectContext.
type selectFunc func(ctx context.Context, dest any, query string, args ...any) error

// insertJobs is the one statement that creates jobs, for the API and the
// scheduler alike. A job of a schedule whose fire time already has a job
// is not inserted (UNIQUE (schedule_id, scheduled_for)); its slot, like a
// job whose spider is not its user's live spider, gets a not-found error.
//
// A job that a cap may hold back (userMax > 0, or its spider has
// max_running) is inserted held when its caps' queues are full.
func insertJobs(ctx context.Context, sel selectFunc, jobs []scrapethis.NewJob, userMax int) ([]scrapethis.Job, []error, error) {
	n := len(jobs)
	ids := make([]string, n)
	users := make([]string, n)
	spiders := make([]string, n)
	args := make([]string, n)
	timeouts := make([]sql.NullInt64, n)
	schedules := make([]sql.NullString, n)
	fireTimes := make([]pq.NullTime, n)
	versions := make([]string, n)
	settings := make([]string, n)
	memory := make([]sql.NullInt64, n)
	priorities := make([]int64, n)
	idemKeys := make([]string, n)
	idemHashes := make([][]byte, n)
	errs := make([]error, n)
	taken := map[[2]string]bool{}
	for i, nj := range jobs {
		id, err := uuid.NewV7()
		if err != nil {
			return nil, nil, fmt.Errorf("new job id: %w", err)
		}
		ids[i] = id.String()
		users[i] = nj.UserID
		spiders[i] = nj.SpiderID
		if !canonicalID(nj.SpiderID) {
			spiders[i] = uuid.Nil.String()
		}
		args[i] = "{}"
		if len(nj.Arguments) > 0 {
			args[i] = string(nj.Arguments)
		}
		if nj.TimeoutSeconds != nil {
			timeouts[i] = sql.NullInt64{Int64: int64(*nj.TimeoutSeconds), Valid: true}
		}
		if nj.ScheduleID != nil {
			schedules[i] = sql.NullString{String: *nj.ScheduleID, Valid: true}
		}
		if nj.ScheduledFor != nil {
			fireTimes[i] = pq.NullTime{Time: *nj.ScheduledFor, Valid: true}
		}
		versions[i] = nj.Version
		settings[i] = "{}"
		if len(nj.Settings) > 0 {
			settings[i] = string(nj.Settings)
		}
		if nj.MemoryMB != nil {
			memory[i] = sql.NullInt64{Int64: int64(*nj.MemoryMB), Valid: true}
		}
		priorities[i] = scrapethis.PriorityDefault
		if nj.Priority != nil {
			priorities[i] = int64(*nj.Priority)
		}
		if nj.IdempotencyKey != "" {
			// One key twice in a batch: the second is refused before
			// Postgres sees it (ON CONFLICT may not touch a row twice).
			k := [2]string{nj.UserID, nj.IdempotencyKey}
			if taken[k] {
				spiders[i] = uuid.Nil.String()
				errs[i] = ErrKeyInFlight
				continue
			}
			taken[k] = true
			idemKeys[i], idemHashes[i] = nj.IdempotencyKey, nj.RequestHash
			if idemHashes[i] == nil {
				idemHashes[i] = []byte{}
			}
		}
	}
	var rows []jobRow
	err := sel(ctx, &rows, `
		WITH input AS (
			SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::jsonb[], $5::int[], $6::uuid[], $7::timestamptz[],
				$8::text[], $9::jsonb[], $10::int[], $11::smallint[], $13::text[], $14::bytea[])
				AS t(id, user_id, spider_id, arguments, timeout_seconds, schedule_id, scheduled_for, version, settings, memory_mb, priority,
					idem_key, idem_hash)
		), resolved AS (
			SELECT i.*, s.project_id, v.id AS version_id, s.max_running,
				CASE WHEN s.project_id IS NULL THEN s.repo_path LIKE '%.py' ELSE v.kind = 'scrapy' END AS scrapy
			FROM input i JOIN spiders s ON s.id = i.spider_id AND s.user_id = i.user_id AND s.deleted_at IS NULL
			LEFT JOIN LATERAL (
				SELECT v.id, v.kind FROM versions v
				WHERE v.project_id = s.project_id AND v.status = 'ready' AND v.spiders ? s.name
					AND (i.version = '' OR v.label = i.version OR v.id::text = i.version)
				ORDER BY v.created_at DESC, v.id DESC LIMIT 1
			) v ON s.project_id IS NOT NULL
		), ok AS MATERIALIZED (
			SELECT r.* FROM resolved r
			WHERE (CASE WHEN r.project_id IS NULL THEN r.version = '' ELSE r.version_id IS NOT NULL END)
				AND (r.settings = '{}' OR r.scrapy)
		), ranked AS (
			-- A job a cap applies to is held when its caps' queues are full
			-- (see fairshare.go): counted without the lock, since the start
			-- keeps the caps exact, and each job of the batch after the
			-- others of its user and spider.
			SELECT ok.id, ok.user_id, ok.spider_id, ok.max_running,
				row_number() OVER (PARTITION BY ok.user_id ORDER BY ok.id) - 1 AS urank,
				row_number() OVER (PARTITION BY ok.spider_id ORDER BY ok.id) - 1 AS srank
			FROM ok WHERE $12 > 0 OR ok.max_running IS NOT NULL
		), fleet AS (
			-- The live workers' slots: a cap at or above them cannot hold
			-- a start back (running jobs never outnumber the slots), so its
			-- jobs are queued like uncapped ones, uncounted; the start
			-- still checks.
			SELECT coalesce(sum(w.concurrency), 0) AS slots FROM workers w WHERE w.heartbeat_at > now() - interval '15 seconds'
		), uc AS (
			SELECT u.user_id, a.running, a.queued FROM (
				SELECT DISTINCT r.user_id FROM ranked r, fleet f WHERE $12 > 0 AND ($12 < f.slots OR f.slots = 0)
			) u CROSS JOIN LATERAL (`+activeCounts+` x.user_id = u.user_id) a
		), sc AS (
			SELECT c.spider_id, a.running, a.queued FROM (
				SELECT DISTINCT r.user_id, r.spider_id FROM ranked r, fleet f
				WHERE r.max_running IS NOT NULL AND (r.max_running < f.slots OR f.slots = 0)
			) c CROSS JOIN LATERAL (`+activeCounts+` x.user_id = c.user_id AND x.spider_id = c.spider_id) a
		), held AS (
			SELECT r.id FROM ranked r LEFT JOIN uc ON uc.user_id = r.user_id LEFT JOIN sc ON sc.spider_id = r.spider_id
			WHERE uc.queued + r.urank >= 2 * ($12 - uc.running)
				OR sc.queued + r.srank >= 2 * (r.max_running - sc.running)
		), k AS (
			-- A key in use (or being written by a transaction not yet
			-- committed, which this waits for) keeps its job out.
			INSERT INTO idempotency_keys (user_id, key, request_hash, job_id)
			SELECT ok.user_id, ok.idem_key, ok.idem_hash, ok.id FROM ok WHERE ok.idem_key <> ''
			ON CONFLICT (user_id, key) DO UPDATE SET request_hash = EXCLUDED.request_hash, job_id = EXCLUDED.job_id, created_at = now()
				WHERE idempotency_keys.created_at <= now() - `+idempotencyTTL+`
			RETURNING job_id
		), j AS (
			INSERT INTO jobs (id, user_id, spider_id, arguments, timeout_seconds, schedule_id, scheduled_for, version_id, settings, memory_mb,
				priority, held)
			SELECT r.id, r.user_id, r.spider_id, r.arguments, r.timeout_seconds, r.schedule_id, r.scheduled_for, r.version_id, r.settings, r.memory_mb,
				r.priority, r.id IN (SELECT id FROM held)
			FROM ok r
			WHERE r.idem_key = '' OR r.id IN (SELECT job_id FROM k)
			ORDER BY r.id
			ON CONFLICT (schedule_id, scheduled_for) WHERE schedule_id IS NOT NULL DO NOTHING
			RETURNING *
		)
		SELECT `+jobColumns+` FROM j `+jobJoins,
		pq.Array(ids), pq.Array(users), pq.Array(spiders), pq.Array(args), pq.GenericArray{A: timeouts},
		pq.GenericArray{A: schedules}, pq.GenericArray{A: fireTimes}, pq.Array(versions), pq.Array(settings),
		pq.GenericArray{A: memory}, pq.Array(priorities), userMax, pq.Array(idemKeys), pq.ByteaArray(idemHashes))
	if err != nil {
		if err := translate(err, "Spider not found"); scrapethis.ErrorCode(err) != scrapethis.EInternal {
			return nil, nil, err
		}
		return nil, nil, fmt.Errorf("create jobs: %w", err)
	}
	byID := make(map[string]scrapethis.Job, len(rows))
	for _, r := range rows {
		byID[r.ID] = r.toJob()
	}
	out := make([]scrapethis.Job, n)
	var refused []int
	for i, id := range ids {
		j, ok := byID[id]
		if !ok {
			refused = append(refused, i)
			continue
		}
		out[i] = j
	}
	for _, i := range refused {
		if errs[i] == nil {
			errs[i] = whyNotCreated(ctx, sel, jobs[i])
		}
	}
	return out, errs, nil
}

// whyNotCreated explains a job that insertJobs did not insert. The rare
// path: one more query per refused job.
func whyNotCreated(ctx context.Context, sel selectFunc, nj scrapethis.NewJob) error {
	notFound := scrapethis.Errorf(scrapethis.ENotFound, "Spider not found")
	if !canonicalID(nj.SpiderID) {
		return notFound
	}
	var rows []struct {
		Name     string         `db:"name"`
		RepoPath string         `db:"repo_path"`
		Project  sql.NullString `db:"project"`
		Ready    int            `db:"ready"`
		Named    sql.NullString `db:"named_status"`
		NamedHas sql.NullBool   `db:"named_has"`
		NamedKnd sql.NullString `db:"named_kind"`
	}
	err := sel(ctx, &rows, `SELECT s.name, s.repo_path, p.name AS project,
			(SELECT count(*) FROM versions v WHERE v.project_id = s.project_id AND v.status = 'ready' AND v.spiders ? s.name) AS ready,
			n.status AS named_status, n.spiders ? s.name AS named_has, n.kind AS named_kind
		FROM spiders s LEFT JOIN projects p ON p.id = s.project_id
		LEFT JOIN LATERAL (SELECT v.status, v.spiders, v.kind FROM versions v WHERE v.project_id = s.project_id
			AND $3 <> '' AND (v.label = $3 OR v.id::text = $3) LIMIT 1) n ON true
		WHERE s.id = $1 AND s.user_id = $2 AND s.deleted_at IS NULL`, nj.SpiderID, nj.UserID, nj.Version)
	if err != nil || len(rows) == 0 {
		return notFound
	}
	r := rows[0]
	hasSettings := len(nj.Settings) > 0 && string(nj.Settings) != "{}"
	switch {
	case !r.Project.Valid && nj.Version != "":
		return scrapethis.Errorf(scrapethis.EInvalid, "Spider %s is not deployed from a project: it has no versions", r.Name)
	case !r.Project.Valid && hasSettings && !strings.HasSuffix(r.RepoPath, ".py"):
		return scrapethis.Errorf(scrapethis.EInvalid, "settings apply only to Scrapy spiders; %s is an executable", r.Name)
	case r.Project.Valid && nj.Version != "" && !r.Named.Valid:
		return scrapethis.Errorf(scrapethis.ENotFound, "Version %q not found in project %s", nj.Version, r.Project.String)
	case r.Project.Valid && nj.Version != "" && r.Named.String != string(scrapethis.VersionReady):
		return scrapethis.Errorf(scrapethis.EConflict, "Version %q of project %s is %s, not ready", nj.Version, r.Project.String, r.Named.String)
	case r.Project.Valid && nj.Version != "" && !r.NamedHas.Bool:
		return scrapethis.Errorf(scrapethis.EInvalid, "Version %q of project %s has no spider %s", nj.Version, r.Project.String, r.Name)
	case r.Project.Valid && nj.Version == "" && r.Ready == 0:
		return scrapethis.Errorf(scrapethis.EConflict, "Project %s has no ready version with spider %s", r.Project.String, r.Name)
	case r.Project.Valid && hasSettings && r.NamedKnd.String != scrapethis.KindScrapy:
		return scrapethis.Errorf(scrapethis.EInvalid, "settings apply only to Scrapy spiders; %s is a bundle executable", r.Name)
	}
	return notFound
}

// UsersByKeys resolves many API keys in one query: the user id of each live
// key, "" for a key that is unknown or revoked.
func (d *DB) UsersByKeys(ctx context.Context, keys []string) ([]string, error) {
	hashes := make([][]byte, len(keys))
	for i, k := range keys {
		hashes[i] = HashKey(k)
	}
	var rows []struct {
		Hash   []byte `db:"key_hash"`
		UserID string `db:"user_id"`
	}
	err := d.sel(ctx, &rows, `SELECT key_hash, user_id FROM api_keys
		WHERE key_hash = ANY($1::bytea[]) AND revoked_at IS NULL`, pq.ByteaArray(hashes))
	if err != nil {
		return nil, fmt.Errorf("look up keys: %w", err)
	}
	byHash := make(map[string]string, len(rows))
	for _, r := range rows {
		byHash[hex.EncodeToString(r.Hash)] = r.UserID
	}
	out := make([]string, len(keys))
	for i, h := range hashes {
		out[i] = byHash[hex.EncodeToString(h)]
	}
	return out, nil
}
