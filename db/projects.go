package db

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/scrapethis/scrapethis"
)

// versionColumns are selected from versions v joined to projects p.
const versionColumns = `v.id, v.project_id, p.name AS project, p.user_id, v.label, v.sha256, v.size_bytes,
	v.content_type, v.kind, v.settings_module, v.status, v.error, v.spiders, v.created_at, v.ready_at`

type versionRow struct {
	ID             string         `db:"id"`
	ProjectID      string         `db:"project_id"`
	Project        string         `db:"project"`
	UserID         string         `db:"user_id"`
	Label          string         `db:"label"`
	SHA256         string         `db:"sha256"`
	SizeBytes      int64          `db:"size_bytes"`
	ContentType    string         `db:"content_type"`
	Kind           string         `db:"kind"`
	SettingsModule string         `db:"settings_module"`
	Status         string         `db:"status"`
	Error          sql.NullString `db:"error"`
	Spiders        []byte         `db:"spiders"`
	CreatedAt      time.Time      `db:"created_at"`
	ReadyAt        sql.NullTime   `db:"ready_at"`
}

func (r versionRow) toVersion() scrapethis.Version {
	v := scrapethis.Version{
		ID: r.ID, ProjectID: r.ProjectID, Project: r.Project, UserID: r.UserID, Label: r.Label,
		SHA256: r.SHA256, SizeBytes: r.SizeBytes, ContentType: r.ContentType, Kind: r.Kind,
		SettingsModule: r.SettingsModule, Status: scrapethis.VersionStatus(r.Status),
		Error: nullString(r.Error), CreatedAt: r.CreatedAt.UTC(), ReadyAt: nullTime(r.ReadyAt),
	}
	if len(r.Spiders) > 0 {
		json.Unmarshal(r.Spiders, &v.Spiders)
	}
	return v
}

// NewVersion is an uploaded archive, already validated and stored.
type NewVersion struct {
	UserID         string
	Project        string
	Label          string // "" for the next vN
	SHA256         string
	SizeBytes      int64
	ContentType    string
	Kind           string
	SettingsModule string
}

