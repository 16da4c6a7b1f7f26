package tasks_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/scrapethis/scrapethis"
	"github.com/scrapethis/scrapethis/internal/testenv"
	"github.com/scrapethis/scrapethis/tasks"
)

// TestPipelinedEnqueue: enqueues made at once through the pipelined queuer
// all land, exactly once each, and each caller gets its own command's
// answer back, so that a task-id conflict is still told apart from an
// enqueue when both share one pipeline.
func TestPipelinedEnqueue(t *testing.T) {
	t.Parallel()
	rdb := testenv.RedisClient(t)
	q := tasks.NewPipelinedQueuer(rdb)
	defer q.Close()
	ctx := context.Background()
	job := func(i int) scrapethis.Job {
		return scrapethis.Job{ID: fmt.Sprintf("00000000-0000-0000-0000-%012d", i), SpiderName: "s", Priority: scrapethis.PriorityDefault}
	}
	pending := func(want int) {
		t.Helper()
		info, err := q.Inspector().GetQueueInfo(tasks.Queue)
		if err != nil {
			t.Fatal(err)
		}
		if info.Pending != want {
			t.Fatalf("%d pending tasks, want %d", info.Pending, want)
		}
	}
	type answer struct {
		i        int
		enqueued bool
		err      error
	}
	// ensure runs EnsureQueued for each job number at once and returns
	// how often each was reported enqueued.
	ensure := func(ids []int) map[int]int {
		t.Helper()
		var wg sync.WaitGroup
		answers := make(chan answer, len(ids))
		for _, i := range ids {
			wg.Go(func() {
				ok, err := q.EnsureQueued(ctx, job(i))
				answers <- answer{i, ok, err}
			})
		}
		wg.Wait()
		close(answers)
		n := map[int]int{}
		for a := range answers {
			if a.err != nil {
				t.Fatal(a.err)
			}
			if a.enqueued {
				n[a.i]++
			}
		}
		return n
	}

	// Two copies of each of 200 jobs at once: exactly one copy of each is
	// enqueued, the other sees the conflict.
	var twice []int
	for i := 0; i < 200; i++ {
		twice = append(twice, i, i)
	}
	n := ensure(twice)
	for i := 0; i < 200; i++ {
		if n[i] != 1 {
			t.Fatalf("job %d reported enqueued %d times, want once", i, n[i])
		}
	}
	pending(200)

	// 200 queued jobs and 200 new ones at once: only the new ones are
	// enqueued, whatever pipeline each call shared.
	var mixed []int
	for i := 0; i < 200; i++ {
		mixed = append(mixed, i, 200+i)
	}
	n = ensure(mixed)
	for i := 0; i < 400; i++ {
		if want := min(i/200, 1); n[i] != want {
			t.Fatalf("job %d reported enqueued %d times, want %d", i, n[i], want)
		}
	}
	pending(400)

	// One conflict on its own, and the API's Enqueue, for which a task
	// already queued is no error.
	if ok, err := q.EnsureQueued(ctx, job(7)); err != nil || ok {
		t.Fatalf("queued job enqueued again: %v %v", ok, err)
	}
	if err := q.Enqueue(ctx, job(7)); err != nil {
		t.Fatal(err)
	}
	pending(400)
}
