package scrapyrun

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/scrapethis/scrapethis/sandbox"
)

// TestMain: the test binary is the sandbox's init too, and a child
// subreaper (as a worker is), which a zygote's children need.
func TestMain(m *testing.M) {
	sandbox.Init()
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		panic(err)
	}
	os.Exit(m.Run())
}

func startZygote(t *testing.T) *Zygote {
	t.Helper()
	needScrapy(t)
	z, err := StartZygote(t.Context(), ZygoteConfig{
		Python: python,
		Env:    []string{"PATH=/usr/bin:/bin", "LANG=C.UTF-8", "PYTHONUNBUFFERED=1"},
		Log:    slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { z.Close() })
	t.Logf("zygote %d warm in %s", z.Pid(), z.StartTime().Round(time.Millisecond))
	return z
}

// forkRun runs argv forked from z through l, as the worker does, in dir
// (sandbox off), and collects what it printed.
func forkRun(t *testing.T, l *sandbox.Launcher, z *Zygote, p sandbox.Policy, argv []string) result {
	t.Helper()
	outR, outW, _ := os.Pipe()
	errR, errW, _ := os.Pipe()
	proc, err := l.StartForked(p, sandbox.Command{Path: argv[0], Args: argv,
		Env:    []string{"PATH=/usr/bin:/bin", "LANG=C.UTF-8", "PYTHONUNBUFFERED=1", "HOME=/nonexistent"},
		Stdout: outW, Stderr: errW}, z)
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		return result{err: err}
	}
	cgroups := proc.Cgroups()
	var stdout, stderr bytes.Buffer
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); io.Copy(&stdout, outR) }()
	go func() { defer wg.Done(); io.Copy(&stderr, errR) }()
	done := make(chan sandbox.Result, 1)
	go func() { done <- proc.Wait() }()
	var res sandbox.Result
	select {
	case res = <-done:
	case <-time.After(time.Minute):
		syscall.Kill(-proc.Pid(), syscall.SIGKILL)
		res = <-done
		t.Errorf("forked run did not end within a minute")
	}
	wg.Wait()
	out := result{stdout: stdout.Bytes(), stderr: stderr.Bytes(), err: res.Err, cgroups: cgroups}
	for line := range bytes.Lines(out.stderr) {
		if raw, ok := ParseStats(line); ok {
			out.stats = append(out.stats, decodeStats(t, raw))
		}
	}
	return out
}

