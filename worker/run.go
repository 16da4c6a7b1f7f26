package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/scrapethis/scrapethis"
	"github.com/scrapethis/scrapethis/db"
	"github.com/scrapethis/scrapethis/sandbox"
	"github.com/scrapethis/scrapethis/scrapyrun"
)

// stopMode says why a spider is being stopped; the first reason wins.
type stopMode int

const (
	stopNone     stopMode = iota
	stopCancel            // the user cancelled: the job ends cancelled
	stopTimeout           // the job ran out of time: it ends in error
	stopHandBack          // the worker is shutting down: the job goes back to pending
	stopLost              // the job is no longer ours: write nothing more
)

// run is one job's spider process on this worker.
type run struct {
	job  scrapethis.Job
	w    *Worker
	log  *slog.Logger
	once sync.Once
	stop chan struct{}
	mode stopMode
	// stopAt is when the stop was asked, for the cancel-latency metric.
	stopAt time.Time
	// retryStart: the job was handed back after a transient start failure;
	// the task fails so that asynq delivers it again after a backoff.
	retryStart bool
}

func newRun(w *Worker, job scrapethis.Job) *run {
	return &run{
		job:  job,
		w:    w,
		log:  w.log.With("job_id", job.ID, "spider", job.SpiderName, "user_id", job.UserID),
		stop: make(chan struct{}),
	}
}

// requestStop asks the spider to stop for the reason given; only the
// first request counts.
func (r *run) requestStop(mode stopMode) {
	r.once.Do(func() {
		r.mode = mode
		r.stopAt = time.Now()
		close(r.stop)
	})
}

func (r *run) stopMode() stopMode {
	select {
	case <-r.stop:
		return r.mode
	default:
		return stopNone
	}
}

// outcome is how a run ended, before it is written to Postgres.
type outcome struct {
	status scrapethis.Status
	reason *string
	retry  bool // handed back after a transient start failure: asynq tries it again
}

// maxStartAttempts bounds the tries of a job whose start keeps failing.
const maxStartAttempts = 5

// transientStart reports whether a start failed for a passing reason.
func transientStart(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) || errors.Is(err, syscall.EAGAIN) ||
		errors.Is(err, syscall.ENOMEM) || scrapethis.ErrorCode(err) == scrapethis.EUnavailable
}

func reason(s string) *string { return &s }

// execute runs the spider to its end and writes the job's final state. It
// returns once the whole process group is gone and everything is stored.
func (r *run) execute() {
	ctx := r.w.hardCtx
	cfg := r.w.cfg
	// A first attempt's log starts at 0; a re-run appends to the log of
	// the attempts before it.
	var logSeq int64
	if r.job.Attempts > 1 {
		var err error
		logSeq, err = retryValue(ctx, r.log, func() (int64, error) { return r.w.db.LogSeq(ctx, r.job.ID) })
		if err != nil {
			return
		}
	}
	logs := newBatcher(1000, logBatchBytes, cfg.LogFlush, logSeq, r.log, "log lines", func(ctx context.Context, first int64, b []string) error {
		return r.w.db.AppendLogs(ctx, r.job.ID, first, b)
	})
	logsDone := make(chan error, 1)
	go func() { logsDone <- logs.run(ctx) }()
	sysLog := func(format string, args ...any) {
		logs.put("[scrapethis] " + fmt.Sprintf(format, args...))
	}

	out, itemsErr := r.spawn(ctx, sysLog, logs.put)
	logs.close()
	if err := <-logsDone; err != nil && !errors.Is(err, db.ErrNotOwner) {
		r.log.Error("job log not fully stored", "err", err)
	}
	if errors.Is(itemsErr, db.ErrNotOwner) || r.stopMode() == stopLost {
		r.log.Warn("job is no longer this worker's; its state is left as others set it")
		return
	}
	r.finish(ctx, out)
	r.retryStart = out.retry
}

