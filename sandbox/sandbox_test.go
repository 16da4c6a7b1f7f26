package sandbox_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/scrapethis/scrapethis/internal/testenv"
	"github.com/scrapethis/scrapethis/sandbox"
)

// TestMain doubles as the sandbox init: the launcher re-executes this test
// binary with InitCommand.
func TestMain(m *testing.M) {
	sandbox.Init()
	os.Exit(m.Run())
}

func testConfig(t *testing.T) sandbox.Config {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the sandbox needs root")
	}
	cfg := sandbox.DefaultConfig()
	cfg.InitArgv = []string{os.Args[0], sandbox.InitCommand}
	cfg.Defaults.MemoryMB = 128
	cfg.Defaults.DiskMB = 16
	cfg.Defaults.Procs = 64
	cfg.LockDir = filepath.Join(os.TempDir(), "scrapethis-test-uids")
	return cfg
}

func newLauncher(t *testing.T, edit func(*sandbox.Config)) *sandbox.Launcher {
	t.Helper()
	cfg := testConfig(t)
	if edit != nil {
		edit(&cfg)
	}
	l, err := sandbox.NewLauncher(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Error(err)
		}
	})
	return l
}

// output is what a sandboxed run printed and how it ended.
type output struct {
	stdout, stderr string
	res            sandbox.Result
}

// script writes a shell script into its own code directory and returns the
// bind that makes it visible at /spider/NAME.
func script(t *testing.T, name, body string) (sandbox.Mount, string) {
	t.Helper()
	dir := t.TempDir()
	file := filepath.Join(dir, name)
	if err := writeExecutable(file, "#!/bin/sh\n"+body); err != nil {
		t.Fatal(err)
	}
	return sandbox.Mount{Source: file, Target: sandbox.CodeDir + "/" + name}, sandbox.CodeDir + "/" + name
}

// writeExecutable writes a script that is run at once. The write holds
// syscall.ForkLock: a process forked meanwhile (a warm init the pool
// starts) would hold the file open for writing until its exec, and the
// script's exec would fail with ETXTBSY (golang/go#22315).
func writeExecutable(file, content string) error {
	syscall.ForkLock.RLock()
	defer syscall.ForkLock.RUnlock()
	return os.WriteFile(file, []byte(content), 0o755)
}

// start starts the script in a sandbox and returns its process and a
// function that waits for its end.
func start(t *testing.T, l *sandbox.Launcher, name, body string, env ...string) (*sandbox.Process, func() output) {
	t.Helper()
	m, path := script(t, name, body)
	return startCode(t, l, m, path, env...)
}

// startCode starts the code bound by m, at path inside, as start does.
func startCode(t *testing.T, l *sandbox.Launcher, m sandbox.Mount, path string, env ...string) (*sandbox.Process, func() output) {
	t.Helper()
	p, err := l.Policy("test-"+strings.ReplaceAll(t.Name(), "/", "-"), []sandbox.Mount{m}, 0)
	if err != nil {
		t.Fatal(err)
	}
	outR, outW, _ := os.Pipe()
	errR, errW, _ := os.Pipe()
	proc, err := l.Start(p, sandbox.Command{Path: path, Args: []string{path}, Env: append([]string{"PATH=/usr/bin:/bin"}, env...), Stdout: outW, Stderr: errW})
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		t.Fatal(err)
	}
	var o output
	var wg sync.WaitGroup
	wg.Add(2)
	read := func(r *os.File, dst *string) {
		defer wg.Done()
		var b bytes.Buffer
		io.Copy(&b, r)
		r.Close()
		*dst = b.String()
	}
	go read(outR, &o.stdout)
	go read(errR, &o.stderr)
	return proc, func() output {
		o.res = proc.Wait()
		wg.Wait()
		return o
	}
}

func run(t *testing.T, l *sandbox.Launcher, name, body string, env ...string) output {
	t.Helper()
	_, wait := start(t, l, name, body, env...)
	return wait()
}

