package batch_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/scrapethis/scrapethis/batch"
)

func TestEachCallGetsItsOwnResult(t *testing.T) {
	var calls, biggest atomic.Int64
	release := make(chan struct{})
	b := batch.New(context.Background(), 1, 50, func(ctx context.Context, reqs []int) ([]batch.Result[int], error) {
		if calls.Add(1) == 1 {
			<-release // hold the first batch so that the rest pile up
		}
		biggest.Store(max(biggest.Load(), int64(len(reqs))))
		out := make([]batch.Result[int], len(reqs))
		for i, r := range reqs {
			if r%7 == 0 {
				out[i].Err = errors.New("seven")
			}
			out[i].Value = r * 2
		}
		return out, nil
	})
	defer b.Close()
	var wg sync.WaitGroup
	for i := 1; i <= 100; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, err := b.Do(context.Background(), i)
			if i%7 == 0 {
				if err == nil {
					t.Errorf("%d: no error", i)
				}
				return
			}
			if err != nil || v != i*2 {
				t.Errorf("%d: got %d, %v", i, v, err)
			}
		}()
		if i == 1 {
			for calls.Load() == 0 {
			}
		}
	}
	// Let the held batch go; the others queued up behind it.
	close(release)
	wg.Wait()
	if calls.Load() >= 100 {
		t.Fatalf("%d batches for 100 calls: nothing was coalesced", calls.Load())
	}
	if biggest.Load() > 50 {
		t.Fatalf("a batch of %d, above the maximum of 50", biggest.Load())
	}
}

func TestWholeBatchError(t *testing.T) {
	b := batch.New(context.Background(), 2, 10, func(ctx context.Context, reqs []int) ([]batch.Result[int], error) {
		return nil, errors.New("down")
	})
	defer b.Close()
	if _, err := b.Do(context.Background(), 1); err == nil || err.Error() != "down" {
		t.Fatalf("err %v", err)
	}
}

func TestClosed(t *testing.T) {
	b := batch.New(context.Background(), 1, 10, func(ctx context.Context, reqs []int) ([]batch.Result[int], error) {
		return make([]batch.Result[int], len(reqs)), nil
	})
	b.Close()
	if _, err := b.Do(context.Background(), 1); !errors.Is(err, batch.ErrClosed) {
		t.Fatalf("err %v", err)
	}
}
