package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/scrapethis/scrapethis"
)

// sandboxCost: what the spider sandbox costs at the platform level, with
// the sandbox off and on (a worker child with SCRAPETHIS_SANDBOX=on, run in
// the bench worker's place), in the same run and on the same
// no-op shell spider: the median job run time one job at a time (the
// worker's started_at -> finished_at, so no polling is counted), completion
// jobs/s of many at once, and the memory the sandbox's init holds per
// running job. The sandboxed worker needs root; without it the rows fail
// with its one-sentence refusal. The bench's own worker is back when it
// ends.
func (b *Benchmarker) sandboxCost(ctx context.Context) error {
	// Blocks of four rounds, each in a worker started for it: on, off,
	// off, on (ABBA, so that a drift over the rounds falls on both sides
	// alike, and neither side runs in a worker warmed by earlier
	// scenarios); a full run makes two, for a mean less at the mercy of
	// one disturbed round.
	seq := max(b.sz.DispatchJobs/2, 5)
	var runs [2][]time.Duration // [0] off, [1] on
	var rates [2][]float64
	var used [2]cpuUsed
	defer func() {
		// The off worker again, for the scenarios after this one.
		b.worker.stop(30 * time.Second)
		var err error
		if b.worker, err = b.startChild("worker", "worker"); err != nil {
			b.say("   restart of the worker failed: %v", err)
		}
	}()
	saved := b.env
	var order []bool
	for range max(b.sz.SandboxBlocks, 1) {
		order = append(order, true, false, false, true)
	}
	var rounds []string
	for _, on := range order {
		side, name, env := 0, "worker", saved
		if on {
			side, name, env = 1, "worker-sandbox", append(slices.Clone(saved), "SCRAPETHIS_SANDBOX=on")
		}
		b.worker.stop(30 * time.Second)
		b.env = env
		w, err := b.startChild(name, "worker")
		b.env = saved
		if err != nil {
			return err
		}
		b.worker = w
		if id, err := b.postJob(ctx, "noop", nil); err != nil {
			return err
		} else if job, err := b.waitFinal(ctx, id, 30*time.Second); err != nil || job.Status != scrapethis.StatusFinished {
			return fmt.Errorf("the %s did not run a job (%s %v); its log:\n%s", name, job.Status, err, b.worker.tail())
		}
		run, err := b.noopRunTimes(ctx, seq)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		cpu := b.snapshot(ctx)
		rate, err := b.noopRate(ctx, b.sz.CompletionJobs)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		used[side] = used[side].plus(b.cpuSince(ctx, cpu))
		runs[side] = append(runs[side], run...)
		rates[side] = append(rates[side], rate)
		label := map[bool]string{true: "on", false: "off"}[on]
		rounds = append(rounds, fmt.Sprintf("%s %.1f", label, rate))
		b.say("   sandbox %s: %.1f jobs/s, run time p50 %.2f ms", label, rate, ms(percentile(run, 50)))
	}
	init := b.initName()
	onRun, offRun := runs[1], runs[0]
	on, off := ms(percentile(onRun, 50)), ms(percentile(offRun, 50))
	b.res.add("sandbox: no-op job run time p50, sandbox on (started -> finished)", on, "ms", ptr(off), false, nil,
		fmt.Sprintf("%d jobs one at a time, each way; p90 on %.2f ms, off %.2f ms (the baseline: the same worker binary with SCRAPETHIS_SANDBOX=off); init: %s",
			len(onRun), ms(percentile(onRun, 90)), ms(percentile(offRun, 90)), init))
	b.res.add("sandbox: per-job overhead p50 (on minus off)", on-off, "ms", nil, false, atMost(10), "")
	n := len(order) / 2 * b.sz.CompletionJobs // a side's
	b.res.add("sandbox: no-op jobs/s, sandbox on (POST all -> all final)", mean(rates[1]), "jobs/s", ptr(mean(rates[0])), true, ratioAtLeast(0.8),
		fmt.Sprintf("%d jobs a round, 8 POSTing clients, %d rounds each in a worker started for it: %s jobs/s (means compared); "+
			"baseline: the same with SCRAPETHIS_SANDBOX=off; on: %s; off: %s (spiders: with the sandbox on, the inits and what they run)",
			b.sz.CompletionJobs, len(order), strings.Join(rounds, ", "), used[1].perOp(n), used[0].perOp(n)))
	return b.sandboxMemory(ctx)
}