// spawn starts the spider and feeds its output to the stores until the
// process group is gone. It returns the outcome and any item store error.
func (r *run) spawn(ctx context.Context, sysLog func(string, ...any), logPut func(string)) (outcome, error) {
	cfg := r.w.cfg
	fail := func(format string, args ...any) (outcome, error) {
		msg := fmt.Sprintf(format, args...)
		sysLog("%s", msg)
		return outcome{status: scrapethis.StatusError, reason: reason(msg)}, nil
	}
	// A start that failed for want of a resource of the machine's (file
	// descriptors, processes, memory) or of the platform's (Postgres away
	// while a version is fetched) is handed back and tried again, a few
	// times, rather than failing the job for good.
	startFailed := func(err error) (outcome, error) {
		if transientStart(err) && r.job.Attempts < maxStartAttempts {
			sysLog("start failed: %v; the job is handed back and tried again (attempt %d of %d)", err, r.job.Attempts, maxStartAttempts)
			return outcome{status: scrapethis.StatusPending, retry: true}, nil
		}
		return fail("start failed: %v", err)
	}
	args, err := spiderArgs(r.job.Arguments)
	if err != nil {
		return fail("%v", err)
	}
	code, err := r.code(ctx, sysLog)
	if err != nil {
		if transientStart(err) {
			return startFailed(err)
		}
		return fail("%v", err)
	}
	// The version stays in the cache, never evicted, until the spider is gone.
	defer code.release()
	l := r.w.launcher
	policy, err := l.Policy(r.job.ID, code.mounts, r.memoryMB())
	if err != nil {
		return fail("%v", err)
	}
	memoryMB := 0
	if l.Enabled() {
		memoryMB = policy.Limits.MemoryMB
	}
	argv, err := code.argv(args, r.job.Settings, cfg.ScrapyLogLevel, memoryMB)
	if err != nil {
		return fail("%v", err)
	}
	// An executable runs as the path it has in the sandbox; an interpreter
	// by the path the worker finds, which the sandbox's system binds show.
	path := argv[0]
	if !filepath.IsAbs(path) {
		if path, err = exec.LookPath(argv[0]); err != nil {
			return startFailed(err)
		}
	}

	outR, outW, err := os.Pipe()
	if err != nil {
		return startFailed(err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return startFailed(err)
	}
	// The launcher starts it in its own process group (sandboxed, behind
	// the sandbox's init), with a SIGKILL if the worker dies (the guard
	// takes care of the rest of the group). A Scrapy spider is forked from
	// its interpreter's warm parent when there is one, into the same
	// sandbox; without one (or when it is gone) it starts a fresh Python.
	cmd := sandbox.Command{
		Path:   path,
		Args:   argv,
		Env:    spiderEnv(r.job.ID, r.job.SpiderName, l.Enabled()),
		Stdout: outW,
		Stderr: errW,
	}
	var proc *sandbox.Process
	zygotePid := 0
	if code.exec == "" && r.w.zygotes != nil {
		if z := r.w.zygotes.get(ctx, code.pyHost); z != nil {
			proc, err = r.w.startForked(policy, cmd, z)
			switch {
			case errors.Is(err, scrapyrun.ErrZygoteGone):
				sysLog("the warm Python parent is gone; this attempt starts a fresh Python")
				proc, err = nil, nil
			case err == nil:
				zygotePid = z.Pid()
			}
		}
	}
	if proc == nil && err == nil {
		proc, err = r.w.start(policy, cmd)
	}
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		return startFailed(err)
	}
	pgid := proc.Pid()
	r.w.guard.add(pgid)
	defer r.w.guard.remove(pgid)
	r.w.metrics.SpiderStarted()
	defer r.w.metrics.SpiderEnded()
	how := ""
	if zygotePid > 0 {
		how = fmt.Sprintf(", forked from the warm Python parent %d", zygotePid)
	}
	if l.Enabled() {
		sysLog("attempt %d started on worker %s in a sandbox (uid %d, %d MiB memory, %d MiB disk)%s: %s",
			r.job.Attempts, r.w.id, proc.UID(), policy.Limits.MemoryMB, policy.Limits.DiskMB, how, shownArgv(argv))
	} else {
		sysLog("attempt %d started on worker %s%s: %s", r.job.Attempts, r.w.id, how, shownArgv(argv))
	}
	r.log.Info("spider started", "pid", pgid, "attempt", r.job.Attempts, "sandboxed", l.Enabled())

	items := newBatcher(cfg.ItemBatch, itemBatchBytes, cfg.ItemFlush, 0, r.log, "items", func(ctx context.Context, first int64, b []string) error {
		err := r.w.db.AppendItems(ctx, r.job.ID, r.w.id, first, b)
		if err == nil {
			r.w.metrics.ItemsStored(len(b))
		}
		return err
	})
	itemsDone := make(chan error, 1)
	go func() { itemsDone <- items.run(ctx) }()

	stats := newStatsWriter(r)
	statsDone := make(chan struct{})
	go func() { defer close(statsDone); stats.run(ctx) }()
	// Only the stdout reader touches these; they are read once it is done.
	var drops dropCounts
	var itemBytes int64
	maxItemBytes := int64(cfg.JobItemMaxMB) << 20
	readers := sync.WaitGroup{}
	readers.Add(2)
	go func() {
		defer readers.Done()
		n := 0
		readLines(outR, func(line []byte, truncated bool) {
			n++
			if truncated {
				drops.tooLong++
				logPut(fmt.Sprintf("[scrapethis] warning: stdout line %d is longer than %d bytes; not stored", n, MaxLineBytes))
				return
			}
			if item, ok := parseItem(line); ok {
				if itemBytes += int64(len(item)); maxItemBytes > 0 && itemBytes > maxItemBytes {
					if drops.overCap++; drops.overCap == 1 {
						logPut(fmt.Sprintf("[scrapethis] warning: the job's items passed its limit of %d MiB; further items are not stored", maxItemBytes>>20))
					}
					return
				}
				items.put(item)
			} else if len(line) > 0 {
				drops.notItems++
				logPut(logLine(fmt.Appendf(nil, "[scrapethis] warning: stdout line %d is not a JSON object; not counted: %.200s", n, line)))
			}
		})
	}()
	go func() {
		defer readers.Done()
		readLines(errR, func(line []byte, truncated bool) {
			if st, ok := scrapyrun.ParseStats(line); ok {
				stats.set(st)
				return
			}
			logPut(logLine(line))
		})
	}()

	exited := make(chan sandbox.Result, 1)
	go func() { exited <- r.w.wait(proc) }()

	var timeout <-chan time.Time
	if limit := r.timeout(); limit > 0 {
		t := time.NewTimer(limit)
		defer t.Stop()
		timeout = t.C
	}
	var kill <-chan time.Time
	stop := r.stop
	var res sandbox.Result
wait:
	for {
		select {
		case res = <-exited:
			break wait
		case <-timeout:
			timeout = nil
			r.requestStop(stopTimeout)
		case <-stop:
			stop = nil
			sysLog("stopping spider (%s): SIGTERM to its process group, SIGKILL after %s", r.modeName(), cfg.CancelGrace)
			signalGroup(pgid, syscall.SIGTERM)
			kt := time.NewTimer(cfg.CancelGrace)
			defer kt.Stop()
			kill = kt.C
		case <-kill:
			kill = nil
			sysLog("spider did not stop within %s: SIGKILL to its process group", cfg.CancelGrace)
			signalGroup(pgid, syscall.SIGKILL)
		}
	}
	// The spider is gone; take down anything it left in its group. A
	// sandbox is gone with its init: the kernel has killed the rest.
	if !proc.Sandboxed() {
		signalGroup(pgid, syscall.SIGKILL)
		if !r.awaitGroupGone(pgid) {
			sysLog("processes of the spider's group outlived it by 1s, even after SIGKILL")
		}
	}
	if r.stopMode() == stopCancel {
		r.w.metrics.Cancelled(time.Since(r.stopAt))
	}
	readersDone := make(chan struct{})
	go func() { readers.Wait(); close(readersDone) }()
	select {
	case <-readersDone:
	case <-time.After(5 * time.Second):
		// A process outside the group still holds a pipe: stop reading.
		outR.Close()
		errR.Close()
		<-readersDone
	}
	outR.Close()
	errR.Close()
	items.close()
	itemsErr := <-itemsDone
	stats.noteDrops(drops)
	stats.close()
	<-statsDone
	if itemsErr != nil && !errors.Is(itemsErr, db.ErrNotOwner) {
		r.log.Error("items not fully stored", "err", itemsErr)
	}

	return r.decide(res, policy.Limits.MemoryMB, stats.finishReason(), sysLog), itemsErr
}

