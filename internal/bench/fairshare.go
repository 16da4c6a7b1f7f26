package bench

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/scrapethis/scrapethis"
)

// Rows of the runs without caps that fairShare compares against.
const (
	rowDispatchP50 = "dispatch latency p50 (POST 200 -> spider started)"
	rowCompletion  = "completion: no-op spider jobs/s (POST all -> all final)"
)

// fairShare measures the cost of caps and what they buy:
//
//  1. four rounds, each after a restart of the API and the worker: caps
//     set, off, off, set (ABBA, so that a drift over the rounds falls on
//     both sides alike, and every round starts from fresh processes; the
//     rows of the first runs, earlier in the run, come from processes
//     warmed by other scenarios). "Set" is SCRAPETHIS_USER_MAX_RUNNING one
//     above the worker's slots and max_running 1000 on the bench's
//     spiders: caps configured, never reached. Each round runs dispatch
//     and completion; the means with caps must stay within 10% of the
//     means without.
//  2. another user floods Sizes.FloodJobs jobs of a spider capped at 2 (all
//     but two held back), and the bench user's dispatch runs again: its p50
//     must stay within twice the dispatch p50 without caps.
func (b *Benchmarker) fairShare(ctx context.Context) error {
	baseDispatch, okD := b.rowValue(rowDispatchP50)
	if _, okC := b.rowValue(rowCompletion); !okD || !okC {
		return fmt.Errorf("fair share compares with the dispatch and completion rows: run those scenarios too")
	}
	userCap := b.concurrency + 1
	env := b.env
	capped := append(env[:len(env):len(env)], "SCRAPETHIS_USER_MAX_RUNNING="+strconv.Itoa(userCap))
	setSpiderCaps := func(n *int) error {
		for _, name := range []string{"noop", "stamp"} {
			if _, _, err := b.store.SetSpiderMaxRunning(ctx, b.userID, b.spiders[name], n); err != nil {
				return err
			}
		}
		return nil
	}
	// The scenarios after this one run without caps again.
	defer func() {
		setSpiderCaps(nil)
		if err := b.restartWith(ctx, env); err != nil {
			b.say("   restart without caps failed: %v", err)
		}
	}()
	var dispatch, completion [2][]float64 // [0] off, [1] set
	for _, on := range []bool{true, false, false, true} {
		caps, e := (*int)(nil), env
		if on {
			caps, e = ptrInt(1000), capped
		}
		if err := setSpiderCaps(caps); err != nil {
			return err
		}
		if err := b.restartWith(ctx, e); err != nil {
			return err
		}
		// The round's own rows are folded into the two below.
		rows := len(b.res.Rows)
		b.res.prefix = "fair share round: "
		b.clearStamps()
		err := b.dispatchLatency(ctx)
		if err == nil {
			err = b.completionThroughput(ctx)
		}
		b.res.prefix = ""
		if err != nil {
			return err
		}
		d, _ := b.rowValue("fair share round: " + rowDispatchP50)
		c, _ := b.rowValue("fair share round: " + rowCompletion)
		b.res.Rows = b.res.Rows[:rows]
		i := 0
		if on {
			i = 1
		}
		dispatch[i] = append(dispatch[i], d)
		completion[i] = append(completion[i], c)
		b.say("   caps %s: dispatch p50 %.2f ms, completion %.1f jobs/s", map[bool]string{true: "set", false: "off"}[on], d, c)
	}
	note := func(v [2][]float64) string {
		return fmt.Sprintf("SCRAPETHIS_USER_MAX_RUNNING=%d with %d worker slots, spiders' max_running 1000; baseline: the same scenario without caps; "+
			"means of two rounds each, every round after a restart, in the order set %.4g, off %.4g, off %.4g, set %.4g",
			userCap, b.concurrency, v[1][0], v[0][0], v[0][1], v[1][1])
	}
	b.res.add("fair share: completion jobs/s, caps set but not reached", mean(completion[1]), "jobs/s", ptr(mean(completion[0])), true, ratioAtLeast(0.9), note(completion))
	b.res.add("fair share: dispatch p50, caps set but not reached", mean(dispatch[1]), "ms", ptr(mean(dispatch[0])), false, ratioAtLeast(0.9), note(dispatch))

	// One user floods a capped spider; the bench user's dispatch is timed.
	u, err := b.store.EnsureUser(ctx, "flooder@scrapethis.local")
	if err != nil {
		return err
	}
	_, key, err := b.store.CreateAPIKey(ctx, u.ID, "flood")
	if err != nil {
		return err
	}
	flood, err := b.store.CreateSpider(ctx, u.ID, "flood", "flood.sh", ptrInt(2))
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(b.spidersDir, "flood.sh"), []byte("#!/bin/sh\nexec sleep 600\n"), 0o755); err != nil {
		return err
	}
	fc := newAPIClient(b.client.base, key)
	body := []byte(`{"spider_id":"` + flood.ID + `"}`)
	n := b.sz.FloodJobs
	p := hammer(ctx, 8, n, 2*time.Minute, func(ctx context.Context) error {
		st, out, err := fc.do(ctx, http.MethodPost, "/api/v1/jobs", body)
		if err == nil && st != http.StatusOK {
			err = fmt.Errorf("POST: %d %s", st, out)
		}
		return err
	})
	if p.err != nil {
		return fmt.Errorf("flood: %d errors, first: %w", p.errs, p.err)
	}
	defer b.cancelUser(ctx, fc, u.ID)
	deadline := time.Now().Add(30 * time.Second)
	var held int
	for {
		running, err := b.store.SpiderJobCount(ctx, flood.ID, scrapethis.StatusRunning, time.Time{})
		if err != nil {
			return err
		}
		if held, err = b.store.HeldJobCount(ctx); err != nil {
			return err
		}
		if running == 2 && held == n-2 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("flood: %d running and %d held after 30s, want 2 and %d", running, held, n-2)
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.say("   %d flood jobs POSTed in %s: 2 running, %d held", n, p.elapsed.Round(time.Millisecond), held)
	cpu0 := b.childCPU(b.worker)
	r0, _ := redisCPU(ctx, b.rdb)
	t0 := time.Now()
	b.res.prefix = "flooded: "
	b.clearStamps()
	err = b.dispatchLatency(ctx)
	b.res.prefix = ""
	if err != nil {
		return err
	}
	elapsed := time.Since(t0)
	workerCPU := b.childCPU(b.worker).sub(cpu0).self
	r1, _ := redisCPU(ctx, b.rdb)
	floodD, _ := b.rowValue("flooded: " + rowDispatchP50)
	b.res.add(fmt.Sprintf("fair share: another user's dispatch p50, %d jobs flooding a cap", n), floodD, "ms", ptr(baseDispatch), false, ratioAtLeast(0.5),
		fmt.Sprintf("the flood: %d jobs of one user's spider capped at 2 (2 running, %d held) POSTed before; target: within 2x the dispatch p50 without caps (ratio >= 0.5); "+
			"worker CPU while measuring %.1f%% of a core, Redis %.1f%%, with the worker's idle at %.1f%%",
			n, held, 100*workerCPU.Seconds()/elapsed.Seconds(), 100*(r1-r0).Seconds()/elapsed.Seconds(), b.workerIdleCPU))
	return nil
}

