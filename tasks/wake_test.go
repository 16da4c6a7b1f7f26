package tasks_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/scrapethis/scrapethis"
	"github.com/scrapethis/scrapethis/internal/testenv"
	"github.com/scrapethis/scrapethis/tasks"
)

// countEvals counts the EVALSHA/EVAL calls that pass it.
type countEvals struct{ n *atomic.Int64 }

func (c countEvals) DialHook(next redis.DialHook) redis.DialHook { return next }
func (c countEvals) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
func (c countEvals) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if n := cmd.Name(); n == "evalsha" || n == "eval" {
			c.n.Add(1)
		}
		return next(ctx, cmd)
	}
}

// TestWakerQuietsIdlePolls: a real asynq server of the spider queues polls
// through a Waker. Idle, few of its polls reach Redis (without the Waker
// every one does); a job enqueued through a Queuer, plain or pipelined,
// runs; so does a task put in a queue with no wake at all (the safety
// poll).
func TestWakerQuietsIdlePolls(t *testing.T) {
	t.Parallel()
	rdb := testenv.RedisClient(t)
	waker := tasks.NewWaker()
	var asked, reached atomic.Int64
	opt := *rdb.Options()
	opt.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	sc := redis.NewClient(&opt)
	sc.AddHook(countEvals{&asked}) // outermost: every poll
	sc.AddHook(waker)
	sc.AddHook(countEvals{&reached}) // innermost: the polls sent to Redis
	t.Cleanup(func() { sc.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { waker.Run(ctx, rdb) })
	t.Cleanup(func() { cancel(); wg.Wait() })

	ran := make(chan string, 64)
	var hold atomic.Bool
	gate := make(chan struct{})
	srv := asynq.NewServerFromRedisClient(sc, asynq.Config{
		Concurrency: 2, Queues: tasks.Queues(), StrictPriority: true,
		TaskCheckInterval: 5 * time.Millisecond, LogLevel: asynq.FatalLevel,
	})
	mux := asynq.NewServeMux()
	mux.HandleFunc(tasks.TypeRunSpider, func(_ context.Context, task *asynq.Task) error {
		if hold.Load() {
			<-gate
		}
		p, err := tasks.ParseRunSpiderPayload(task.Payload())
		if err == nil {
			ran <- p.JobID
		}
		return err
	})
	if err := srv.Start(mux); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)

	// Idle: five queues polled every few milliseconds.
	testenv.WaitFor(t, 30*time.Second, "500 idle polls", func() bool { return asked.Load() >= 500 })
	a, r := asked.Load(), reached.Load()
	if r*2 > a {
		t.Fatalf("%d of %d idle polls reached Redis; want under half (all of them do without a Waker)", r, a)
	}
	t.Logf("idle: %d of %d polls reached Redis", r, a)

	job := func(priority int) scrapethis.Job {
		return scrapethis.Job{ID: uuid.NewString(), Priority: priority}
	}
	seen := map[string]bool{}
	waitRan := func(id, how string) {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for !seen[id] {
			select {
			case got := <-ran:
				seen[got] = true
			case <-deadline:
				t.Fatalf("job enqueued %s never ran", how)
			}
		}
	}
	plain := tasks.NewQueuer(rdb)
	j := job(3)
	if err := plain.Enqueue(t.Context(), j); err != nil {
		t.Fatal(err)
	}
	waitRan(j.ID, "through a Queuer")

	piped := tasks.NewPipelinedQueuer(rdb)
	t.Cleanup(piped.Close)
	j = job(2)
	if err := piped.Enqueue(t.Context(), j); err != nil {
		t.Fatal(err)
	}
	waitRan(j.ID, "through a pipelined Queuer")

	// Work in a low queue: the rounds that find it never wait (a wait at
	// the top queue would cost every dequeue 5 ms). The first jobs hold
	// both slots until all are queued, so the queue is not empty between.
	hold.Store(true)
	var many []string
	for range 40 {
		j := job(0)
		if err := piped.Enqueue(t.Context(), j); err != nil {
			t.Fatal(err)
		}
		many = append(many, j.ID)
	}
	before := waker.Waits()
	close(gate)
	hold.Store(false)
	for _, id := range many {
		waitRan(id, "in a batch")
	}
	if n := waker.Waits() - before; n > 5 {
		t.Fatalf("%d idle waits while 40 jobs of a low queue were taken", n)
	}

	// No wake: asynq's own client, as its forwarder moves retries.
	client := asynq.NewClientFromRedisClient(rdb)
	j = job(0)
	task, err := tasks.NewRunSpiderTask(j)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Enqueue(task); err != nil {
		t.Fatal(err)
	}
	waitRan(j.ID, "with no wake")
}