// CreateVersion records an upload, creating its project on the first one.
// The same bytes uploaded to the project before return that version and
// created false; a version that failed is put back to building then, so
// that uploading it again retries its inspection (retried true).
func (d *DB) CreateVersion(ctx context.Context, nv NewVersion) (v scrapethis.Version, created, retried bool, err error) {
	err = d.inTx(ctx, func(tx *sqlx.Tx) error {
		var projectID string
		err := tx.QueryRowContext(ctx, `
			INSERT INTO projects (id, user_id, name) VALUES ($1, $2, $3)
			ON CONFLICT (user_id, name) WHERE deleted_at IS NULL DO NOTHING
			RETURNING id`, uuid.NewString(), nv.UserID, nv.Project).Scan(&projectID)
		if errors.Is(err, sql.ErrNoRows) {
			err = tx.QueryRowContext(ctx, `SELECT id FROM projects WHERE user_id = $1 AND name = $2 AND deleted_at IS NULL FOR UPDATE`,
				nv.UserID, nv.Project).Scan(&projectID)
		}
		if err != nil {
			return translate(err, "Project not found")
		}
		// Serialise uploads of one project: labels are counted.
		if _, err := tx.ExecContext(ctx, `SELECT 1 FROM projects WHERE id = $1 FOR UPDATE`, projectID); err != nil {
			return fmt.Errorf("lock project: %w", err)
		}
		var existing versionRow
		err = tx.GetContext(ctx, &existing, `SELECT `+versionColumns+` FROM versions v JOIN projects p ON p.id = v.project_id
			WHERE v.project_id = $1 AND v.sha256 = $2`, projectID, nv.SHA256)
		if err == nil {
			if existing.Status == string(scrapethis.VersionFailed) {
				if _, err := tx.ExecContext(ctx, `UPDATE versions SET status = 'building', error = NULL WHERE id = $1`, existing.ID); err != nil {
					return fmt.Errorf("retry version: %w", err)
				}
				existing.Status, existing.Error, retried = string(scrapethis.VersionBuilding), sql.NullString{}, true
			}
			v = existing.toVersion()
			return nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("find version: %w", err)
		}
		var uploads int
		if err := tx.QueryRowContext(ctx, `UPDATE projects SET uploads = uploads + 1 WHERE id = $1 RETURNING uploads`, projectID).Scan(&uploads); err != nil {
			return fmt.Errorf("count uploads: %w", err)
		}
		label := nv.Label
		for label == "" {
			var taken bool
			candidate := fmt.Sprintf("v%d", uploads)
			if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM versions WHERE project_id = $1 AND label = $2)`, projectID, candidate).Scan(&taken); err != nil {
				return fmt.Errorf("pick label: %w", err)
			}
			if !taken {
				label = candidate
			}
			uploads++
		}
		id, err := uuid.NewV7()
		if err != nil {
			return fmt.Errorf("new version id: %w", err)
		}
		var r versionRow
		err = tx.GetContext(ctx, &r, `
			WITH v AS (
				INSERT INTO versions (id, project_id, label, sha256, size_bytes, content_type, kind, settings_module)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *
			)
			SELECT `+versionColumns+` FROM v JOIN projects p ON p.id = v.project_id`,
			id.String(), projectID, label, nv.SHA256, nv.SizeBytes, nv.ContentType, nv.Kind, nv.SettingsModule)
		if isUniqueViolation(err) {
			return scrapethis.Errorf(scrapethis.EConflict, "Project %s already has a version labelled %q", nv.Project, label)
		}
		if err != nil {
			return fmt.Errorf("create version: %w", translate(err, "Project not found"))
		}
		v, created = r.toVersion(), true
		return nil
	})
	return v, created, retried, err
}

type projectRow struct {
	ID        string         `db:"id"`
	UserID    string         `db:"user_id"`
	Name      string         `db:"name"`
	CreatedAt time.Time      `db:"created_at"`
	LatestID  sql.NullString `db:"latest_id"`
}

// projectQuery selects projects p with the id of their newest ready version.
const projectQuery = `SELECT p.id, p.user_id, p.name, p.created_at,
		(SELECT v.id FROM versions v WHERE v.project_id = p.id AND v.status = 'ready'
			ORDER BY v.created_at DESC, v.id DESC LIMIT 1) AS latest_id
	FROM projects p`

// withLatest turns project rows into projects with their latest versions.
func (d *DB) withLatest(ctx context.Context, rows []projectRow) ([]scrapethis.Project, error) {
	var ids []string
	for _, r := range rows {
		if r.LatestID.Valid {
			ids = append(ids, r.LatestID.String)
		}
	}
	byID := map[string]scrapethis.Version{}
	if len(ids) > 0 {
		var vs []versionRow
		if err := d.sel(ctx, &vs, `SELECT `+versionColumns+` FROM versions v JOIN projects p ON p.id = v.project_id
			WHERE v.id = ANY($1)`, pq.Array(ids)); err != nil {
			return nil, fmt.Errorf("latest versions: %w", err)
		}
		for _, v := range vs {
			byID[v.ID] = v.toVersion()
		}
	}
	out := make([]scrapethis.Project, len(rows))
	for i, r := range rows {
		out[i] = scrapethis.Project{ID: r.ID, UserID: r.UserID, Name: r.Name, CreatedAt: r.CreatedAt.UTC()}
		if v, ok := byID[r.LatestID.String]; ok && r.LatestID.Valid {
			out[i].LatestVersion = &v
		}
	}
	return out, nil
}

// Projects lists the user's projects, newest first.
func (d *DB) Projects(ctx context.Context, userID string) ([]scrapethis.Project, error) {
	var rows []projectRow
	if err := d.sel(ctx, &rows, projectQuery+` WHERE p.user_id = $1 AND p.deleted_at IS NULL
		ORDER BY p.created_at DESC, p.id DESC`, userID); err != nil {
		return nil, fmt.Errorf("list projects: %w", err)
	}
	return d.withLatest(ctx, rows)
}

// Project returns the user's live project with the name.
func (d *DB) Project(ctx context.Context, userID, name string) (scrapethis.Project, error) {
	var r projectRow
	err := d.get(ctx, &r, projectQuery+` WHERE p.user_id = $1 AND p.name = $2 AND p.deleted_at IS NULL`, userID, name)
	if err != nil {
		return scrapethis.Project{}, translate(err, "Project not found")
	}
	ps, err := d.withLatest(ctx, []projectRow{r})
	if err != nil {
		return scrapethis.Project{}, err
	}
	return ps[0], nil
}

// Versions lists the versions of the user's project, newest first.
func (d *DB) Versions(ctx context.Context, userID, project string) ([]scrapethis.Version, error) {
	if _, err := d.Project(ctx, userID, project); err != nil {
		return nil, err
	}
	var rows []versionRow
	if err := d.sel(ctx, &rows, `SELECT `+versionColumns+` FROM versions v JOIN projects p ON p.id = v.project_id
		WHERE p.user_id = $1 AND p.name = $2 AND p.deleted_at IS NULL
		ORDER BY v.created_at DESC, v.id DESC`, userID, project); err != nil {
		return nil, fmt.Errorf("list versions: %w", err)
	}
	out := make([]scrapethis.Version, len(rows))
	for i, r := range rows {
		out[i] = r.toVersion()
	}
	return out, nil
}

// Version returns a version of the user's live project by its id or label.
func (d *DB) Version(ctx context.Context, userID, project, idOrLabel string) (scrapethis.Version, error) {
	var r versionRow
	err := d.get(ctx, &r, `SELECT `+versionColumns+` FROM versions v JOIN projects p ON p.id = v.project_id
		WHERE p.user_id = $1 AND p.name = $2 AND p.deleted_at IS NULL AND (v.id::text = $3 OR v.label = $3)
		ORDER BY v.id::text = $3 DESC LIMIT 1`, userID, project, idOrLabel)
	if err != nil {
		return scrapethis.Version{}, translate(err, "Version not found")
	}
	return r.toVersion(), nil
}

// VersionByID returns a version whoever owns it; inspectors use it.
func (d *DB) VersionByID(ctx context.Context, id string) (scrapethis.Version, error) {
	if !canonicalID(id) {
		return scrapethis.Version{}, scrapethis.Errorf(scrapethis.ENotFound, "Version not found")
	}
	var r versionRow
	err := d.get(ctx, &r, `SELECT `+versionColumns+` FROM versions v JOIN projects p ON p.id = v.project_id WHERE v.id = $1`, id)
	if err != nil {
		return scrapethis.Version{}, translate(err, "Version not found")
	}
	return r.toVersion(), nil
}

// BuildingVersions returns versions still building that were created
// before olderThan, oldest first: the reconciler enqueues their inspection
// again in case it was lost.
func (d *DB) BuildingVersions(ctx context.Context, olderThan time.Time, limit int) ([]scrapethis.Version, error) {
	var rows []versionRow
	if err := d.sel(ctx, &rows, `SELECT `+versionColumns+` FROM versions v JOIN projects p ON p.id = v.project_id
		WHERE v.status = 'building' AND v.created_at < $1 ORDER BY v.created_at LIMIT $2`, olderThan, limit); err != nil {
		return nil, fmt.Errorf("list building versions: %w", err)
	}
	out := make([]scrapethis.Version, len(rows))
	for i, r := range rows {
		out[i] = r.toVersion()
	}
	return out, nil
}

// FailVersion ends a building version's inspection in failure.
func (d *DB) FailVersion(ctx context.Context, id, reason string) error {
	_, err := d.exec(ctx, `UPDATE versions SET status = 'failed', error = $2 WHERE id = $1 AND status = 'building'`, id, reason)
	if err != nil {
		return fmt.Errorf("fail version: %w", err)
	}
	return nil
}

// ReadyVersion ends a building version's inspection with the spiders it
// holds (name: file). Spider names are unique per user: a name that one of
// the user's other spiders (a spiders-directory one, or another project's)
// holds fails the version instead, naming the clash. When the version is
// its project's newest ready one, the project's spiders become its spiders:
// new names are added, files updated, names it no longer has removed (with
// their schedules). It returns the version as it stands after.
func (d *DB) ReadyVersion(ctx context.Context, id string, spiders map[string]string) (scrapethis.Version, error) {
	var out scrapethis.Version
	err := d.inTx(ctx, func(tx *sqlx.Tx) error {
		var r versionRow
		err := tx.GetContext(ctx, &r, `SELECT `+versionColumns+` FROM versions v JOIN projects p ON p.id = v.project_id
			WHERE v.id = $1 FOR UPDATE OF v, p`, id)
		if err != nil {
			return translate(err, "Version not found")
		}
		if r.Status != string(scrapethis.VersionBuilding) {
			out = r.toVersion()
			return nil
		}
		names := make([]string, 0, len(spiders))
		for n := range spiders {
			names = append(names, n)
		}
		sort.Strings(names)
		var clashes []struct {
			Name    string         `db:"name"`
			Project sql.NullString `db:"project"`
		}
		if err := tx.SelectContext(ctx, &clashes, `SELECT s.name, p.name AS project FROM spiders s LEFT JOIN projects p ON p.id = s.project_id
			WHERE s.user_id = $1 AND s.deleted_at IS NULL AND s.name = ANY($2) AND s.project_id IS DISTINCT FROM $3
			ORDER BY s.name`, r.UserID, pq.Array(names), r.ProjectID); err != nil {
			return fmt.Errorf("check spider names: %w", err)
		}
		if len(clashes) > 0 {
			msgs := make([]string, len(clashes))
			for i, c := range clashes {
				if c.Project.Valid {
					msgs[i] = fmt.Sprintf("spider name %q is taken by project %s", c.Name, c.Project.String)
				} else {
					msgs[i] = fmt.Sprintf("spider name %q is taken by a spider of the spiders directory", c.Name)
				}
			}
			reason := strings.Join(msgs, "; ")
			if _, err := tx.ExecContext(ctx, `UPDATE versions SET status = 'failed', error = $2 WHERE id = $1`, id, reason); err != nil {
				return fmt.Errorf("fail version: %w", err)
			}
			r.Status, r.Error = string(scrapethis.VersionFailed), sql.NullString{String: reason, Valid: true}
			out = r.toVersion()
			return nil
		}
		doc, err := json.Marshal(spiders)
		if err != nil {
			return fmt.Errorf("encode spiders: %w", err)
		}
		if err := tx.GetContext(ctx, &r, `
			WITH v AS (UPDATE versions SET status = 'ready', spiders = $2, ready_at = now() WHERE id = $1 RETURNING *)
			SELECT `+versionColumns+` FROM v JOIN projects p ON p.id = v.project_id`, id, doc); err != nil {
			return fmt.Errorf("ready version: %w", err)
		}
		out = r.toVersion()
		var newer bool
		if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM versions WHERE project_id = $1 AND status = 'ready'
			AND (created_at, id) > ($2, $3))`, r.ProjectID, r.CreatedAt, r.ID).Scan(&newer); err != nil {
			return fmt.Errorf("newest version: %w", err)
		}
		if newer {
			return nil
		}
		return syncProjectSpiders(ctx, tx, r.UserID, r.ProjectID, names, spiders)
	})
	return out, err
}

