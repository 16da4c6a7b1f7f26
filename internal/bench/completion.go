package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/scrapethis/scrapethis"
)

// cpuSnapshot is the CPU spent so far by everything a job touches.
type cpuSnapshot struct {
	worker, api, bench cpuTimes
	pg                 *pgCPU
	redis              time.Duration
}

func (b *Benchmarker) snapshot(ctx context.Context) cpuSnapshot {
	return b.snapshotPG(ctx, false)
}

// snapshotPG is snapshot counting the bench's own Postgres connections as
// well, for a raw baseline that runs on them.
func (b *Benchmarker) snapshotPG(ctx context.Context, includeBench bool) cpuSnapshot {
	s := cpuSnapshot{pg: b.startPGCPU(ctx, includeBench)}
	s.worker = b.childCPU(b.worker)
	s.api = b.childCPU(b.api)
	s.bench, _ = b.procs.cpu(os.Getpid())
	s.redis, _ = redisCPU(ctx, b.rdb)
	return s
}

func (b *Benchmarker) childCPU(c *child) cpuTimes {
	if c == nil {
		return cpuTimes{}
	}
	t, _ := b.procs.cpu(c.pid())
	return t
}

// cpuUsed is the CPU spent since a snapshot, split by process.
type cpuUsed struct {
	worker, spiders, api, pg, redis, bench time.Duration
}

func (b *Benchmarker) cpuSince(ctx context.Context, s cpuSnapshot) cpuUsed {
	r, _ := redisCPU(ctx, b.rdb)
	self, _ := b.procs.cpu(os.Getpid())
	dw := b.childCPU(b.worker).sub(s.worker)
	return cpuUsed{worker: dw.self, spiders: dw.children, api: b.childCPU(b.api).sub(s.api).self,
		pg: s.pg.since(ctx), redis: r - s.redis, bench: self.sub(s.bench).self}
}

// plus is u and v summed, process by process.
func (u cpuUsed) plus(v cpuUsed) cpuUsed {
	return cpuUsed{worker: u.worker + v.worker, spiders: u.spiders + v.spiders, api: u.api + v.api,
		pg: u.pg + v.pg, redis: u.redis + v.redis, bench: u.bench + v.bench}
}

// perOp formats CPU per operation, by process.
func (u cpuUsed) perOp(n int) string {
	f := func(d time.Duration) float64 { return ms(d) / float64(max(n, 1)) }
	parts := []string{}
	for _, p := range []struct {
		name string
		d    time.Duration
	}{{"API", u.api}, {"worker", u.worker}, {"spiders", u.spiders}, {"Postgres", u.pg}, {"Redis", u.redis}, {"bench", u.bench}} {
		if p.d > 0 {
			parts = append(parts, fmt.Sprintf("%s %.3f", p.name, f(p.d)))
		}
	}
	return "CPU ms/op: " + strings.Join(parts, ", ")
}

// completionThroughput: POST n jobs of a no-op shell spider, as fast as 8
// clients can, and time until every one is final. The baseline is fork/exec
// of the same file n times from this process, as many at once as the
// worker runs spiders.
func (b *Benchmarker) completionThroughput(ctx context.Context) error {
	n := b.sz.CompletionJobs
	noop := filepath.Join(b.spidersDir, "noop.sh")
	var next atomic.Int64
	var wg sync.WaitGroup
	var rawErr error
	var errOnce sync.Once
	start := time.Now()
	for range b.concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) && ctx.Err() == nil {
				cmd := exec.CommandContext(ctx, noop, "-a", "k=v")
				cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
				if err := cmd.Run(); err != nil {
					errOnce.Do(func() { rawErr = err })
				}
			}
		}()
	}
	wg.Wait()
	rawRate := float64(n) / time.Since(start).Seconds()
	if rawErr != nil {
		return fmt.Errorf("raw fork/exec: %w", rawErr)
	}
	b.say("   raw fork/exec of noop.sh, %d at once: %.0f/s", b.concurrency, rawRate)

	limit := time.Duration(n)*20*time.Millisecond + 10*time.Second // 50 jobs/s at worst
	snap := b.snapshot(ctx)
	start = time.Now()
	body := b.jobBody("noop", nil)
	// Every job in the database is final before this starts, so once all
	// are POSTed, none pending or running means all are done. The query
	// walks the two partial indexes on pending and running jobs.
	p := hammer(ctx, 8, n, limit, func(ctx context.Context) error { _, err := b.post(ctx, body); return err })
	if p.err != nil {
		return fmt.Errorf("POST: %d errors, first: %w", p.errs, p.err)
	}
	for {
		open, err := b.store.OpenJobCount(ctx)
		if err != nil {
			return err
		}
		if open == 0 {
			break
		}
		if time.Since(start) > limit || ctx.Err() != nil {
			return fmt.Errorf("%d of %d jobs not final after %s", open, n, limit)
		}
		time.Sleep(5 * time.Millisecond)
	}
	elapsed := time.Since(start)
	used := b.cpuSince(ctx, snap)
	finished, err := b.store.SpiderJobCount(ctx, b.spiders["noop"], scrapethis.StatusFinished, start)
	if err != nil {
		return err
	}
	rate := float64(p.ok) / elapsed.Seconds()
	b.completionRate = rate
	note := fmt.Sprintf("%d jobs in %s, all POSTed after %s; %d finished", p.ok, elapsed.Round(time.Millisecond),
		p.elapsed.Round(time.Millisecond), finished)
	if p.ok != n {
		note += fmt.Sprintf("; only %d of %d POSTed within %s", p.ok, n, limit)
	}
	if finished != p.ok {
		note += fmt.Sprintf(" (%d NOT finished: see the jobs' error field)", p.ok-finished)
	}
	b.res.add("completion: no-op spider jobs/s (POST all -> all final)", rate, "jobs/s", ptr(rawRate), true, atLeast(300), note)
	overhead := 1000/rate - 1000/rawRate
	b.res.add("completion: per-job overhead beyond fork/exec", overhead, "ms/job", nil, false, nil,
		fmt.Sprintf("1000/rate - 1000/raw rate; raw fork/exec of noop.sh, %d at once: %.3f ms/job", b.concurrency, 1000/rawRate))
	perJob := func(d time.Duration) float64 { return ms(d) / float64(max(p.ok, 1)) }
	b.res.add("completion: worker CPU per job", perJob(used.worker), "ms/job", nil, false, nil, "")
	b.res.add("completion: spider processes CPU per job", perJob(used.spiders), "ms/job", nil, false, nil, "")
	b.res.add("completion: API CPU per job", perJob(used.api), "ms/job", nil, false, nil, "")
	if used.pg >= 0 {
		b.res.add("completion: Postgres CPU per job", perJob(used.pg), "ms/job", nil, false, nil, "")
	}
	b.res.add("completion: Redis CPU per job", perJob(used.redis), "ms/job", nil, false, nil, "")
	b.res.add("completion: bench CPU per job", perJob(used.bench), "ms/job", nil, false, nil, "")
	return nil
}
