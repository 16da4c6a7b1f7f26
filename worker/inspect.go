package worker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"github.com/hibiken/asynq"

	"github.com/scrapethis/scrapethis"
	"github.com/scrapethis/scrapethis/codecache"
	"github.com/scrapethis/scrapethis/sandbox"
	"github.com/scrapethis/scrapethis/scrapyrun"
	"github.com/scrapethis/scrapethis/tasks"
)

// listTimeout bounds `scrapy list` of one version: importing every spider
// module of a project.
const listTimeout = 5 * time.Minute

// inspect is the asynq handler of a version's inspection: it prepares the
// version as a job would (fetch, verify, unpack, environment), lists its
// spiders in the sandbox, and marks it ready or failed. It returns an
// error only for a fault of the platform's (Postgres away, say), for asynq
// to try again; on the last try the version fails, so none stays building.
func (w *Worker) inspect(ctx context.Context, t *asynq.Task) error {
	p, err := tasks.ParseInspectPayload(t.Payload())
	if err != nil {
		return fmt.Errorf("%w: %w", err, asynq.SkipRetry)
	}
	w.wg.Add(1)
	defer w.wg.Done()
	v, err := w.db.VersionByID(ctx, p.VersionID)
	if scrapethis.ErrorCode(err) == scrapethis.ENotFound {
		return fmt.Errorf("version %s has no row: %w", p.VersionID, asynq.SkipRetry)
	}
	if err != nil {
		return fmt.Errorf("inspect version %s: %w", p.VersionID, err)
	}
	if v.Status != scrapethis.VersionBuilding {
		return nil
	}
	log := w.log.With("version_id", v.ID, "project", v.Project, "version", v.Label, "user_id", v.UserID)
	start := time.Now()
	spiders, reason, err := w.inspectVersion(ctx, v)
	if err != nil {
		retried, _ := asynq.GetRetryCount(ctx)
		maxRetry, _ := asynq.GetMaxRetry(ctx)
		if retried < maxRetry {
			log.Warn("inspection failed; asynq will try again", "attempt", retried+1, "err", err)
			return err
		}
		reason = "inspection failed: " + err.Error()
	}
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if reason != "" {
		log.Info("version failed", "reason", reason, "took", time.Since(start))
		return w.db.FailVersion(fctx, v.ID, reason)
	}
	got, err := w.db.ReadyVersion(fctx, v.ID, spiders)
	if err != nil {
		return fmt.Errorf("mark version %s ready: %w", v.ID, err)
	}
	log.Info("version inspected", "status", got.Status, "spiders", len(spiders), "error", deref(got.Error), "took", time.Since(start))
	return nil
}

// inspectVersion returns the version's spiders (name: file), or the reason
// it fails (the user's to fix), or an error of the platform's.
func (w *Worker) inspectVersion(ctx context.Context, v scrapethis.Version) (map[string]string, string, error) {
	entry, err := w.cache.Acquire(ctx, codecache.Want{SHA256: v.SHA256, ContentType: v.ContentType})
	if reason, ok := userFault(err); ok {
		return nil, reason, nil
	}
	if err != nil {
		return nil, "", err
	}
	defer entry.Release()
	if v.Kind == scrapethis.KindBundle {
		if len(entry.Project.Spiders) == 0 {
			return nil, "scrapethis.json names no spiders", nil
		}
		return entry.Project.Spiders, "", nil
	}
	if v.SettingsModule == "" {
		return nil, "scrapy.cfg has no [settings] default: Scrapy cannot find the project's settings module", nil
	}
	code := w.versionCode(entry)
	argv := scrapyrun.List{Python: code.python, ProjectRoot: code.projectRoot, SettingsModule: v.SettingsModule}.Argv()
	stdout, stderr, res, err := w.capture(ctx, "inspect-"+v.ID, code.mounts, argv, listTimeout)
	if err != nil {
		return nil, "", err
	}
	if res.MemoryExceeded() {
		return nil, "listing the spiders went over the memory limit", nil
	}
	if res.Err != nil {
		why := scrapyrun.LastError(stderr)
		if why == "" {
			why = exitReason(res.Err)
		}
		return nil, "scrapy list failed: " + why, nil
	}
	list, err := scrapyrun.ParseList(stdout)
	if err != nil {
		return nil, "scrapy list: " + err.Error(), nil
	}
	spiders := make(map[string]string, len(list))
	for _, s := range list {
		spiders[s.Name] = s.File
	}
	if len(spiders) == 0 {
		return nil, "the project has no spiders (scrapy list found none)", nil
	}
	return spiders, "", nil
}

