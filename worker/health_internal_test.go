package worker

import (
	"io"
	"log/slog"
	"testing"
	"time"
)

// TestFreshWorkerIsNotHealthyYet: a worker that has just started, however
// well its heartbeats go, may not judge others until LostAfter has passed.
func TestFreshWorkerIsNotHealthyYet(t *testing.T) {
	w := New(DefaultConfig(), nil, nil, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	w.started(time.Now())
	w.beat(nil)
	if w.healthy() {
		t.Fatal("a worker that has just started judges others")
	}
	w.started(time.Now().Add(-w.cfg.LostAfter - time.Second))
	w.beat(nil)
	if !w.healthy() {
		t.Fatal("a worker healthy for longer than LostAfter may not judge others")
	}
}