// noopRunTimes runs n no-op jobs one at a time and returns each one's run
// time as the worker stored it (started_at -> finished_at).
func (b *Benchmarker) noopRunTimes(ctx context.Context, n int) ([]time.Duration, error) {
	var out []time.Duration
	for range n {
		id, err := b.postJob(ctx, "noop", nil)
		if err != nil {
			return nil, err
		}
		job, err := b.waitFinal(ctx, id, 30*time.Second)
		if err != nil {
			return nil, err
		}
		if job.Status != scrapethis.StatusFinished || job.StartedAt == nil || job.FinishedAt == nil {
			return nil, fmt.Errorf("no-op job ended %s (%s)", job.Status, deref(job.Error))
		}
		out = append(out, job.FinishedAt.Sub(*job.StartedAt))
	}
	return out, nil
}

// noopRate POSTs n no-op jobs from 8 clients and returns jobs/s until all
// are final; every one must have finished.
func (b *Benchmarker) noopRate(ctx context.Context, n int) (float64, error) {
	limit := time.Duration(n)*50*time.Millisecond + 20*time.Second
	start := time.Now()
	body := b.jobBody("noop", nil)
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
	finished, err := b.store.SpiderJobCount(ctx, b.spiders["noop"], scrapethis.StatusFinished, start)
	if err != nil {
		return 0, err
	}
	if finished != p.ok {
		return 0, fmt.Errorf("%d of %d no-op jobs did not finish", p.ok-finished, p.ok)
	}
	return float64(p.ok) / elapsed.Seconds(), nil
}

// sandboxMemory runs a sleeping spider in the sandboxed worker and reads
// the memory of its init (the worker's child that is not the spider
// guard) while it runs, then cancels it.
func (b *Benchmarker) sandboxMemory(ctx context.Context) error {
	id, err := b.postJob(ctx, "sleeper", map[string]string{"dir": filepath.Join(b.dir, "pids")})
	if err != nil {
		return err
	}
	defer b.client.do(ctx, "DELETE", "/api/v1/jobs/"+id, nil)
	deadline := time.Now().Add(10 * time.Second)
	for {
		for pid, argv := range b.procs.children(b.worker.pid()) {
			if len(argv) == 0 || strings.Contains(strings.Join(argv, " "), "spider-guard") {
				continue
			}
			// Once the init has a child, the spider runs and the init's
			// work is done.
			if len(b.procs.children(pid)) == 0 {
				continue
			}
			pr, err := b.procs.fs.Proc(pid)
			if err != nil {
				continue
			}
			st, err := pr.NewStatus()
			if err != nil {
				continue
			}
			cg := jobMemcgUsage(pid)
			b.res.add("sandbox: init memory per running job (private, RssAnon)", float64(st.RssAnon)/1024, "KiB", nil, false, nil,
				fmt.Sprintf("init %s: RSS %d KiB in all (the rest is its binary's pages, shared by every init); the job's memory cgroup holds %s with a sleeping shell spider",
					filepath.Base(argv[0]), st.VmRSS/1024, cg))
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return errors.New("no sandbox init with a running spider under the sandboxed worker within 10s")
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// jobMemcgUsage is the memory charged to the process's cgroup (v1 or v2),
// as text, or "unknown".
func jobMemcgUsage(pid int) string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return "unknown"
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 {
			continue
		}
		var file string
		switch {
		case f[1] == "memory":
			file = filepath.Join("/sys/fs/cgroup/memory", f[2], "memory.usage_in_bytes")
		case f[0] == "0" && f[1] == "":
			file = filepath.Join("/sys/fs/cgroup", f[2], "memory.current")
		default:
			continue
		}
		if v, err := os.ReadFile(file); err == nil {
			var n int64
			fmt.Sscan(strings.TrimSpace(string(v)), &n)
			return fmt.Sprintf("%d KiB", n/1024)
		}
	}
	return "unknown"
}

// initName says which init the sandboxed worker runs: the small
// scrapethis-init beside the binary, or the binary's own sandbox-init.
func (b *Benchmarker) initName() string {
	if st, err := os.Stat(filepath.Join(filepath.Dir(b.bin), "scrapethis-init")); err == nil && st.Mode()&0o111 != 0 {
		return "scrapethis-init (beside " + filepath.Base(b.bin) + ")"
	}
	return filepath.Base(b.bin) + " sandbox-init"
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