// userFault tells a version's own fault (a failed dependency install, an
// archive that does not unpack) from the platform's.
func userFault(err error) (string, bool) {
	var be *codecache.BuildError
	switch {
	case err == nil:
		return "", false
	case errors.As(err, &be):
		return "dependency install failed: " + be.Error(), true
	case scrapethis.ErrorCode(err) == scrapethis.EInvalid:
		return scrapethis.ErrorMessage(err), true
	case scrapethis.ErrorCode(err) == scrapethis.ENotFound:
		return "the version's archive is no longer stored", true
	}
	return "", false
}

// capture runs argv in the sandbox with the mounts, and returns its output
// (bounded) once its whole process tree is gone.
func (w *Worker) capture(ctx context.Context, name string, mounts []sandbox.Mount, argv []string, timeout time.Duration) (stdout, stderr []byte, res sandbox.Result, err error) {
	l := w.launcher
	policy, err := l.Policy(name, mounts, 0)
	if err != nil {
		return nil, nil, res, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, nil, res, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return nil, nil, res, err
	}
	proc, err := w.start(policy, sandbox.Command{Path: argv[0], Args: argv, Env: spiderEnv(name, "", l.Enabled()), Stdout: outW, Stderr: errW})
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		return nil, nil, res, fmt.Errorf("start %s: %w", argv[0], err)
	}
	pgid := proc.Pid()
	w.guard.add(pgid)
	defer w.guard.remove(pgid)
	var outBuf, errBuf bytes.Buffer
	readers := make(chan struct{}, 2)
	go func() {
		io.Copy(&outBuf, io.LimitReader(outR, 4<<20))
		io.Copy(io.Discard, outR)
		readers <- struct{}{}
	}()
	go func() {
		io.Copy(&errBuf, io.LimitReader(errR, 256<<10))
		io.Copy(io.Discard, errR)
		readers <- struct{}{}
	}()
	exited := make(chan sandbox.Result, 1)
	go func() { exited <- w.wait(proc) }()
	t := time.NewTimer(timeout)
	defer t.Stop()
	timedOut := false
	select {
	case res = <-exited:
	case <-t.C:
		timedOut = true
		signalGroup(pgid, syscall.SIGKILL)
		res = <-exited
	case <-ctx.Done():
		signalGroup(pgid, syscall.SIGKILL)
		res = <-exited
	}
	if !proc.Sandboxed() {
		signalGroup(pgid, syscall.SIGKILL)
		w.reaper.reapGroup(pgid)
	}
	// Every writer is gone with the process tree: the readers reach the
	// end of what it wrote. One that does not (a process escaped the group)
	// is cut off.
	grace := time.NewTimer(5 * time.Second)
	defer grace.Stop()
	for n := 0; n < 2; n++ {
		select {
		case <-readers:
		case <-grace.C:
			outR.Close()
			errR.Close()
			<-readers
		}
	}
	outR.Close()
	errR.Close()
	if ctx.Err() != nil {
		return nil, nil, res, ctx.Err()
	}
	if timedOut {
		res.Err = fmt.Errorf("did not finish within %s", timeout)
	}
	return outBuf.Bytes(), errBuf.Bytes(), res, nil
}