// syncProjectSpiders makes the project's live spiders exactly names.
func syncProjectSpiders(ctx context.Context, tx *sqlx.Tx, userID, projectID string, names []string, files map[string]string) error {
	var gone []string
	if err := tx.SelectContext(ctx, &gone, `SELECT id FROM spiders WHERE project_id = $1 AND deleted_at IS NULL AND NOT (name = ANY($2))`,
		projectID, pq.Array(names)); err != nil {
		return fmt.Errorf("sync spiders: %w", err)
	}
	if len(gone) > 0 {
		if _, err := tx.ExecContext(ctx, `DELETE FROM schedules WHERE spider_id = ANY($1)`, pq.Array(gone)); err != nil {
			return fmt.Errorf("sync spiders: drop schedules: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE spiders SET deleted_at = now() WHERE id = ANY($1)`, pq.Array(gone)); err != nil {
			return fmt.Errorf("sync spiders: remove: %w", err)
		}
	}
	for _, n := range names {
		res, err := tx.ExecContext(ctx, `UPDATE spiders SET repo_path = $3 WHERE project_id = $1 AND name = $2 AND deleted_at IS NULL`,
			projectID, n, files[n])
		if err != nil {
			return fmt.Errorf("sync spiders: update %s: %w", n, err)
		}
		if k, _ := res.RowsAffected(); k > 0 {
			continue
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO spiders (id, user_id, name, repo_path, project_id) VALUES ($1, $2, $3, $4, $5)`,
			uuid.NewString(), userID, n, files[n], projectID); err != nil {
			if isUniqueViolation(err) {
				return scrapethis.Errorf(scrapethis.EConflict, "spider name %q is taken", n)
			}
			return fmt.Errorf("sync spiders: add %s: %w", n, err)
		}
	}
	return nil
}

// DeleteProject soft-deletes the user's project with its spiders and their
// schedules; its versions stay for the jobs that ran them. A project with
// a pending or running job is a conflict. It returns the archives (sha256)
// that no live version uses any more, for the caller to delete from
// storage.
func (d *DB) DeleteProject(ctx context.Context, userID, name string) ([]string, error) {
	var unused []string
	err := d.inTx(ctx, func(tx *sqlx.Tx) error {
		var projectID string
		err := tx.QueryRowContext(ctx, `SELECT id FROM projects WHERE user_id = $1 AND name = $2 AND deleted_at IS NULL FOR UPDATE`,
			userID, name).Scan(&projectID)
		if err != nil {
			return translate(err, "Project not found")
		}
		// Lock the project's spiders too: a job insert's foreign-key check
		// waits on these locks, so inserts in flight finish first or see
		// the spiders deleted. (One that read a spider just before still
		// commits; its worker then fails it if the archive is gone.)
		if _, err := tx.ExecContext(ctx, `SELECT 1 FROM spiders WHERE project_id = $1 AND deleted_at IS NULL FOR UPDATE`, projectID); err != nil {
			return fmt.Errorf("lock spiders: %w", err)
		}
		var active bool
		if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM jobs j JOIN versions v ON v.id = j.version_id
			WHERE v.project_id = $1 AND j.status IN ('pending', 'running'))`, projectID).Scan(&active); err != nil {
			return fmt.Errorf("delete project: %w", err)
		}
		if active {
			return scrapethis.Errorf(scrapethis.EConflict, "Project has pending or running jobs; cancel them first")
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM schedules WHERE spider_id IN (SELECT id FROM spiders WHERE project_id = $1)`, projectID); err != nil {
			return fmt.Errorf("delete project schedules: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE spiders SET deleted_at = now() WHERE project_id = $1 AND deleted_at IS NULL`, projectID); err != nil {
			return fmt.Errorf("delete project spiders: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE projects SET deleted_at = now() WHERE id = $1`, projectID); err != nil {
			return fmt.Errorf("delete project: %w", err)
		}
		return tx.SelectContext(ctx, &unused, `SELECT DISTINCT v.sha256 FROM versions v WHERE v.project_id = $1
			AND NOT EXISTS (SELECT 1 FROM versions o JOIN projects op ON op.id = o.project_id
				WHERE o.sha256 = v.sha256 AND op.deleted_at IS NULL)`, projectID)
	})
	return unused, err
}

// PutArchive stores an archive's bytes under its sha256; storing the same
// bytes again is a no-op.
func (d *DB) PutArchive(ctx context.Context, sha256 string, data []byte) error {
	_, err := d.exec(ctx, `INSERT INTO archives (sha256, data) VALUES ($1, $2) ON CONFLICT (sha256) DO NOTHING`, sha256, data)
	if err != nil {
		return fmt.Errorf("store archive: %w", err)
	}
	return nil
}

// Archive returns an archive's bytes; ENotFound when none is stored.
func (d *DB) Archive(ctx context.Context, sha256 string) ([]byte, error) {
	var data []byte
	if err := d.get(ctx, &data, `SELECT data FROM archives WHERE sha256 = $1`, sha256); err != nil {
		return nil, translate(err, "Archive not found")
	}
	return data, nil
}

// DeleteArchive removes an archive's bytes, unless a live version or an
// unfinished job still uses them.
func (d *DB) DeleteArchive(ctx context.Context, sha256 string) error {
	_, err := d.exec(ctx, `DELETE FROM archives a WHERE a.sha256 = $1
		AND NOT EXISTS (SELECT 1 FROM versions v JOIN projects p ON p.id = v.project_id WHERE v.sha256 = a.sha256 AND p.deleted_at IS NULL)
		AND NOT EXISTS (SELECT 1 FROM jobs j JOIN versions v ON v.id = j.version_id WHERE v.sha256 = a.sha256 AND j.status IN ('pending', 'running'))`, sha256)
	if err != nil {
		return fmt.Errorf("delete archive: %w", err)
	}
	return nil
}
