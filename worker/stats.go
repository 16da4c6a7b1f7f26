package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/scrapethis/scrapethis/db"
)

// statsEvery is how often a running job's newest Scrapy stats are stored.
const statsEvery = time.Second

// statsWriter stores the newest stats a spider reported: at most once a
// statsEvery while it runs, and the last ones, retried, when it ends.
type statsWriter struct {
	r       *run
	mu      sync.Mutex
	latest  json.RawMessage
	stored  json.RawMessage
	closing chan struct{}
	once    sync.Once
}

func newStatsWriter(r *run) *statsWriter {
	return &statsWriter{r: r, closing: make(chan struct{})}
}

func (s *statsWriter) set(st json.RawMessage) {
	s.mu.Lock()
	s.latest = st
	s.mu.Unlock()
}

// dropCounts are stdout lines a job printed that were not stored.
type dropCounts struct {
	tooLong  int // longer than MaxLineBytes
	overCap  int // past the job's item bytes limit
	notItems int // not a JSON object
}

// noteDrops adds the job's dropped lines to its stats, under our own
// prefix beside Scrapy's names, so that a job that lost output says so
// where clients look (for executables, stats are then no longer null).
func (s *statsWriter) noteDrops(d dropCounts) {
	if d == (dropCounts{}) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m := map[string]any{}
	if s.latest != nil {
		json.Unmarshal(s.latest, &m)
	}
	for k, v := range map[string]int{
		"scrapethis/items_dropped_too_long":   d.tooLong,
		"scrapethis/items_dropped_over_limit": d.overCap,
		"scrapethis/stdout_lines_not_items":   d.notItems,
	} {
		if v > 0 {
			m[k] = v
		}
	}
	if b, err := json.Marshal(m); err == nil {
		s.latest = b
	}
}

// finishReason is Scrapy's finish_reason in the newest stats, "" if none.
func (s *statsWriter) finishReason() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var st struct {
		FinishReason string `json:"finish_reason"`
	}
	if s.latest != nil {
		json.Unmarshal(s.latest, &st)
	}
	return st.FinishReason
}

// close asks run to store the last stats and return.
func (s *statsWriter) close() { s.once.Do(func() { close(s.closing) }) }

func (s *statsWriter) pending() json.RawMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.latest == nil || bytes.Equal(s.latest, s.stored) {
		return nil
	}
	return s.latest
}

func (s *statsWriter) store(ctx context.Context, st json.RawMessage) error {
	err := s.r.w.db.SetJobStats(ctx, s.r.job.ID, s.r.w.id, st)
	if err == nil {
		s.mu.Lock()
		s.stored = st
		s.mu.Unlock()
	}
	return err
}

func (s *statsWriter) run(ctx context.Context) {
	t := time.NewTicker(statsEvery)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			if st := s.pending(); st != nil {
				if err := s.store(ctx, st); err != nil && !errors.Is(err, db.ErrNotOwner) {
					s.r.log.Debug("stats not stored; next time", "err", err)
				}
			}
		case <-s.closing:
			st := s.pending()
			if st == nil {
				return
			}
			_, err := retryValue(ctx, s.r.log, func() (bool, error) {
				err := s.store(ctx, st)
				if errors.Is(err, db.ErrNotOwner) {
					return false, nil
				}
				return true, err
			})
			if err != nil {
				s.r.log.Error("final stats not stored", "err", err)
			}
			return
		case <-ctx.Done():
			return
		}
	}
}
