// Package tasks is the asynq side both the API and the workers import: the
// task type, its payload, and the queue operations on Redis.
package tasks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/scrapethis/scrapethis"
)

// TypeRunSpider names the task that runs one job's spider.
const TypeRunSpider = "spider:run"

// Queue is the asynq queue of spider tasks of the default priority (2).
const Queue = "spiders"

// QueueFor names the asynq queue of spider tasks of a priority: "spiders"
// for the default, "spiders-0" to "spiders-4" for the others. Workers serve
// them with strict priority: a free slot takes from the highest non-empty
// queue, and a queue is first in, first out.
func QueueFor(priority int) string {
	if priority == scrapethis.PriorityDefault || priority < scrapethis.PriorityMin || priority > scrapethis.PriorityMax {
		return Queue
	}
	return fmt.Sprintf("%s-%d", Queue, priority)
}

// Queues are the spider queues with their asynq weights, for a server
// with StrictPriority: the higher the priority, the higher the weight.
func Queues() map[string]int {
	m := make(map[string]int, scrapethis.PriorityMax+1)
	for p := scrapethis.PriorityMin; p <= scrapethis.PriorityMax; p++ {
		m[QueueFor(p)] = p + 1
	}
	return m
}

// MaxRetry is how often asynq re-delivers a task whose handler failed. The
// handler fails only when it could not reach Postgres to start or end the
// job; the job's own outcome is recorded in Postgres, never as a retry.
const MaxRetry = 10

// RunSpiderPayload is the task body. Only JobID is read by the worker; the
// rest makes the task readable in asynqmon.
type RunSpiderPayload struct {
	JobID  string `json:"job_id"`
	Spider string `json:"spider,omitempty"`
	UserID string `json:"user_id,omitempty"`
}

// NewRunSpiderTask builds the task for a job. Its asynq TaskID is the job
// id, so enqueueing the same job twice is refused by Redis.
func NewRunSpiderTask(j scrapethis.Job) (*asynq.Task, error) {
	body, err := json.Marshal(RunSpiderPayload{JobID: j.ID, Spider: j.SpiderName, UserID: j.UserID})
	if err != nil {
		return nil, fmt.Errorf("encode payload: %w", err)
	}
	return asynq.NewTask(TypeRunSpider, body, runOptions(j, j.ID)...), nil
}

// runOptions are the options of a job's task of the id.
func runOptions(j scrapethis.Job, id string) []asynq.Option {
	// asynq needs a timeout; the worker enforces the job's own timeout, so
	// this is only a backstop well past it.
	timeout := 7 * 24 * time.Hour
	if j.TimeoutSeconds != nil {
		timeout = time.Duration(*j.TimeoutSeconds)*time.Second + 10*time.Minute
	}
	return []asynq.Option{asynq.TaskID(id), asynq.Queue(QueueFor(j.Priority)), asynq.MaxRetry(MaxRetry), asynq.Timeout(timeout)}
}

// ParseRunSpiderPayload decodes a task body.
func ParseRunSpiderPayload(b []byte) (RunSpiderPayload, error) {
	var p RunSpiderPayload
	if err := json.Unmarshal(b, &p); err != nil {
		return p, fmt.Errorf("decode payload: %w", err)
	}
	if p.JobID == "" {
		return p, errors.New("decode payload: no job_id")
	}
	return p, nil
}

// Queuer enqueues and withdraws job tasks.
type Queuer struct {
	rdb       redis.UniversalClient
	client    *asynq.Client
	inspector *asynq.Inspector
	pipe      *autoPipeline
}

// NewQueuer uses the Redis client for both enqueueing and inspecting.
func NewQueuer(rdb redis.UniversalClient) *Queuer {
	return &Queuer{rdb: rdb, client: asynq.NewClientFromRedisClient(rdb), inspector: asynq.NewInspectorFromRedisClient(rdb)}
}

// NewPipelinedQueuer is NewQueuer for busy enqueuers (the API): enqueues
// made at the same time share one Redis round trip. Close it when done.
func NewPipelinedQueuer(rdb redis.UniversalClient) *Queuer {
	p := newAutoPipeline(rdb)
	return &Queuer{rdb: rdb, client: asynq.NewClientFromRedisClient(p), inspector: asynq.NewInspectorFromRedisClient(rdb), pipe: p}
}

// Close stops a pipelined queuer's batching; the Redis client stays open.
func (q *Queuer) Close() {
	if q.pipe != nil {
		q.pipe.close()
	}
}

// Inspector exposes asynq's inspector for those that need more.
func (q *Queuer) Inspector() *asynq.Inspector { return q.inspector }

