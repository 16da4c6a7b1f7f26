package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/scrapethis/scrapethis"
)

// scrapySpiderFile is a trivial Scrapy spider (no request at all) whose
// __init__ writes "TIME PID" to DIR/JOB_ID.init; idle, it then waits,
// open, until it is stopped.
func scrapySpiderFile(idle bool) string {
	keep := ""
	if idle {
		keep = `
    @classmethod
    def from_crawler(cls, crawler, *args, **kwargs):
        spider = super().from_crawler(crawler, *args, **kwargs)
        crawler.signals.connect(spider.keep_open, signal=scrapy.signals.spider_idle)
        return spider

    def keep_open(self, spider):
        raise scrapy.exceptions.DontCloseSpider
`
	}
	return `import os, time
import scrapy
import scrapy.exceptions
import scrapy.signals


class Trivial(scrapy.Spider):
    name = "trivial"
    start_urls = []

    def __init__(self, *args, **kwargs):
        stamp = "%.6f %d" % (time.time(), os.getpid())
        super().__init__(*args, **kwargs)
        with open(os.path.join(self.dir, os.environ["SCRAPETHIS_JOB_ID"] + ".init"), "w") as f:
            f.write(stamp)
` + keep
}

// scrapyRun is what one runner measured.
type scrapyRun struct {
	latency []time.Duration // POST -> spider __init__
	rate    float64         // trivial jobs/s, the worker's slots full
	pss     float64         // KiB, summed over the idle spiders
	parent  string          // the warm parent's memory and start, for fork
	parentK float64         // its PSS in KiB
}

// scrapyRunners compares the Scrapy runners (SCRAPETHIS_SCRAPY_RUNNER=exec
// and fork) in one run, each in a worker child of its own with 4 slots and
// the sandbox off (as the bench's own worker): POST -> spider __init__ one
// job at a time, trivial jobs/s with every slot busy, and the summed PSS of
// 4 idle spiders running at once. The bench's own worker is back when it
// ends.
func (b *Benchmarker) scrapyRunners(ctx context.Context) error {
	if _, err := os.Stat("/usr/bin/python3"); err != nil {
		return errors.New("no /usr/bin/python3")
	}
	b.worker.stop(30 * time.Second)
	defer func() {
		b.worker.stop(30 * time.Second)
		var err error
		if b.worker, err = b.startChild("worker", "worker"); err != nil {
			b.say("   restart of the worker failed: %v", err)
		}
	}()
	runs := map[string]scrapyRun{}
	for _, runner := range []string{"exec", "fork"} {
		r, err := b.scrapyRunner(ctx, runner)
		if err != nil {
			return fmt.Errorf("runner %s: %w", runner, err)
		}
		runs[runner] = r
	}
	ex, fk := runs["exec"], runs["fork"]
	n := len(fk.latency)
	b.res.add("scrapy: trivial jobs/s, fork runner (4 slots)", fk.rate, "jobs/s", ptr(ex.rate), true, ratioAtLeast(3),
		"POST all -> all final, 8 clients; baseline: SCRAPETHIS_SCRAPY_RUNNER=exec in the same run")
	b.res.add("scrapy: POST -> spider __init__ p50, fork runner", ms(percentile(fk.latency, 50)), "ms",
		ptr(ms(percentile(ex.latency, 50))), false, atMost(60),
		fmt.Sprintf("%d jobs one at a time; p90 fork %.1f ms, exec %.1f ms (baseline: exec)", n,
			ms(percentile(fk.latency, 90)), ms(percentile(ex.latency, 90))))
	b.res.add("scrapy: summed PSS of 4 idle spiders, fork runner", fk.pss/1024, "MiB", ptr(ex.pss/1024), false, ratioAtLeast(2),
		fmt.Sprintf("target at most 0.5x exec; with the warm parent's own PSS counted too: %.1f MiB", (fk.pss+fk.parentK)/1024))
	b.res.add("scrapy: warm parent (zygote) memory, idle", fk.parentK/1024, "MiB PSS", nil, false, nil, fk.parent)
	return nil
}

// parentReady is the worker's JSON log line for a warm parent; slog
// writes the start duration in nanoseconds.
var parentReady = regexp.MustCompile(`"msg":"warm Python parent ready".*?"pid":(\d+),"start":(\d+)`)