// cancelUser cancels every open job of a user: the pending (held) ones
// first, so that none is admitted when a running one ends, then the
// running ones over the API, until none is open (at most 30 s). A held job
// admitted by a running one's end while the lists were read would
// otherwise run on, and the worker's stop after this would wait its whole
// grace for it.
func (b *Benchmarker) cancelUser(ctx context.Context, c *apiClient, userID string) {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		pending, err := b.store.Jobs(ctx, scrapethis.JobFilter{UserID: userID, Status: scrapethis.StatusPending, Limit: 1000})
		if err != nil {
			return
		}
		for _, j := range pending {
			if _, err := b.store.CancelJob(ctx, userID, j.ID); err != nil {
				return
			}
		}
		running, err := b.store.Jobs(ctx, scrapethis.JobFilter{UserID: userID, Status: scrapethis.StatusRunning, Limit: 1000})
		if err != nil {
			return
		}
		if len(pending) == 0 && len(running) == 0 {
			return
		}
		for _, j := range running {
			c.do(ctx, http.MethodDelete, "/api/v1/jobs/"+j.ID, nil)
		}
		time.Sleep(10 * time.Millisecond) // the running ones' ends
	}
}

// restartWith restarts the API and the worker with that environment.
func (b *Benchmarker) restartWith(ctx context.Context, env []string) error {
	b.worker.stop(30 * time.Second)
	b.api.stop(15 * time.Second)
	b.env = env
	if err := b.startAPI(ctx); err != nil {
		return fmt.Errorf("%w: %w", errFatal, err)
	}
	return b.startWorker(ctx)
}

// clearStamps removes the dispatch scenario's stamp files, so that it can
// run again without reading an earlier run's stamps.
func (b *Benchmarker) clearStamps() {
	for _, pat := range []string{"api-*", "raw-*"} {
		m, _ := filepath.Glob(filepath.Join(b.dir, "stamps", pat))
		for _, f := range m {
			os.Remove(f)
		}
	}
}

// rowValue is the value of the row of that name added so far.
func (b *Benchmarker) rowValue(name string) (float64, bool) {
	for _, r := range b.res.Rows {
		if r.Name == name {
			return r.Value, true
		}
	}
	return 0, false
}

func ptrInt(n int) *int { return &n }

func mean(v []float64) float64 {
	var sum float64
	for _, x := range v {
		sum += x
	}
	return sum / float64(len(v))
}
