package db

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"

	"github.com/scrapethis/scrapethis"
)

const spiderColumns = `id, user_id, name, repo_path, created_at, max_running,
	(SELECT pr.name FROM projects pr WHERE pr.id = spiders.project_id) AS project`

// spiderRow is a spider as SQL sees it.
type spiderRow struct {
	ID        string         `db:"id"`
	UserID    string         `db:"user_id"`
	Name      string         `db:"name"`
	RepoPath  string         `db:"repo_path"`
	CreatedAt time.Time      `db:"created_at"`
	Project   sql.NullString `db:"project"`
	MaxRun    sql.NullInt32  `db:"max_running"`
}

func (r spiderRow) toSpider() scrapethis.Spider {
	s := scrapethis.Spider{ID: r.ID, UserID: r.UserID, Name: r.Name, RepoPath: r.RepoPath, Project: nullString(r.Project), CreatedAt: r.CreatedAt}
	if r.MaxRun.Valid {
		v := int(r.MaxRun.Int32)
		s.MaxRunning = &v
	}
	return s
}

// CreateSpider registers a spider; a live spider of the same name for the
// same user is a conflict. maxRunning caps its running jobs (nil: none).
func (d *DB) CreateSpider(ctx context.Context, userID, name, repoPath string, maxRunning ...*int) (scrapethis.Spider, error) {
	var cap *int
	if len(maxRunning) > 0 {
		cap = maxRunning[0]
	}
	var r spiderRow
	err := d.get(ctx, &r, `
		INSERT INTO spiders (id, user_id, name, repo_path, max_running) VALUES ($1, $2, $3, $4, $5)
		RETURNING `+spiderColumns, uuid.NewString(), userID, name, repoPath, cap)
	if isUniqueViolation(err) {
		return scrapethis.Spider{}, scrapethis.Errorf(scrapethis.EConflict, "A spider named %q already exists", name)
	}
	if err := translate(err, "Spider not found"); err != nil {
		return scrapethis.Spider{}, fmt.Errorf("create spider: %w", err)
	}
	return r.toSpider(), nil
}

// Spider returns the user's live spider with the id.
func (d *DB) Spider(ctx context.Context, userID, id string) (scrapethis.Spider, error) {
	if !canonicalID(id) {
		return scrapethis.Spider{}, scrapethis.Errorf(scrapethis.ENotFound, "Spider not found")
	}
	var r spiderRow
	err := d.get(ctx, &r, `SELECT `+spiderColumns+` FROM spiders
		WHERE id = $1 AND user_id = $2 AND deleted_at IS NULL`, id, userID)
	return r.toSpider(), translate(err, "Spider not found")
}

// SpiderByName returns the user's live spider with the name.
func (d *DB) SpiderByName(ctx context.Context, userID, name string) (scrapethis.Spider, error) {
	var r spiderRow
	err := d.get(ctx, &r, `SELECT `+spiderColumns+` FROM spiders
		WHERE name = $1 AND user_id = $2 AND deleted_at IS NULL`, name, userID)
	return r.toSpider(), translate(err, "Spider not found")
}

// Spiders lists the user's live spiders, newest first.
func (d *DB) Spiders(ctx context.Context, userID string) ([]scrapethis.Spider, error) {
	var rows []spiderRow
	if err := d.sel(ctx, &rows, `SELECT `+spiderColumns+` FROM spiders
		WHERE user_id = $1 AND deleted_at IS NULL ORDER BY created_at DESC, id DESC`, userID); err != nil {
		return nil, fmt.Errorf("list spiders: %w", err)
	}
	out := make([]scrapethis.Spider, len(rows))
	for i, r := range rows {
		out[i] = r.toSpider()
	}
	return out, nil
}

// DeleteSpider soft-deletes the user's spider and deletes its schedules.
// A spider with pending or running jobs is a conflict: cancel them first.
// Its finished jobs keep pointing at it, so their history stays readable.
func (d *DB) DeleteSpider(ctx context.Context, userID, id string) error {
	if !canonicalID(id) {
		return scrapethis.Errorf(scrapethis.ENotFound, "Spider not found")
	}
	return d.inTx(ctx, func(tx *sqlx.Tx) error { return deleteSpider(ctx, tx, userID, id) })
}

func deleteSpider(ctx context.Context, tx *sqlx.Tx, userID, id string) error {
	var project sql.NullString
	err := tx.QueryRowContext(ctx, `SELECT (SELECT pr.name FROM projects pr WHERE pr.id = s.project_id)
		FROM spiders s WHERE id = $1 AND user_id = $2 AND deleted_at IS NULL FOR UPDATE`, id, userID).Scan(&project)
	if err != nil {
		return translate(err, "Spider not found")
	}
	if project.Valid {
		return scrapethis.Errorf(scrapethis.EConflict, "Spider belongs to project %s: deploy a version without it, or delete the project", project.String)
	}
	var active bool
	if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM jobs WHERE spider_id = $1 AND status IN ('pending', 'running'))`, id).Scan(&active); err != nil {
		return fmt.Errorf("delete spider: %w", err)
	}
	if active {
		return scrapethis.Errorf(scrapethis.EConflict, "Spider has pending or running jobs; cancel them first")
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM schedules WHERE spider_id = $1`, id); err != nil {
		return fmt.Errorf("delete spider schedules: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE spiders SET deleted_at = now() WHERE id = $1`, id); err != nil {
		return fmt.Errorf("delete spider: %w", err)
	}
	return nil
}

// SetSpiderMaxRunning changes the cap of the user's live spider (nil: no
// cap) and lets go, under the new cap, the held jobs that now have room:
// enqueue the jobs returned. A lowered cap stops no running job; a job
// queued before it that would start beyond it is held back when a worker
// takes it.
func (d *DB) SetSpiderMaxRunning(ctx context.Context, userID, id string, maxRunning *int) (scrapethis.Spider, []scrapethis.Job, error) {
	if !canonicalID(id) {
		return scrapethis.Spider{}, nil, scrapethis.Errorf(scrapethis.ENotFound, "Spider not found")
	}
	var r spiderRow
	err := d.inTx(ctx, func(tx *sqlx.Tx) error {
		if err := lockUser(ctx, tx, userID); err != nil {
			return err
		}
		err := tx.GetContext(ctx, &r, `UPDATE spiders SET max_running = $3
			WHERE id = $1 AND user_id = $2 AND deleted_at IS NULL RETURNING `+spiderColumns, id, userID, maxRunning)
		if err := translate(err, "Spider not found"); err != nil {
			return err
		}
		return nil
	})
	if err != nil {
		return scrapethis.Spider{}, nil, err
	}
	let, err := d.AdmitHeld(ctx, userID)
	return r.toSpider(), let, err
}
