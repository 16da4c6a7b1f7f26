package db

import (
	"context"
	"fmt"

	"github.com/google/uuid"

	"github.com/scrapethis/scrapethis"
)

const spiderColumns = `id, user_id, name, repo_path, created_at`

// CreateSpider registers a spider; a live spider of the same name for the
// same user is a conflict.
func (d *DB) CreateSpider(ctx context.Context, userID, name, repoPath string) (scrapethis.Spider, error) {
	var s scrapethis.Spider
	err := d.QueryRowxContext(ctx, `
		INSERT INTO spiders (id, user_id, name, repo_path) VALUES ($1, $2, $3, $4)
		RETURNING `+spiderColumns, uuid.NewString(), userID, name, repoPath).
		Scan(&s.ID, &s.UserID, &s.Name, &s.RepoPath, &s.CreatedAt)
	if err := translate(err, "Spider not found"); err != nil {
		if scrapethis.ErrorCode(err) == scrapethis.EConflict {
			return s, scrapethis.Errorf(scrapethis.EConflict, "A spider named %q already exists", name)
		}
		return s, fmt.Errorf("create spider: %w", err)
	}
	return s, nil
}

// Spider returns the user's live spider with the id.
func (d *DB) Spider(ctx context.Context, userID, id string) (scrapethis.Spider, error) {
	var s scrapethis.Spider
	if _, err := uuid.Parse(id); err != nil {
		return s, scrapethis.Errorf(scrapethis.ENotFound, "Spider not found")
	}
	err := d.QueryRowxContext(ctx, `SELECT `+spiderColumns+` FROM spiders
		WHERE id = $1 AND user_id = $2 AND deleted_at IS NULL`, id, userID).
		Scan(&s.ID, &s.UserID, &s.Name, &s.RepoPath, &s.CreatedAt)
	return s, translate(err, "Spider not found")
}

// SpiderByName returns the user's live spider with the name.
func (d *DB) SpiderByName(ctx context.Context, userID, name string) (scrapethis.Spider, error) {
	var s scrapethis.Spider
	err := d.QueryRowxContext(ctx, `SELECT `+spiderColumns+` FROM spiders
		WHERE name = $1 AND user_id = $2 AND deleted_at IS NULL`, name, userID).
		Scan(&s.ID, &s.UserID, &s.Name, &s.RepoPath, &s.CreatedAt)
	return s, translate(err, "Spider not found")
}

// Spiders lists the user's live spiders, newest first.
func (d *DB) Spiders(ctx context.Context, userID string) ([]scrapethis.Spider, error) {
	rows, err := d.QueryxContext(ctx, `SELECT `+spiderColumns+` FROM spiders
		WHERE user_id = $1 AND deleted_at IS NULL ORDER BY created_at DESC, id DESC`, userID)
	if err != nil {
		return nil, fmt.Errorf("list spiders: %w", err)
	}
	defer rows.Close()
	out := []scrapethis.Spider{}
	for rows.Next() {
		var s scrapethis.Spider
		if err := rows.Scan(&s.ID, &s.UserID, &s.Name, &s.RepoPath, &s.CreatedAt); err != nil {
			return nil, fmt.Errorf("list spiders: %w", err)
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

// DeleteSpider soft-deletes the user's spider and deletes its schedules.
// A spider with pending or running jobs is a conflict: cancel them first.
// Its finished jobs keep pointing at it, so their history stays readable.
func (d *DB) DeleteSpider(ctx context.Context, userID, id string) error {
	if _, err := uuid.Parse(id); err != nil {
		return scrapethis.Errorf(scrapethis.ENotFound, "Spider not found")
	}
	tx, err := d.BeginTxx(ctx, nil)
	if err != nil {
		return fmt.Errorf("delete spider: %w", err)
	}
	defer tx.Rollback()
	var sid string
	err = tx.QueryRowContext(ctx, `SELECT id FROM spiders WHERE id = $1 AND user_id = $2 AND deleted_at IS NULL FOR UPDATE`, id, userID).Scan(&sid)
	if err != nil {
		return translate(err, "Spider not found")
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
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("delete spider: %w", err)
	}
	return nil
}
