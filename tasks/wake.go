package tasks

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/scrapethis/scrapethis"
)

// Idle polling. asynq has no blocking dequeue: a server polls every queue
// it serves each TaskCheckInterval (5 ms here, for dispatch latency), one
// Lua call per queue, so five priority queues cost an idle worker about a
// thousand Redis calls a second. A Waker makes those polls local while
// nothing was enqueued: a queue seen empty is answered "empty" by the
// worker itself until a wake (every enqueue through a Queuer publishes one
// on WakeChannel) or, as a backstop, SafetyPoll has passed since Redis was
// last asked (tasks that reach a queue without a wake: retries and
// scheduled tasks moved by asynq's forwarder, an enqueue whose publish was
// lost). Dispatch latency is unchanged; held-back and idle work cost
// almost nothing.

// WakeChannel is where enqueuers say that a spider queue may have work.
const WakeChannel = "scrapethis:wake"

// SafetyPoll is the longest a Waker answers a queue from memory.
const SafetyPoll = 100 * time.Millisecond

// Waker is a go-redis hook for the client of an asynq server of the spider
// queues, with the subscription that feeds it (Run).
type Waker struct {
	gen    atomic.Uint64 // bumped by every wake
	mu     sync.Mutex
	queues map[string]*queueState // by the queue's pending key
	first  string                 // the pending key of the queue polled first (the highest priority)
	woken  chan struct{}          // closed and replaced by every wake
	now    func() time.Time
	waits  atomic.Uint64
}

// Waits counts the idle waits so far (a test's or an operator's check that
// a Waker waits only when every queue is empty).
func (w *Waker) Waits() uint64 { return w.waits.Load() }

type queueState struct {
	emptyAt uint64    // the wake generation in which Redis said empty
	empty   bool      // whether it did
	asked   time.Time // when Redis was last asked
}

// known reports whether Redis said the queue was empty since the last
// wake, within SafetyPoll; the Waker's lock is held.
func (st *queueState) known(gen uint64, now time.Time) bool {
	return st.empty && st.emptyAt == gen && now.Sub(st.asked) < SafetyPoll
}

// NewWaker returns a Waker for the spider queues.
func NewWaker() *Waker {
	w := &Waker{queues: map[string]*queueState{}, woken: make(chan struct{}), now: time.Now}
	for q := range Queues() {
		w.queues["asynq:{"+q+"}:pending"] = &queueState{}
	}
	w.first = "asynq:{" + QueueFor(scrapethis.PriorityMax) + "}:pending"
	return w
}

// Wake makes every queue be asked again at its next poll, and lets a poll
// waiting for work go on at once.
func (w *Waker) Wake() {
	w.gen.Add(1)
	w.mu.Lock()
	close(w.woken)
	w.woken = make(chan struct{})
	w.mu.Unlock()
}

// idleWait is how long the first poll of a round that would be answered
// from memory waits for a wake before answering: work enqueued meanwhile
// is taken at once instead of after asynq's next sleep.
const idleWait = 5 * time.Millisecond

// Run subscribes to WakeChannel until ctx ends. Every message, and every
// (re)subscription (wakes may have been missed while disconnected), wakes.
func (w *Waker) Run(ctx context.Context, rdb redis.UniversalClient) {
	sub := rdb.Subscribe(ctx, WakeChannel)
	defer sub.Close()
	ch := sub.ChannelWithSubscriptions()
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-ch:
			if !ok {
				return
			}
			w.Wake()
		}
	}
}

// DialHook is go-redis's; a Waker does not change dialling.
func (w *Waker) DialHook(next redis.DialHook) redis.DialHook { return next }

// ProcessPipelineHook is go-redis's; asynq dequeues outside pipelines.
func (w *Waker) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// ProcessHook answers asynq's dequeue of a spider queue that Redis said
// was empty, with no wake since and within SafetyPoll, as empty.
func (w *Waker) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		st := w.dequeueOf(cmd)
		if st == nil {
			return next(ctx, cmd)
		}
		gen := w.gen.Load()
		now := w.now()
		w.mu.Lock()
		skip := st.known(gen, now)
		// Wait only at the start of a round that Redis would not see at
		// all: with work in any queue, the round goes on at once.
		wait := skip && st == w.queues[w.first]
		for _, q := range w.queues {
			wait = wait && q.known(gen, now)
		}
		woken := w.woken
		w.mu.Unlock()
		if wait {
			w.waits.Add(1)
			t := time.NewTimer(idleWait)
			select {
			case <-woken:
				skip, gen = false, w.gen.Load()
			case <-t.C:
			case <-ctx.Done():
			}
			t.Stop()
		}
		if skip {
			cmd.SetErr(redis.Nil)
			return redis.Nil
		}
		err := next(ctx, cmd)
		w.mu.Lock()
		st.asked = now
		// Empty as of gen: a wake after gen (an enqueue that this call may
		// have missed) makes the next poll ask again.
		st.empty, st.emptyAt = errors.Is(err, redis.Nil), gen
		w.mu.Unlock()
		return err
	}
}

// dequeueOf returns the state of the spider queue that cmd is asynq's
// dequeue of (EVALSHA or EVAL of its script, whose keys are the queue's
// pending, paused, active and lease keys), or nil.
func (w *Waker) dequeueOf(cmd redis.Cmder) *queueState {
	name := cmd.Name()
	if name != "evalsha" && name != "eval" {
		return nil
	}
	args := cmd.Args()
	if len(args) < 7 {
		return nil
	}
	if n, ok := args[2].(int); !ok || n != 4 {
		return nil
	}
	pending, ok1 := args[3].(string)
	paused, ok2 := args[4].(string)
	if !ok1 || !ok2 || !strings.HasSuffix(paused, ":paused") {
		return nil
	}
	return w.queues[pending]
}

// publishWake tells every worker's Waker that a queue may have work. It
// is best effort: a lost wake costs at most SafetyPoll.
func publishWake(ctx context.Context, rdb redis.UniversalClient) {
	rdb.Publish(ctx, WakeChannel, "")
}
