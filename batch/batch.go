// Package batch coalesces concurrent calls into batches: every request that
// arrives while the runners are busy joins the next batch. Under light load
// a batch holds one request, so nothing waits on a timer; under load the
// batch shares one round trip, one plan and one commit among many callers.
package batch

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// ErrClosed is returned by Do after Close.
var ErrClosed = errors.New("batch: closed")

// Func handles one batch. It returns one result (or error) per request, in
// order, or an error for the whole batch.
type Func[Req, Res any] func(ctx context.Context, reqs []Req) ([]Result[Res], error)

// Result is one request's outcome.
type Result[Res any] struct {
	Value Res
	Err   error
}

type call[Req, Res any] struct {
	req  Req
	done chan Result[Res]
}

// Batcher runs a Func on batches of concurrent requests.
type Batcher[Req, Res any] struct {
	calls chan call[Req, Res]
	fn    Func[Req, Res]
	max   int
	ctx   context.Context
	stop  context.CancelFunc
	wg    sync.WaitGroup
	once  sync.Once
}

// New starts runners goroutines that each take up to max requests at a
// time. ctx bounds every batch (cancel it, or call Close, to stop).
func New[Req, Res any](ctx context.Context, runners, max int, fn Func[Req, Res]) *Batcher[Req, Res] {
	ctx, stop := context.WithCancel(ctx)
	b := &Batcher[Req, Res]{calls: make(chan call[Req, Res], runners*max), fn: fn, max: max, ctx: ctx, stop: stop}
	for i := 0; i < runners; i++ {
		b.wg.Add(1)
		go b.run()
	}
	return b
}

func (b *Batcher[Req, Res]) run() {
	defer b.wg.Done()
	batch := make([]call[Req, Res], 0, b.max)
	reqs := make([]Req, 0, b.max)
	for {
		batch, reqs = batch[:0], reqs[:0]
		select {
		case <-b.ctx.Done():
			return
		case c := <-b.calls:
			batch = append(batch, c)
		}
	drain:
		for len(batch) < b.max {
			select {
			case c := <-b.calls:
				batch = append(batch, c)
			default:
				break drain
			}
		}
		for _, c := range batch {
			reqs = append(reqs, c.req)
		}
		results, err := b.fn(b.ctx, reqs)
		if err == nil && len(results) != len(batch) {
			err = fmt.Errorf("batch: %d results for %d requests", len(results), len(batch))
		}
		for i, c := range batch {
			if err != nil {
				c.done <- Result[Res]{Err: err}
			} else {
				c.done <- results[i]
			}
		}
	}
}

// Do submits a request and waits for its result. Once submitted, the
// request is carried out even if ctx ends, so that its effect (a committed
// row) is never unknown to the caller.
func (b *Batcher[Req, Res]) Do(ctx context.Context, req Req) (Res, error) {
	c := call[Req, Res]{req: req, done: make(chan Result[Res], 1)}
	select {
	case b.calls <- c:
	case <-ctx.Done():
		var zero Res
		return zero, ctx.Err()
	case <-b.ctx.Done():
		var zero Res
		return zero, ErrClosed
	}
	select {
	case r := <-c.done:
		return r.Value, r.Err
	case <-b.ctx.Done():
		var zero Res
		return zero, ErrClosed
	}
}

// Close stops the runners after their current batch.
func (b *Batcher[Req, Res]) Close() {
	b.once.Do(func() {
		b.stop()
		b.wg.Wait()
	})
}