// shownArgv is the command line as the job's log shows it: the runner's
// script (python -c SCRIPT, some 15 KB) as a placeholder.
func shownArgv(argv []string) string {
	out := make([]string, len(argv))
	for i, a := range argv {
		if i > 0 && argv[i-1] == "-c" {
			a = "<scrapethis runner>"
		}
		out[i] = a
	}
	return strings.Join(out, " ")
}

func (r *run) modeName() string {
	switch r.stopMode() {
	case stopCancel:
		return "cancelled"
	case stopTimeout:
		return "timeout"
	case stopHandBack:
		return "worker shutting down"
	case stopLost:
		return "job no longer on this worker"
	}
	return "stop"
}

func (r *run) timeout() time.Duration {
	if r.job.TimeoutSeconds != nil {
		return time.Duration(*r.job.TimeoutSeconds) * time.Second
	}
	return r.w.cfg.DefaultTimeout
}

// awaitGroupGone waits briefly until no process of the group is left,
// reaping the group's processes the worker adopted (their zombies would
// keep the group alive): with the SIGKILL just sent, that takes
// milliseconds. It reports whether the group is gone.
func (r *run) awaitGroupGone(pgid int) bool {
	for i := 0; i < 200; i++ {
		r.w.reaper.reapGroup(pgid)
		if !groupAlive(pgid) {
			return true
		}
		time.Sleep(5 * time.Millisecond)
	}
	return false
}

