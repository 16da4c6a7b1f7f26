package tasks_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/scrapethis/scrapethis"
	"github.com/scrapethis/scrapethis/internal/testenv"
	"github.com/scrapethis/scrapethis/tasks"
)

// TestPipelinedEnqueue: enqueues made at once through the pipelined queuer
// all land, exactly once each, with task-id conflicts still detected.
func TestPipelinedEnqueue(t *testing.T) {
	opt, _ := redis.ParseURL(testenv.FlushRedis(t, testenv.RedisTasks))
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	q := tasks.NewPipelinedQueuer(rdb)
	defer q.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 400)
	for i := 0; i < 200; i++ {
		for copy := 0; copy < 2; copy++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				j := scrapethis.Job{ID: fmt.Sprintf("00000000-0000-0000-0000-%012d", i), SpiderName: "s"}
				errs <- q.Enqueue(context.Background(), j)
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	info, err := q.Inspector().GetQueueInfo(tasks.Queue)
	if err != nil {
		t.Fatal(err)
	}
	if info.Pending != 200 {
		t.Fatalf("%d pending tasks, want 200", info.Pending)
	}
	// A conflict is still a conflict through the pipeline.
	plain := asynq.NewClientFromRedisClient(rdb)
	task, _ := tasks.NewRunSpiderTask(scrapethis.Job{ID: "00000000-0000-0000-0000-000000000007"})
	if _, err := plain.Enqueue(task); err == nil {
		t.Fatal("duplicate task id accepted")
	}
}