// Enqueue puts the job's task on the queue. A task already queued for the
// job is not an error: the job is in Redis, which is all that is asked.
func (q *Queuer) Enqueue(ctx context.Context, j scrapethis.Job) error {
	t, err := NewRunSpiderTask(j)
	if err != nil {
		return err
	}
	_, err = q.client.EnqueueContext(ctx, t)
	if errors.Is(err, asynq.ErrTaskIDConflict) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("enqueue job %s: %w", j.ID, err)
	}
	q.wake(ctx)
	return nil
}

// wake tells the workers' Wakers that a spider queue has work; a
// pipelined queuer's pipeline does it with its enqueues.
func (q *Queuer) wake(ctx context.Context) {
	if q.pipe == nil {
		publishWake(ctx, q.rdb)
	}
}

// EnsureQueued makes sure a pending job can run: it enqueues the task, and
// where a task of that id is stuck in a state that will never run it again
// (archived, completed), replaces it. It reports whether it enqueued.
func (q *Queuer) EnsureQueued(ctx context.Context, j scrapethis.Job) (bool, error) {
	t, err := NewRunSpiderTask(j)
	if err != nil {
		return false, err
	}
	return q.ensure(ctx, t, QueueFor(j.Priority), j.ID)
}

// ensure enqueues t (TaskID id on queue), replacing a task of that id that
// will never run again (archived, completed).
func (q *Queuer) ensure(ctx context.Context, t *asynq.Task, queue, id string) (bool, error) {
	_, err := q.client.EnqueueContext(ctx, t)
	if err == nil {
		q.wake(ctx)
		return true, nil
	}
	if !errors.Is(err, asynq.ErrTaskIDConflict) {
		return false, fmt.Errorf("enqueue task %s: %w", id, err)
	}
	info, err := q.inspector.GetTaskInfo(queue, id)
	if err != nil {
		return false, nil // gone since: the next pass enqueues it
	}
	if info.State != asynq.TaskStateArchived && info.State != asynq.TaskStateCompleted {
		return false, nil
	}
	if err := q.inspector.DeleteTask(queue, id); err != nil {
		return false, fmt.Errorf("replace task %s: %w", id, err)
	}
	if _, err := q.client.EnqueueContext(ctx, t); err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
		return false, fmt.Errorf("enqueue task %s: %w", id, err)
	}
	q.wake(ctx)
	return true, nil
}

// EnqueueAgain enqueues a second task for a job whose own task is stuck
// active (its worker died holding it): same payload, another id. The job
// runs once: whichever task comes first starts it, the other finds it no
// longer pending.
func (q *Queuer) EnqueueAgain(ctx context.Context, j scrapethis.Job) error {
	t, err := NewRunSpiderTask(j)
	if err != nil {
		return err
	}
	id := fmt.Sprintf("%s:again:%d", j.ID, time.Now().UnixNano())
	if _, err := q.client.EnqueueContext(ctx, asynq.NewTask(t.Type(), t.Payload(), runOptions(j, id)...)); err != nil {
		return fmt.Errorf("enqueue job %s again: %w", j.ID, err)
	}
	q.wake(ctx)
	return nil
}

// Withdraw removes a job's task wherever it waits (pending, retry,
// scheduled, archived), and asks the worker running it, if any, to cancel
// it through asynq's cancel channel.
func (q *Queuer) Withdraw(ctx context.Context, j scrapethis.Job) error {
	jobID := j.ID
	err := q.inspector.DeleteTask(QueueFor(j.Priority), jobID)
	switch {
	case err == nil, errors.Is(err, asynq.ErrTaskNotFound), errors.Is(err, asynq.ErrQueueNotFound):
		return nil
	}
	// An active task cannot be deleted: publish the cancel instead.
	return q.Cancel(ctx, jobID)
}

// Cancel publishes a cancel for a running job on asynq's cancel channel.
// The message is lost if no worker listens, so the caller must have
// recorded the cancel in Postgres first.
func (q *Queuer) Cancel(_ context.Context, jobID string) error {
	if err := q.inspector.CancelProcessing(jobID); err != nil {
		return fmt.Errorf("publish cancel of job %s: %w", jobID, err)
	}
	return nil
}

// Forget deletes a job's task if it waits in retry or any other inactive
// state; an active task or none at all is left alone. Workers call it after
// asynq moved a cancelled task to retry, so that it does not linger.
func (q *Queuer) Forget(j scrapethis.Job) {
	_ = q.inspector.DeleteTask(QueueFor(j.Priority), j.ID)
}
