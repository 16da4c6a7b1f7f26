package bench

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/scrapethis/scrapethis/internal/testenv"
)

// TestMonitorCounts: MONITOR counts the commands of its database index and
// leaves out another index's, and it ends on an idle server as on a busy
// one.
func TestMonitorCounts(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	opt, err := redis.ParseURL(testenv.LeaseRedis(t))
	if err != nil {
		t.Fatal(err)
	}
	other := *opt
	other.DB = 15 // read-only traffic on an index no package uses
	mine, theirs := redis.NewClient(opt), redis.NewClient(&other)
	defer mine.Close()
	defer theirs.Close()

	// Idle first: nothing of index opt.DB in the window, and it ends.
	clients, lua, err := monitorCounts(ctx, opt, opt.DB, 200*time.Millisecond)
	if err != nil {
		t.Fatalf("idle monitor: %v", err)
	}
	t.Logf("idle: %v %v", clients, lua)

	// Busy: GETs on both indexes, a script on ours, for as long as the
	// window lasts.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			mine.Get(ctx, "bench-monitor-test-missing")
			theirs.Get(ctx, "bench-monitor-test-missing")
			theirs.Exists(ctx, "bench-monitor-test-missing")
			mine.Eval(ctx, `return redis.call('exists', KEYS[1])`, []string{"bench-monitor-test-missing"})
		}
	})
	clients, lua, err = monitorCounts(ctx, opt, opt.DB, 300*time.Millisecond)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatalf("busy monitor: %v", err)
	}
	if clients["get"] == 0 || clients["eval"] == 0 {
		t.Errorf("counted %v of index %d, want its get and eval", clients, opt.DB)
	}
	if clients["exists"] != 0 {
		t.Errorf("counted %d exists: those were index %d's", clients["exists"], other.DB)
	}
	if lua["exists"] == 0 {
		t.Errorf("inside Lua: %v, want the script's exists", lua)
	}
}

func TestCountMonitorLine(t *testing.T) {
	t.Parallel()
	clients, lua := map[string]int{}, map[string]int{}
	for _, line := range []string{
		`OK`,
		`1700000000.123456 [8 127.0.0.1:5678] "evalsha" "abc" "1" "key"`,
		`1700000000.123457 [8 lua] "rpoplpush" "a" "b"`,
		`1700000000.123458 [18 127.0.0.1:5678] "get" "x"`,
		`1700000000.123459 [0 127.0.0.1:5678] "GET" "x"`,
		`1700000000.123460 [8 unix:/tmp/redis.sock] "GET" "x"`,
	} {
		countMonitorLine(line, "[8 ", clients, lua)
	}
	if len(clients) != 2 || clients["evalsha"] != 1 || clients["get"] != 1 {
		t.Errorf("clients = %v, want evalsha 1, get 1", clients)
	}
	if len(lua) != 1 || lua["rpoplpush"] != 1 {
		t.Errorf("lua = %v, want rpoplpush 1", lua)
	}
}