// memoryMB is the job's memory limit; 0 is the operator's default.
func (r *run) memoryMB() int {
	if r.job.MemoryMB != nil {
		return *r.job.MemoryMB
	}
	return 0
}

// decide turns how the process ended into the job's outcome.
func (r *run) decide(res sandbox.Result, memoryMB int, finishReason string, sysLog func(string, ...any)) outcome {
	waitErr := res.Err
	switch r.stopMode() {
	case stopCancel:
		sysLog("spider stopped: cancelled")
		return outcome{status: scrapethis.StatusCancelled, reason: reason(scrapethis.ReasonCancelled)}
	case stopTimeout:
		sysLog("spider stopped: timeout after %s", r.timeout())
		return outcome{status: scrapethis.StatusError, reason: reason(scrapethis.ReasonTimeout)}
	case stopHandBack:
		sysLog("spider stopped: worker shutting down; job handed back")
		return outcome{status: scrapethis.StatusPending}
	}
	if res.MemoryExceeded() {
		why := fmt.Sprintf("memory limit exceeded (%d MiB)", memoryMB)
		sysLog("spider ended: %s: %s", exitReason(waitErr), why)
		return outcome{status: scrapethis.StatusError, reason: reason(why)}
	}
	if finishReason == "memusage_exceeded" {
		why := fmt.Sprintf("memory limit: Scrapy closed the spider near its %d MiB (finish_reason memusage_exceeded)", memoryMB)
		sysLog("spider ended: %s", why)
		return outcome{status: scrapethis.StatusError, reason: reason(why)}
	}
	if waitErr != nil {
		why := exitReason(waitErr)
		sysLog("spider ended: %s", why)
		return outcome{status: scrapethis.StatusError, reason: reason(why)}
	}
	// Scrapy exits 0 even when something else stopped it: its finish_reason
	// says whether the crawl ran to its end.
	if finishReason == "shutdown" {
		sysLog("spider ended: exit status 0, but Scrapy's finish_reason is shutdown")
		return outcome{status: scrapethis.StatusError, reason: reason("scrapy finish_reason: shutdown")}
	}
	sysLog("spider ended: exit status 0")
	return outcome{status: scrapethis.StatusFinished}
}

// finish writes the outcome, retrying while Postgres is away: a job must
// never stay running with no spider behind it.
func (r *run) finish(ctx context.Context, out outcome) {
	_, err := retryValue(ctx, r.log, func() (bool, error) {
		if out.status == scrapethis.StatusPending {
			st, err := r.w.db.HandBackJob(ctx, r.job.ID, r.w.id)
			if err == nil && st != "" {
				out.status = st
			}
			return true, err
		}
		ok, err := r.w.db.FinishJob(ctx, r.job.ID, r.w.id, out.status, out.reason)
		if err == nil && !ok {
			r.log.Warn("job was no longer running on this worker; final state left as it was")
		}
		return ok, err
	})
	if err != nil {
		r.log.Error("final state not stored", "err", err)
		return
	}
	r.w.metrics.JobFinished(string(out.status))
	r.log.Info("job ended", "status", out.status, "reason", deref(out.reason))
	if out.status != scrapethis.StatusPending {
		r.w.release(r.job) // a handed-back job keeps its place
	}
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
