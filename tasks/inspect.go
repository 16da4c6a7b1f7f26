package tasks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"
)

// TypeInspectVersion names the task that inspects an uploaded version:
// unpack it, build its environment, list its spiders, and mark it ready or
// failed.
const TypeInspectVersion = "version:inspect"

// VersionQueue is the queue of inspections; workers serve it apart from
// spiders, so a busy worker still inspects.
const VersionQueue = "versions"

// InspectRetry is how often a failed inspection (its worker lost Postgres,
// or died) is tried again before the version is marked failed.
const InspectRetry = 3

// InspectTimeout bounds one inspection: unpack, dependency install, list.
const InspectTimeout = 20 * time.Minute

// InspectPayload is the inspection task's body.
type InspectPayload struct {
	VersionID string `json:"version_id"`
	Project   string `json:"project,omitempty"`
	Label     string `json:"label,omitempty"`
}

func inspectTaskID(versionID string) string { return "inspect:" + versionID }

// NewInspectTask builds the inspection task of a version; its TaskID is
// derived from the version id, so it is queued at most once.
func NewInspectTask(p InspectPayload) (*asynq.Task, error) {
	body, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("encode payload: %w", err)
	}
	return asynq.NewTask(TypeInspectVersion, body, asynq.TaskID(inspectTaskID(p.VersionID)), asynq.Queue(VersionQueue),
		asynq.MaxRetry(InspectRetry), asynq.Timeout(InspectTimeout)), nil
}

// ParseInspectPayload decodes an inspection task's body.
func ParseInspectPayload(b []byte) (InspectPayload, error) {
	var p InspectPayload
	if err := json.Unmarshal(b, &p); err != nil {
		return p, fmt.Errorf("decode payload: %w", err)
	}
	if p.VersionID == "" {
		return p, errors.New("decode payload: no version_id")
	}
	return p, nil
}

// EnqueueInspect makes sure a building version's inspection is queued: an
// inspection task already waiting or running is left alone; one that
// ended (completed or archived: a failed version uploaded again) is
// replaced. It reports whether it enqueued.
func (q *Queuer) EnqueueInspect(ctx context.Context, p InspectPayload) (bool, error) {
	t, err := NewInspectTask(p)
	if err != nil {
		return false, err
	}
	return q.ensure(ctx, t, VersionQueue, inspectTaskID(p.VersionID))
}