func (b *Benchmarker) scrapyRunner(ctx context.Context, runner string) (scrapyRun, error) {
	var out scrapyRun
	b.worker.stop(30 * time.Second) // the previous one: one worker at a time
	saved := b.env
	b.env = append(slices.Clone(saved), "SCRAPETHIS_SCRAPY_RUNNER="+runner, "SCRAPETHIS_WORKER_CONCURRENCY=4")
	w, err := b.startChild("worker-scrapy-"+runner, "worker")
	b.env = saved
	if err != nil {
		return out, err
	}
	b.worker = w
	dir := filepath.Join(b.dir, "scrapy-"+runner)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return out, err
	}
	args := map[string]string{"dir": dir}
	// The first job waits for the warm parent (fork): not measured.
	for range 2 {
		id, err := b.postJob(ctx, "scrapy", args)
		if err != nil {
			return out, err
		}
		if job, err := b.waitFinal(ctx, id, 60*time.Second); err != nil || job.Status != scrapethis.StatusFinished {
			return out, fmt.Errorf("a trivial Scrapy job ended %s (%v): %s; worker log:\n%s", job.Status, err, deref(job.Error), w.tail())
		}
	}
	for range max(b.sz.DispatchJobs/3, 3) {
		start := time.Now()
		id, err := b.postJob(ctx, "scrapy", args)
		if err != nil {
			return out, err
		}
		job, err := b.waitFinal(ctx, id, 60*time.Second)
		if err != nil || job.Status != scrapethis.StatusFinished {
			return out, fmt.Errorf("trivial job ended %s (%v)", job.Status, err)
		}
		at, _, err := readInitStamp(filepath.Join(dir, id+".init"))
		if err != nil {
			return out, err
		}
		out.latency = append(out.latency, at.Sub(start))
	}
	if out.rate, err = b.spiderRate(ctx, "scrapy", args, max(b.sz.CompletionJobs/15, 4)); err != nil {
		return out, err
	}

	// Four idle spiders at once.
	var ids []string
	for range 4 {
		id, err := b.postJob(ctx, "scrapy_idle", args)
		if err != nil {
			return out, err
		}
		ids = append(ids, id)
	}
	defer func() {
		for _, id := range ids {
			b.client.do(ctx, "DELETE", "/api/v1/jobs/"+id, nil)
		}
		for _, id := range ids {
			b.waitFinal(ctx, id, 30*time.Second)
		}
	}()
	var pids []int
	deadline := time.Now().Add(2 * time.Minute)
	for _, id := range ids {
		for {
			_, pid, err := readInitStamp(filepath.Join(dir, id+".init"))
			if err == nil {
				pids = append(pids, pid)
				break
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				return out, fmt.Errorf("idle spider %s did not start within 2 minutes; worker log:\n%s", id, w.tail())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	// Let them open and go idle (the engine's first idle check).
	time.Sleep(2 * time.Second)
	for _, pid := range pids {
		k, err := pssKiB(pid)
		if err != nil {
			return out, err
		}
		out.pss += k
	}
	if runner == "fork" {
		m := parentReady.FindStringSubmatch(readAll(w.logPath))
		if m == nil {
			return out, fmt.Errorf("no warm parent in the worker's log:\n%s", w.tail())
		}
		zp, _ := strconv.Atoi(m[1])
		startNs, _ := strconv.ParseInt(m[2], 10, 64)
		out.parentK, _ = pssKiB(zp)
		_, rss, _ := b.procs.memory(zp)
		out.parent = fmt.Sprintf("its RSS %d KiB, PSS %.0f KiB while 4 spiders run; it was warm %s after its start (imports of Scrapy, Twisted and the default components)",
			rss/1024, out.parentK, time.Duration(startNs).Round(time.Millisecond))
	}
	return out, nil
}

// spiderRate POSTs n jobs of spider from 8 clients and returns jobs/s
// until all are final; every one must have finished.
func (b *Benchmarker) spiderRate(ctx context.Context, spider string, args map[string]string, n int) (float64, error) {
	limit := time.Duration(n)*2*time.Second + 30*time.Second
	start := time.Now()
	body := b.jobBody(spider, args)
	p := hammer(ctx, 8, n, limit, func(ctx context.Context) error { _, err := b.post(ctx, body); return err })
	if p.err != nil {
		return 0, fmt.Errorf("POST: %d errors, first: %w", p.errs, p.err)
	}
	for {
		open, err := b.store.OpenJobCount(ctx)
		if err != nil {
			return 0, err
		}
		if open == 0 {
			break
		}
		if time.Since(start) > limit || ctx.Err() != nil {
			return 0, fmt.Errorf("%d of %d jobs not final after %s", open, n, limit)
		}
		time.Sleep(5 * time.Millisecond)
	}
	elapsed := time.Since(start)
	finished, err := b.store.SpiderJobCount(ctx, b.spiders[spider], scrapethis.StatusFinished, start)
	if err != nil {
		return 0, err
	}
	if finished != p.ok {
		return 0, fmt.Errorf("%d of %d %s jobs did not finish", p.ok-finished, p.ok, spider)
	}
	return float64(p.ok) / elapsed.Seconds(), nil
}

func readInitStamp(path string) (time.Time, int, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return time.Time{}, 0, err
	}
	f := strings.Fields(string(data))
	if len(f) != 2 {
		return time.Time{}, 0, fmt.Errorf("stamp %s: %q", path, data)
	}
	sec, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return time.Time{}, 0, err
	}
	pid, err := strconv.Atoi(f[1])
	return time.Unix(0, int64(sec*1e9)), pid, err
}

// pssKiB is a process's proportional set size.
func pssKiB(pid int) (float64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "Pss:" {
			return strconv.ParseFloat(f[1], 64)
		}
	}
	return 0, fmt.Errorf("no Pss in /proc/%d/smaps_rollup", pid)
}

func readAll(path string) string {
	data, _ := os.ReadFile(path)
	return string(data)
}
