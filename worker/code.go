package worker

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/scrapethis/scrapethis"
	"github.com/scrapethis/scrapethis/codecache"
	"github.com/scrapethis/scrapethis/sandbox"
	"github.com/scrapethis/scrapethis/scrapyrun"
)

// spiderCode is the code a job runs and how its process sees it: a file
// of the spiders directory, or a deployed version from the cache.
type spiderCode struct {
	mounts  []sandbox.Mount
	release func()
	python  string // the interpreter, as the process sees it ...
	pyHost  string // ... and on the host (a zygote's, see zygotes)

	exec     string // an executable, as the process sees it ...
	execHost string // ... and on the host
	file     string // a *.py for scrapy runspider, as the process sees it
	crawl    string // a project's spider, for scrapy crawl ...
	root     string // ... in this project root, as the process sees it
	module   string // ... with these settings
}

// versionCode is where a cached version is, as its processes see it:
// bound read-only at /spider in the sandbox, at its own path without.
type versionCode struct {
	mounts      []sandbox.Mount
	projectRoot string
	python      string
	pythonHost  string
}

func (w *Worker) versionCode(e *codecache.Entry) versionCode {
	base := e.Dir
	var mounts []sandbox.Mount
	if w.launcher.Enabled() {
		base = sandbox.CodeDir
		mounts = []sandbox.Mount{{Source: e.Dir, Target: sandbox.CodeDir}}
	}
	inside := func(p string) string {
		rel, err := filepath.Rel(e.Dir, p)
		if err != nil {
			return p
		}
		return filepath.Join(base, rel)
	}
	c := versionCode{mounts: mounts, projectRoot: inside(e.ProjectDir()), python: w.cfg.Python, pythonHost: w.cfg.Python}
	if v := e.VenvDir(); v != "" {
		c.python = filepath.Join(inside(v), "bin", "python")
		c.pythonHost = filepath.Join(v, "bin", "python")
	}
	return c
}

// code finds the job's code: a deployed version is fetched and prepared
// once per worker (its first job reports how long that took).
func (r *run) code(ctx context.Context, sysLog func(string, ...any)) (spiderCode, error) {
	l := r.w.launcher
	v := r.job.Version
	if v == nil {
		file, err := resolveSpider(r.w.cfg.SpidersDir, r.job.SpiderRepoPath)
		if err != nil {
			return spiderCode{}, err
		}
		// Sandboxed, the spider's own file is all of its code it sees,
		// bound read-only at /spider/NAME.
		runPath := file
		var mounts []sandbox.Mount
		if l.Enabled() {
			runPath = sandbox.CodeDir + "/" + filepath.Base(file)
			mounts = []sandbox.Mount{{Source: file, Target: runPath}}
		}
		c := spiderCode{mounts: mounts, release: func() {}, python: r.w.cfg.Python, pyHost: r.w.cfg.Python}
		if strings.HasSuffix(file, ".py") {
			c.file = runPath
		} else {
			c.exec, c.execHost = runPath, file
		}
		return c, nil
	}
	start := time.Now()
	e, err := r.w.cache.Acquire(ctx, codecache.Want{SHA256: v.SHA256, ContentType: v.ContentType})
	if err != nil {
		if reason, ok := userFault(err); ok {
			return spiderCode{}, fmt.Errorf("version %s of project %s: %s", v.Label, v.Project, reason)
		}
		return spiderCode{}, fmt.Errorf("version %s of project %s not prepared: %w", v.Label, v.Project, err)
	}
	if p := e.Prepared; p.Cached {
		sysLog("version %s of project %s from this worker's cache (%s)", v.Label, v.Project, ms(time.Since(start)))
	} else {
		sysLog("version %s of project %s prepared on this worker in %s: fetch %s, verify and unpack %s, environment %s",
			v.Label, v.Project, ms(time.Since(start)), ms(p.Fetch), ms(p.Unpack), ms(p.Env))
	}
	vc := r.w.versionCode(e)
	c := spiderCode{mounts: vc.mounts, release: e.Release, python: vc.python, pyHost: vc.pythonHost}
	if v.Kind == scrapethis.KindBundle {
		rel := filepath.FromSlash(v.Path)
		c.exec = filepath.Join(vc.projectRoot, rel)
		c.execHost = filepath.Join(e.ProjectDir(), rel)
		return c, nil
	}
	c.crawl, c.root, c.module = r.job.SpiderName, vc.projectRoot, v.SettingsModule
	return c, nil
}

func ms(d time.Duration) string { return d.Round(time.Millisecond).String() }

// argv builds the spider's command line, never through a shell. With a
// memory limit (memoryMB > 0), Scrapy also gets MEMUSAGE_LIMIT_MB a little
// below it, so that it can close the spider on its own first.
func (c spiderCode) argv(args []string, settings json.RawMessage, logLevel string, memoryMB int) ([]string, error) {
	if c.exec != "" {
		if len(settings) > 0 && string(settings) != "{}" {
			return nil, fmt.Errorf("settings apply only to Scrapy spiders")
		}
		st, err := os.Stat(c.execHost)
		if err != nil {
			return nil, err
		}
		if st.Mode().Perm()&0o111 == 0 {
			return nil, fmt.Errorf("spider file %s is not executable (and not a *.py Scrapy spider)", filepath.Base(c.execHost))
		}
		return append([]string{c.exec}, args...), nil
	}
	var set map[string]json.RawMessage
	if len(settings) > 0 {
		if err := json.Unmarshal(settings, &set); err != nil {
			return nil, fmt.Errorf("settings: %w", err)
		}
	}
	run := scrapyrun.Run{Python: c.python, Args: args, Settings: set, LogLevel: logLevel}
	if memoryMB > 0 {
		run.MemoryLimitMB = memoryMB
	}
	if c.file != "" {
		run.Mode, run.Spider = "runspider", c.file
	} else {
		run.Mode, run.Spider, run.ProjectRoot, run.SettingsModule = "crawl", c.crawl, c.root, c.module
	}
	return run.Argv()
}