func TestCheck(t *testing.T) {
	l := newLauncher(t, nil)
	if err := l.Check(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestRunsAsJobUser(t *testing.T) {
	l := newLauncher(t, nil)
	o := run(t, l, "id.sh", `id -u; id -g; id -G; pwd; echo "$HOME $TMPDIR"; hostname; ls /; echo '{"ok":1}'`, "HOME=/job", "TMPDIR=/tmp")
	if o.res.Err != nil {
		t.Fatalf("%v\nstderr: %s", o.res.Err, o.stderr)
	}
	t.Logf("stdout:\n%s", o.stdout)
	lines := strings.Split(o.stdout, "\n")
	if lines[0] == "0" || lines[0] == "" {
		t.Fatalf("uid inside %q", lines[0])
	}
}

func TestExitStatusIsFaithful(t *testing.T) {
	l := newLauncher(t, nil)
	for body, want := range map[string]string{
		"exit 0\n":      "",
		"exit 3\n":      "exit status 3",
		"kill -9 $$\n":  "killed by signal killed",
		"kill -15 $$\n": "killed by signal terminated",
	} {
		o := run(t, l, "exit.sh", body)
		got := ""
		if o.res.Err != nil {
			got = o.res.Err.Error()
			var ee *sandbox.ExitError
			if !errors.As(o.res.Err, &ee) {
				t.Errorf("%q: %T %v is not an ExitError", body, o.res.Err, o.res.Err)
			}
		}
		if got != want {
			t.Errorf("%q ended %q, want %q (stderr %s)", body, got, want, o.stderr)
		}
	}
}

// TestSeesNoSecret: the spider hunts /proc for the worker's environment and
// other processes' command lines.
func TestSeesNoSecret(t *testing.T) {
	t.Setenv("SCRAPETHIS_TEST_SECRET", "hunter2-planted")
	l := newLauncher(t, nil)
	// Another job whose command line carries a token.
	_, waitOther := start(t, l, "other.sh", "exec sh -c 'sleep 2' api_token=hunter2-cmdline\n")
	o := run(t, l, "hunt.sh", `
[ "$(id -u)" = 0 ] && { echo "LEAK: runs as root"; exit 0; }
echo "pids: $(ls /proc | grep -E '^[0-9]+$' | tr '\n' ' ')"
cat /proc/1/environ 2>/dev/null && echo "LEAK: read /proc/1/environ"
n=$(cat /proc/[0-9]*/environ /proc/[0-9]*/cmdline 2>/dev/null | tr '\0' '\n' | grep -c 'hunter[2]')
[ "$n" = 0 ] || echo "LEAK: $n secrets under /proc"
env | grep -q 'hunter[2]' && echo "LEAK: secret in the environment"
[ -e /proc/`+strconv.Itoa(os.Getpid())+` ] && echo "LEAK: sees the worker"
kill -0 `+strconv.Itoa(os.Getpid())+` 2>/dev/null && echo "LEAK: signalled the worker"
# kill(-1) as root outside a sandbox would signal every process of the
# machine: only ever as an unprivileged uid.
[ "$(id -u)" != 0 ] && kill -TERM -1 2>/dev/null
true
`)
	if strings.Contains(o.stdout, "LEAK") || !strings.HasPrefix(o.stdout, "pids: 1 ") {
		t.Fatalf("the sandbox leaked:\n%s\n%s", o.stdout, o.stderr)
	}
	// The init, the shell and the pipeline: nothing of the host's.
	if pids := strings.Fields(strings.SplitN(o.stdout, "\n", 2)[0]); len(pids) > 1+6 {
		t.Errorf("sees more than its own processes: %s", o.stdout)
	}
	if other := waitOther(); other.res.Err != nil {
		t.Errorf("the other job was disturbed: %v", other.res.Err)
	}
}

// TestWritesNowhereElse: read-only code, system and /etc; /tmp is the job's
// own; the host's /tmp and the spiders directory are out of reach.
func TestWritesNowhereElse(t *testing.T) {
	l := newLauncher(t, nil)
	hostDir := t.TempDir()
	os.WriteFile(filepath.Join(hostDir, "other-job-file"), []byte("private"), 0o644)
	secretDir := t.TempDir()
	os.WriteFile(filepath.Join(secretDir, "spider.py"), []byte("tenant B's code"), 0o644)
	o := run(t, l, "write.sh", `
[ "$(id -u)" = 0 ] && { echo "WROTE as root: stopped"; exit 0; }
for f in /etc/evil /usr/evil /spider/evil /evil /dev/evil /proc/evil; do
  echo x > $f 2>/dev/null && echo "WROTE $f"
done
echo x >> /spider/write.sh 2>/dev/null && echo "WROTE its own code"
cat `+hostDir+`/other-job-file 2>/dev/null && echo "READ another job's dir"
cat `+secretDir+`/spider.py 2>/dev/null && echo "READ another spider"
ls /etc | tr '\n' ' '
echo
echo mine > /tmp/mine && echo mine > /job/mine2 && echo "tmp ok"
`)
	if o.res.Err != nil {
		t.Fatalf("%v: %s", o.res.Err, o.stderr)
	}
	if strings.Contains(o.stdout, "WROTE") || strings.Contains(o.stdout, "READ") {
		t.Fatalf("escaped:\n%s", o.stdout)
	}
	if !strings.Contains(o.stdout, "tmp ok") {
		t.Fatalf("cannot write its own directory:\n%s\n%s", o.stdout, o.stderr)
	}
	for _, bad := range []string{"postgresql", "redis", "shadow"} {
		if strings.Contains(o.stdout, bad) {
			t.Errorf("/etc shows %s: %s", bad, o.stdout)
		}
	}
	if _, err := os.Stat("/tmp/mine"); err == nil {
		t.Error("the spider's /tmp is the host's")
	}
}

// TestMountsAreReadOnly: every mount of the sandbox is read-only, nosuid
// and nodev but the job's own (/job, /tmp) and /proc; /dev's nodes work
// but nothing there executes.
func TestMountsAreReadOnly(t *testing.T) {
	l := newLauncher(t, nil)
	o := run(t, l, "mounts.sh", `
cat /proc/self/mountinfo
echo x > /dev/null && [ "$(head -c 3 /dev/zero | od -An -tx1 | tr -d ' ')" = 000000 ] && echo "DEVICES OK"
`)
	if o.res.Err != nil || !strings.Contains(o.stdout, "DEVICES OK") {
		t.Fatalf("%v:\n%s\n%s", o.res.Err, o.stdout, o.stderr)
	}
	seen := map[string]bool{}
	for _, line := range strings.Split(o.stdout, "\n") {
		f := strings.Fields(line)
		if len(f) < 6 || !strings.Contains(line, " - ") {
			continue
		}
		at, opts := f[4], map[string]bool{}
		for _, o := range strings.Split(f[5], ",") {
			opts[o] = true
		}
		seen[at] = true
		want := []string{"ro", "nosuid", "nodev"}
		switch {
		case at == "/job" || at == "/tmp" || at == "/proc":
			want = []string{"rw", "nosuid", "nodev"}
		case at == "/dev" || strings.HasPrefix(at, "/dev/"):
			want = []string{"ro", "nosuid"}
			if opts["nodev"] {
				t.Errorf("%s is nodev: %s", at, line)
			}
			if at == "/dev" && !opts["noexec"] {
				t.Errorf("/dev is not noexec: %s", line)
			}
		}
		for _, w := range want {
			if !opts[w] {
				t.Errorf("%s is not %s: %s", at, w, line)
			}
		}
	}
	for _, at := range []string{"/", "/usr", "/dev", "/proc", "/job", "/tmp", "/etc/hosts", "/spider/mounts.sh"} {
		if !seen[at] {
			t.Errorf("no mount at %s:\n%s", at, o.stdout)
		}
	}
}

func TestProcessLimit(t *testing.T) {
	l := newLauncher(t, nil)
	o := run(t, l, "fork.sh", `exec /usr/bin/python3 - <<'EOF'
import os, time
ok = fail = 0
for i in range(200):
    try:
        pid = os.fork()
    except OSError:
        fail += 1
        continue
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    ok += 1
live = len([p for p in os.listdir("/proc") if p.isdigit()])
print("live", live, "ok", ok, "fail", fail)
EOF
`)
	t.Logf("stdout %s", o.stdout)
	var live int
	fmt.Sscanf(strings.TrimSpace(o.stdout), "live %d", &live)
	if live == 0 || live > 64+1 || !strings.Contains(o.stdout, "fail") || strings.Contains(o.stdout, "fail 0") {
		t.Fatalf("%d processes under a limit of 64: %s %s", live, o.stdout, o.stderr)
	}
}

func TestMemoryLimit(t *testing.T) {
	l := newLauncher(t, nil)
	o := run(t, l, "mem.sh", `exec /usr/bin/python3 -c 'b = b"x" * (400 << 20); print(len(b))'`)
	if !o.res.MemoryExceeded() || o.res.Err == nil {
		t.Fatalf("allocating 400 MiB under 128: %+v %s", o.res, o.stderr)
	}
	t.Logf("ended %v, oom kills %d, peak %d MiB", o.res.Err, o.res.OOMKills, o.res.MemoryPeak>>20)
}

func TestDiskLimit(t *testing.T) {
	l := newLauncher(t, nil)
	o := run(t, l, "disk.sh", `
dd if=/dev/zero of=/job/big bs=1M count=64 2>/dev/null || echo "dd failed"
echo "size $(du -m /job/big | cut -f1)"
dd if=/dev/zero of=/tmp/big2 bs=1M count=8 2>/dev/null || echo "dd2 failed"
`)
	t.Logf("stdout %s", o.stdout)
	var size int
	fmt.Sscanf(o.stdout[strings.Index(o.stdout, "size"):], "size %d", &size)
	if !strings.Contains(o.stdout, "dd failed") || size > 16 || !strings.Contains(o.stdout, "dd2 failed") {
		t.Fatalf("wrote past 16 MiB: %s", o.stdout)
	}
}

// TestLeavesNothing: a daemon started with setsid dies with the job; no
// process of its uid, no cgroup, no file is left.
func TestLeavesNothing(t *testing.T) {
	l := newLauncher(t, nil)
	proc, wait := start(t, l, "daemon.sh", `
setsid sh -c 'trap "" TERM HUP; while :; do sleep 1; done' </dev/null >/dev/null 2>&1 &
echo leftover > /job/leftover
sleep 0.1
exit 0
`)
	uid, cgs := proc.UID(), proc.Cgroups()
	if uid == 0 || uid == os.Getuid() || len(cgs) == 0 {
		t.Fatalf("uid %d, cgroups %v", uid, cgs)
	}
	// A warm init lives in its cgroups: after the job they hold it alone.
	init := ""
	if proc.Warm() {
		init = strconv.Itoa(proc.InitPID())
	}
	o := wait()
	if o.res.Err != nil {
		t.Fatalf("%v: %s", o.res.Err, o.stderr)
	}
	if pids := testenv.ProcessesOf(uid); len(pids) > 0 {
		t.Fatalf("processes of uid %d left: %v", uid, pids)
	}
	// The cgroups are empty (kept for the launcher's next job) or gone, or
	// hold the warm init alone; Close removes them.
	for _, d := range cgs {
		if procs, err := os.ReadFile(filepath.Join(d, "cgroup.procs")); err == nil && string(bytes.TrimSpace(procs)) != init && len(bytes.TrimSpace(procs)) > 0 {
			t.Errorf("cgroup %s still holds %s (the init: %q)", d, procs, init)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	for _, d := range cgs {
		if _, err := os.Stat(d); err == nil {
			t.Errorf("cgroup %s left after Close", d)
		}
	}
}

// TestStalePoolsRemoved: a new launcher removes the idle cgroups a dead
// worker kept for reuse.
func TestStalePoolsRemoved(t *testing.T) {
	l := newLauncher(t, nil)
	o := run(t, l, "noop.sh", "exit 0\n")
	if o.res.Err != nil {
		t.Fatal(o.res.Err)
	}
	m, path := script(t, "noop2.sh", "exit 0\n")
	p, err := l.Policy("test-stale", []sandbox.Mount{m}, 0)
	if err != nil {
		t.Fatal(err)
	}
	proc, err := l.Start(p, sandbox.Command{Path: path, Args: []string{path}})
	if err != nil {
		t.Fatal(err)
	}
	cgs := proc.Cgroups()
	proc.Wait()
	var stale []string
	for _, d := range cgs {
		s := filepath.Join(filepath.Dir(d), "pool-999999999-1-00000000-7") // no such pid
		if err := os.Mkdir(s, 0o755); err != nil {
			t.Fatal(err)
		}
		stale = append(stale, s)
	}
	newLauncher(t, nil)
	for _, s := range stale {
		if _, err := os.Stat(s); err == nil {
			os.Remove(s)
			t.Errorf("stale pool cgroup %s left", s)
		}
	}
}

// TestReusedCgroupsTakeNewLimits: a job that gets another job's cgroups
// gets its own memory limit and OOM count, not the last job's.
func TestReusedCgroupsTakeNewLimits(t *testing.T) {
	l := newLauncher(t, nil)
	runMem := func(memoryMB int, body string) (sandbox.Result, []string) {
		t.Helper()
		m, path := script(t, "mem.sh", body)
		p, err := l.Policy("test-reuse", []sandbox.Mount{m}, memoryMB)
		if err != nil {
			t.Fatal(err)
		}
		proc, err := l.Start(p, sandbox.Command{Path: path, Args: []string{path}, Env: []string{"PATH=/usr/bin:/bin"}})
		if err != nil {
			t.Fatal(err)
		}
		cgs := proc.Cgroups()
		return proc.Wait(), cgs
	}
	alloc := func(mib int) string {
		return fmt.Sprintf("exec /usr/bin/python3 -c 'b = b\"x\" * (%d << 20); print(len(b))'", mib)
	}
	// 300 MiB fit under 512; then the same under the default 128 do not;
	// then 32 MiB fit again, with no OOM kill of their own.
	big, cg1 := runMem(512, alloc(300))
	if big.Err != nil || big.OOMKills != 0 {
		t.Fatalf("300 MiB under 512: %+v", big)
	}
	small, cg2 := runMem(0, alloc(300))
	if !small.MemoryExceeded() || small.OOMKills < 1 {
		t.Fatalf("300 MiB under 128 after a job with 512: %+v", small)
	}
	after, cg3 := runMem(0, alloc(32))
	if after.Err != nil || after.OOMKills != 0 {
		t.Fatalf("32 MiB after an OOM-killed job: %+v", after)
	}
	if after.MemoryPeak >= 128<<20 {
		t.Errorf("peak %d MiB: the last job's, not its own", after.MemoryPeak>>20)
	}
	t.Logf("cgroups %v %v %v; peaks %d %d %d MiB", cg1, cg2, cg3, big.MemoryPeak>>20, small.MemoryPeak>>20, after.MemoryPeak>>20)
}

// TestCancelReachesEveryProcess: SIGTERM to the init's group reaches the
// spider once, through the init, and a shell with a child ends at once.
func TestCancelReachesEveryProcess(t *testing.T) {
	l := newLauncher(t, nil)
	proc, wait := start(t, l, "cancel.sh", `
trap 'echo "TERM"; kill $child; exit 0' TERM
sleep 300 & child=$!
echo started
wait
`)
	deadline := time.Now().Add(10 * time.Second)
	// The group leader is the init; signal it as the worker does.
	for {
		// Only signal once the shell has set its trap and started its child.
		if n := len(testenv.ProcessesOf(proc.UID())); n >= 2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	began := time.Now()
	syscall.Kill(-proc.Pid(), syscall.SIGTERM)
	o := wait()
	t.Logf("cancel took %s", time.Since(began))
	if o.res.Err != nil || strings.Count(o.stdout, "TERM") != 1 {
		t.Fatalf("ended %v, stdout %q (want one TERM), stderr %s", o.res.Err, o.stdout, o.stderr)
	}
}