func offLauncher(t *testing.T) *sandbox.Launcher {
	l, err := sandbox.NewLauncher(sandbox.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestZygoteRunspider: a forked run does what an executed one does: items
// on stdout only, the job's settings, stats, the spider's prints in the log.
func TestZygoteRunspider(t *testing.T) {
	t.Parallel()
	z := startZygote(t)
	site := newSite(t)
	code := t.TempDir()
	writeFiles(t, code, map[string]string{"spider.py": fileSpider})
	argv, err := Run{
		Python: python, Mode: ModeRunspider, Spider: filepath.Join(code, "spider.py"),
		Args: []string{"-a", "base=" + site.URL}, LogLevel: "INFO",
		Settings: map[string]json.RawMessage{"TAG": json.RawMessage(`"x"`)},
	}.Argv()
	if err != nil {
		t.Fatal(err)
	}
	l := offLauncher(t)
	for range 2 {
		res := forkRun(t, l, z, sandbox.Policy{}, argv)
		if res.err != nil {
			t.Fatalf("%v: %s", res.err, res.stderr)
		}
		got := items(t, res.stdout)
		if len(got) != 3 {
			t.Fatalf("items %v, want 3 (and not the printed one); log:\n%s", got, res.stderr)
		}
		for _, it := range got {
			if it["tag"] != "x" {
				t.Errorf("item %v: the job's TAG setting did not apply", it)
			}
		}
		checkFinal(t, res, 3)
		if !strings.Contains(string(res.stderr), `{"fake": "item"}`) {
			t.Errorf("the spider's print is not in its log")
		}
	}
	if !z.Alive() {
		t.Fatal("the zygote died")
	}
}

// TestZygoteCrawlFailure: a forked run that fails says why as an executed
// one does, with exit status 1.
func TestZygoteCrawlFailure(t *testing.T) {
	t.Parallel()
	z := startZygote(t)
	project := t.TempDir()
	writeFiles(t, project, map[string]string{
		"scrapy.cfg":               "[settings]\ndefault = bad.settings\n",
		"bad/__init__.py":          "",
		"bad/settings.py":          "raise RuntimeError('settings boom')\n",
		"bad/spiders/__init__.py":  "",
		"bad/spiders/something.py": "",
	})
	argv, err := Run{Python: python, Mode: ModeCrawl, Spider: "x", ProjectRoot: project}.Argv()
	if err != nil {
		t.Fatal(err)
	}
	res := forkRun(t, offLauncher(t), z, sandbox.Policy{}, argv)
	var ee *sandbox.ExitError
	if !errors.As(res.err, &ee) || ee.Status.ExitStatus() != 1 {
		t.Fatalf("err %v; stderr:\n%s", res.err, res.stderr)
	}
	if why := LastError(res.stderr); !strings.Contains(why, "settings boom") {
		t.Fatalf("reason %q", why)
	}
}

// TestZygoteIsolation: a run that monkeypatches a module, changes a class
// attribute, sets an environment variable and leaves a thread behind does
// not change what the next run sees: each is forked from the clean parent.
func TestZygoteIsolation(t *testing.T) {
	t.Parallel()
	z := startZygote(t)
	code := t.TempDir()
	writeFiles(t, code, map[string]string{
		"polluter.py": `import json, os, threading, time
import scrapy
import scrapy.http

class Polluter(scrapy.Spider):
    name = "polluter"
    start_urls = []

    def start_requests(self):
        json.dumps = lambda *a, **k: "polluted"
        scrapy.Spider.custom_settings = {"POLLUTED": True}
        scrapy.http.Request.polluted = True
        os.environ["POLLUTED"] = "1"
        threading.Thread(target=time.sleep, args=(3600,), daemon=True, name="leftover").start()
        return []
`,
		"checker.py": `import json, os, sys, threading
import scrapy
import scrapy.http

class Checker(scrapy.Spider):
    name = "checker"

    def start_requests(self):
        return []

    def closed(self, reason):
        seen = {
            "json": json.dumps({"a": 1}),
            "class": scrapy.Spider.custom_settings,
            "request": getattr(scrapy.http.Request, "polluted", False),
            "env": os.environ.get("POLLUTED"),
            "threads": sorted(t.name for t in threading.enumerate()),
        }
        sys.stderr.write("SEEN " + repr(seen) + "\n")
`,
	})
	l := offLauncher(t)
	run := func(file string) result {
		argv, err := Run{Python: python, Mode: ModeRunspider, Spider: filepath.Join(code, file), LogLevel: "INFO"}.Argv()
		if err != nil {
			t.Fatal(err)
		}
		res := forkRun(t, l, z, sandbox.Policy{}, argv)
		if res.err != nil {
			t.Fatalf("%s: %v: %s", file, res.err, res.stderr)
		}
		return res
	}
	run("polluter.py")
	res := run("checker.py")
	want := `SEEN {'json': '{"a": 1}', 'class': None, 'request': False, 'env': None, 'threads': ['MainThread']}`
	if !strings.Contains(string(res.stderr), want) {
		t.Fatalf("the checker saw a polluted state; want %s in its log:\n%s", want, res.stderr)
	}
}

// TestZygoteGone: a killed zygote says so, and starts nothing.
func TestZygoteGone(t *testing.T) {
	t.Parallel()
	z := startZygote(t)
	syscall.Kill(z.Pid(), syscall.SIGKILL)
	<-z.done
	if z.Alive() {
		t.Fatal("a killed zygote is alive")
	}
	argv, _ := Run{Python: python, Mode: ModeRunspider, Spider: "/nonexistent.py"}.Argv()
	res := forkRun(t, offLauncher(t), z, sandbox.Policy{}, argv)
	if !errors.Is(res.err, ErrZygoteGone) {
		t.Fatalf("err %v", res.err)
	}
}

// TestZygoteSandboxed: a forked run inside the job's sandbox is where an
// executed one is: the job's uid, its own PID namespace (the init and
// itself), /job as cwd, HOME and TMPDIR, its code read-only, its cgroup,
// the init's rlimits, no capabilities, no_new_privs.
func TestZygoteSandboxed(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("the sandbox needs root")
	}
	z := startZygote(t)
	cfg := sandbox.DefaultConfig()
	cfg.InitArgv = []string{os.Args[0], sandbox.InitCommand}
	cfg.LockDir = filepath.Join(os.TempDir(), "scrapethis-test-uids")
	cfg.Defaults.MemoryMB, cfg.Defaults.DiskMB, cfg.Defaults.Procs, cfg.Defaults.NoFile = 256, 16, 64, 100
	l, err := sandbox.NewLauncher(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	code := t.TempDir()
	writeFiles(t, code, map[string]string{"probe.py": `import json, os, resource, sys
import scrapy

class Probe(scrapy.Spider):
    name = "probe"

    def start_requests(self):
        return []

    def closed(self, reason):
        status = dict(l.split(":\t", 1) for l in open("/proc/self/status").read().splitlines() if ":\t" in l)
        try:
            open("/spider/evil", "w")
            ro = False
        except OSError:
            ro = True
        seen = {"uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(), "cwd": os.getcwd(),
                "home": os.environ.get("HOME"), "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
                "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0], "caps": status["CapEff"].strip(),
                "bnd": status["CapBnd"].strip(), "nnp": status["NoNewPrivs"].strip(), "ro": ro,
                "cgroup": open("/proc/self/cgroup").read()}
        sys.stderr.write("SEEN " + json.dumps(seen) + "\n")
`})
	p, err := l.Policy("zygote-test", []sandbox.Mount{{Source: filepath.Join(code, "probe.py"), Target: "/spider/probe.py"}}, 0)
	if err != nil {
		t.Fatal(err)
	}
	argv, err := Run{Python: python, Mode: ModeRunspider, Spider: "/spider/probe.py", LogLevel: "INFO"}.Argv()
	if err != nil {
		t.Fatal(err)
	}
	res := forkRun(t, l, z, p, argv)
	if res.err != nil {
		t.Fatalf("%v: %s", res.err, res.stderr)
	}
	_, line, ok := strings.Cut(string(res.stderr), "SEEN ")
	if !ok {
		t.Fatalf("no probe in the log:\n%s", res.stderr)
	}
	line, _, _ = strings.Cut(line, "\n")
	var seen struct {
		UID, GID, NoFile int
		Groups           []int
		Cwd, Home        string
		Pids             []int
		Caps, Bnd, NNP   string
		RO               bool
		Cgroup           string
	}
	if err := json.Unmarshal([]byte(line), &seen); err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", seen)
	if seen.UID < cfg.UIDFirst || seen.UID > cfg.UIDLast || seen.GID != seen.UID || len(seen.Groups) != 0 {
		t.Errorf("runs as %d:%d %v", seen.UID, seen.GID, seen.Groups)
	}
	if seen.Cwd != "/job" || seen.Home != "/nonexistent" && seen.Home != "/job" {
		t.Errorf("cwd %s home %s", seen.Cwd, seen.Home)
	}
	if len(seen.Pids) != 2 || seen.Pids[0] != 1 {
		t.Errorf("sees processes %v; want the init and itself", seen.Pids)
	}
	if seen.NoFile != 100 {
		t.Errorf("RLIMIT_NOFILE %d, want the policy's 100", seen.NoFile)
	}
	if seen.Caps != "0000000000000000" || seen.Bnd != "0000000000000000" || seen.NNP != "1" {
		t.Errorf("capabilities %s, bounding set %s, no_new_privs %s", seen.Caps, seen.Bnd, seen.NNP)
	}
	if !seen.RO {
		t.Error("wrote into its code")
	}
	if len(res.cgroups) == 0 {
		t.Error("the job has no cgroups")
	}
	for _, d := range res.cgroups {
		// /proc/self/cgroup names it below its hierarchy's mount.
		if !strings.Contains(seen.Cgroup, "/scrapethis/"+filepath.Base(d)+"\n") {
			t.Errorf("not in the job's cgroup %s:\n%s", d, seen.Cgroup)
		}
	}
}

// TestZygoteDiesStarting: a zygote whose interpreter exits before it is
// warm (Scrapy missing, say) is an error that says it exited, as soon as
// it has: not a read that waits for the start's deadline.
func TestZygoteDiesStarting(t *testing.T) {
	t.Parallel()
	_, err := StartZygote(t.Context(), ZygoteConfig{Python: "/usr/bin/false"})
	if err == nil || !strings.Contains(err.Error(), "it exited (exit status 1)") {
		t.Fatalf("err %v, want one that says it exited", err)
	}
}
