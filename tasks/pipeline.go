package tasks

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/scrapethis/scrapethis/batch"
)

// autoPipeline is a Redis client whose EVALSHA calls (each asynq enqueue
// is one) made at the same time share one round trip: concurrent calls are
// coalesced into a pipeline, which ends with a wake (WakeChannel). Every
// other command goes straight through.
type autoPipeline struct {
	redis.UniversalClient
	evals *batch.Batcher[evalCall, any]
}

type evalCall struct {
	sha  string
	keys []string
	args []any
}

func newAutoPipeline(c redis.UniversalClient) *autoPipeline {
	p := &autoPipeline{UniversalClient: c}
	p.evals = batch.New(context.Background(), 1, 256, func(ctx context.Context, calls []evalCall) ([]batch.Result[any], error) {
		// As long as the API gives one enqueue: a job not enqueued now is
		// enqueued by the reconciler.
		ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		pipe := c.Pipeline()
		cmds := make([]*redis.Cmd, len(calls))
		for i, call := range calls {
			cmds[i] = pipe.EvalSha(ctx, call.sha, call.keys, call.args...)
		}
		// After the enqueues, in the same round trip: the workers' Wakers
		// ask their queues again (see wake.go).
		pipe.Publish(ctx, WakeChannel, "")
		pipe.Exec(ctx) // errors are per command, read below
		out := make([]batch.Result[any], len(calls))
		for i, cmd := range cmds {
			out[i].Value, out[i].Err = cmd.Result()
		}
		return out, nil
	})
	return p
}

// EvalSha runs in a shared pipeline; a NOSCRIPT error comes back as usual,
// and go-redis's Script.Run then falls back to EVAL on the plain client.
func (p *autoPipeline) EvalSha(ctx context.Context, sha string, keys []string, args ...any) *redis.Cmd {
	cmd := redis.NewCmd(ctx, "evalsha", sha)
	v, err := p.evals.Do(ctx, evalCall{sha: sha, keys: keys, args: args})
	if err != nil {
		cmd.SetErr(err)
		return cmd
	}
	cmd.SetVal(v)
	return cmd
}

func (p *autoPipeline) close() { p.evals.Close() }
