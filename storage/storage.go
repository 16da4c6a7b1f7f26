// Package storage keeps deployed archives by their sha256, wherever the
// operator keeps them: Postgres (the embedded default) today, behind an
// interface an S3-compatible store can implement.
package storage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	"github.com/scrapethis/scrapethis/db"
)

// Store holds archives by the lower-case hex sha256 of their bytes.
type Store interface {
	// Put stores data under its sum; storing the same bytes again is a no-op.
	Put(ctx context.Context, sum string, data []byte) error
	// Get returns the bytes stored under sum, or an ENotFound error.
	Get(ctx context.Context, sum string) ([]byte, error)
	// Delete removes the bytes under sum, unless something still uses them.
	Delete(ctx context.Context, sum string) error
}

// Sum is the key of data in a Store.
func Sum(data []byte) string {
	h := sha256.Sum256(data)
	return hex.EncodeToString(h[:])
}

// Postgres keeps archives in the platform's own database.
type Postgres struct{ db *db.DB }

// NewPostgres returns the embedded store.
func NewPostgres(d *db.DB) *Postgres { return &Postgres{db: d} }

// Put implements Store.
func (p *Postgres) Put(ctx context.Context, sum string, data []byte) error {
	return p.db.PutArchive(ctx, sum, data)
}

// Get implements Store, and checks what it read against sum.
func (p *Postgres) Get(ctx context.Context, sum string) ([]byte, error) {
	data, err := p.db.Archive(ctx, sum)
	if err != nil {
		return nil, err
	}
	if got := Sum(data); got != sum {
		return nil, fmt.Errorf("archive %s: stored bytes hash to %s", sum, got)
	}
	return data, nil
}

// Delete implements Store: an archive still used by a live version or an
// unfinished job stays.
func (p *Postgres) Delete(ctx context.Context, sum string) error {
	return p.db.DeleteArchive(ctx, sum)
}
