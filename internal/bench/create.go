package bench

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"

	"github.com/scrapethis/scrapethis"
	"github.com/scrapethis/scrapethis/tasks"
)

// hammerResult is what a closed-loop load run did.
type hammerResult struct {
	ok      int
	elapsed time.Duration
	lat     []time.Duration
	err     error // the first error, if any
	errs    int
}

func (h hammerResult) rate() float64 { return float64(h.ok) / h.elapsed.Seconds() }

// hammer calls fn from workers goroutines, each call right after the last,
// until n calls have been made or limit has passed.
func hammer(ctx context.Context, workers, n int, limit time.Duration, fn func(ctx context.Context) error) hammerResult {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	var claimed atomic.Int64
	var mu sync.Mutex
	res := hammerResult{lat: make([]time.Duration, 0, n)}
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat := make([]time.Duration, 0, n/workers+1)
			var ok, errs int
			var first error
			for claimed.Add(1) <= int64(n) && ctx.Err() == nil {
				t := time.Now()
				err := fn(ctx)
				if err != nil {
					if ctx.Err() != nil {
						break // the time cap, not a failure
					}
					errs++
					if first == nil {
						first = err
					}
					continue
				}
				ok++
				lat = append(lat, time.Since(t))
			}
			mu.Lock()
			res.ok += ok
			res.errs += errs
			res.lat = append(res.lat, lat...)
			if res.err == nil {
				res.err = first
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	return res
}

// createThroughput: POST /api/v1/jobs from concurrent HTTP clients against
// the raw work it stands for, a plain INSERT of the job row and an asynq
// Enqueue with the job's TaskID, from 16 goroutines in this process. The
// worker is not started yet, so nothing but creating runs; the jobs are
// deleted afterwards.
func (b *Benchmarker) createThroughput(ctx context.Context) error {
	spiderID := b.spiders["noop"]
	body := b.jobBody("noop", nil)
	post := func(ctx context.Context) error {
		st, out, err := b.client.do(ctx, http.MethodPost, "/api/v1/jobs", body)
		if err != nil {
			return err
		}
		if st != http.StatusOK {
			return fmt.Errorf("status %d: %s", st, out)
		}
		return nil
	}
	// Warm up connections and plans on both sides.
	warm := b.sz.CreateWarmup
	if r := hammer(ctx, 16, warm, 10*time.Second, post); r.err != nil {
		return fmt.Errorf("warm-up POSTs: %w", r.err)
	}

	aq := asynq.NewClientFromRedisClient(b.rdb)
	raw := func(ctx context.Context) error {
		id, err := uuid.NewV7()
		if err != nil {
			return err
		}
		job := scrapethis.Job{ID: id.String(), UserID: b.userID, SpiderID: spiderID, SpiderName: "noop"}
		if err := b.store.InsertJobRow(ctx, job.ID, job.UserID, job.SpiderID); err != nil {
			return err
		}
		t, err := tasks.NewRunSpiderTask(job)
		if err != nil {
			return err
		}
		_, err = aq.EnqueueContext(ctx, t)
		return err
	}
	hammer(ctx, 16, min(200, warm), 5*time.Second, raw)
	snap := b.snapshotPG(ctx, true)
	base := hammer(ctx, 16, b.sz.CreateRequests, b.sz.CreateMax, raw)
	if base.err != nil {
		return fmt.Errorf("raw baseline: %d errors, first: %w", base.errs, base.err)
	}
	baseRate := base.rate()
	baseCPU := b.cpuSince(ctx, snap).perOp(base.ok)
	b.say("   raw INSERT + Enqueue, 16 goroutines: %.0f/s (%d in %s); %s", baseRate, base.ok, base.elapsed.Round(time.Millisecond), baseCPU)

	// For reference: the store and queue calls one request needs, made one
	// by one in this process, without HTTP (the API may batch them).
	queuer := tasks.NewQueuer(b.rdb)
	storeOnly := func(ctx context.Context) error {
		uid, err := b.store.UserByKey(ctx, b.key)
		if err != nil {
			return err
		}
		job, err := b.store.CreateJob(ctx, scrapethis.NewJob{UserID: uid, SpiderID: spiderID, Arguments: []byte(`{}`)})
		if err != nil {
			return err
		}
		return queuer.Enqueue(ctx, job)
	}
	snap = b.snapshotPG(ctx, true)
	direct := hammer(ctx, 16, b.sz.CreateRequests, b.sz.CreateMax, storeOnly)
	if direct.err != nil {
		return fmt.Errorf("in-process store calls: %d errors, first: %w", direct.errs, direct.err)
	}
	directNote := fmt.Sprintf("a request's store calls unbatched, without HTTP, 16 goroutines: %s", b.cpuSince(ctx, snap).perOp(direct.ok))

	// The same POSTs with an Idempotency-Key each (a new key per request,
	// the common case: each stored with its job in the same statement).
	var keySeq atomic.Int64
	keyPrefix := uuid.NewString()
	postKeyed := func(ctx context.Context) error {
		h := http.Header{"Idempotency-Key": {fmt.Sprintf("%s-%d", keyPrefix, keySeq.Add(1))}}
		st, out, err := b.client.doHeader(ctx, b.client.auth, http.MethodPost, "/api/v1/jobs", body, h)
		if err != nil {
			return err
		}
		if st != http.StatusOK {
			return fmt.Errorf("status %d: %s", st, out)
		}
		return nil
	}
	for _, clients := range b.sz.CreateClients {
		snap := b.snapshot(ctx)
		r := hammer(ctx, clients, b.sz.CreateRequests, b.sz.CreateMax, post)
		note := fmt.Sprintf("%d POSTs in %s; latency p50 %.2f ms, p99 %.2f ms; %s",
			r.ok, r.elapsed.Round(time.Millisecond), ms(percentile(r.lat, 50)), ms(percentile(r.lat, 99)), b.cpuSince(ctx, snap).perOp(r.ok))
		if r.errs > 0 {
			note += fmt.Sprintf("; %d ERRORS, first: %v", r.errs, r.err)
		}
		note += fmt.Sprintf(" | baseline (%d in %s): %s", base.ok, base.elapsed.Round(time.Millisecond), baseCPU)
		b.say("   POST /api/v1/jobs, %d clients: %.0f/s; %s", clients, r.rate(), note)
		b.res.add(fmt.Sprintf("create: POST /jobs, %d clients", clients), r.rate(), "jobs/s", ptr(baseRate), true, ratioAtLeast(1.0), note)

		snap = b.snapshot(ctx)
		k := hammer(ctx, clients, b.sz.CreateRequests, b.sz.CreateMax, postKeyed)
		knote := fmt.Sprintf("%d POSTs in %s; latency p50 %.2f ms, p99 %.2f ms; %s | baseline: the same POSTs without the header just before",
			k.ok, k.elapsed.Round(time.Millisecond), ms(percentile(k.lat, 50)), ms(percentile(k.lat, 99)), b.cpuSince(ctx, snap).perOp(k.ok))
		if k.errs > 0 {
			knote += fmt.Sprintf("; %d ERRORS, first: %v", k.errs, k.err)
		}
		b.say("   POST /api/v1/jobs with Idempotency-Key, %d clients: %.0f/s; %s", clients, k.rate(), knote)
		b.res.add(fmt.Sprintf("create: POST /jobs with Idempotency-Key, %d clients", clients), k.rate(), "jobs/s", ptr(r.rate()), true, ratioAtLeast(0.9), knote)
	}

	b.res.add("create: UserByKey + CreateJob + Enqueue one by one, in-process", direct.rate(), "jobs/s", ptr(baseRate), true, nil, directNote)

	// Nothing may run these: the worker starts on an empty queue.
	if err := b.store.TruncateJobs(ctx); err != nil {
		return err
	}
	return b.rdb.FlushDB(ctx).Err()
}
