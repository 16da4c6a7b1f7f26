package sandbox_test

import (
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/scrapethis/scrapethis/internal/testenv"
	"github.com/scrapethis/scrapethis/sandbox"
)

// refuseRoot starts every hostile script: it must never act as root.
const refuseRoot = `[ "$(id -u)" = 0 ] && exit 99
`

// warmLauncher is a launcher with warm sandboxes and one job run warm.
func warmLauncher(t *testing.T) *sandbox.Launcher {
	t.Helper()
	l := newLauncher(t, func(c *sandbox.Config) { c.Warm = true })
	for i := 0; ; i++ {
		proc, wait := start(t, l, "warmup.sh", "exit 0\n")
		warm := proc.Warm()
		if o := wait(); o.res.Err != nil {
			t.Fatalf("warm-up: %v: %s", o.res.Err, o.stderr)
		}
		if warm {
			return l
		}
		if i == 200 {
			t.Fatal("no job ran in a warm sandbox")
		}
	}
}

// startOn starts the script until it runs in the warm init initPID as a
// uid other than notUID (bounded), and waits for it.
func runOn(t *testing.T, l *sandbox.Launcher, initPID, notUID int, name, body string, env ...string) (output, int) {
	t.Helper()
	for i := 0; i < 50; i++ {
		if !sandbox.PreferWarmInit(l, initPID) {
			t.Fatalf("warm init %d is not idle", initPID)
		}
		proc, wait := start(t, l, name, body, env...)
		ok := proc.Warm() && proc.InitPID() == initPID && proc.UID() != notUID
		uid := proc.UID()
		o := wait()
		if ok {
			return o, uid
		}
	}
	t.Fatalf("no job ran in warm init %d", initPID)
	return output{}, 0
}

// TestWarmKeepsSameCode: a job whose code is its warm init's last job's
// finds it still mounted, and sees what a fresh mount would show: a source
// replaced by a rename is mounted again; another job's code replaces it.
func TestWarmKeepsSameCode(t *testing.T) {
	l := warmLauncher(t)
	m, path := script(t, "same.sh", "echo one\n")
	// Runs the code until it runs in init (any, if 0), and says how.
	runCode := func(init int) (output, int, bool) {
		t.Helper()
		for i := 0; i < 50; i++ {
			if init > 0 && !sandbox.PreferWarmInit(l, init) {
				t.Fatalf("warm init %d is not idle", init)
			}
			proc, wait := startCode(t, l, m, path)
			got, kept := proc.InitPID(), proc.KeptCode()
			o := wait()
			if o.res.Err != nil {
				t.Fatalf("job: %v: %s", o.res.Err, o.stderr)
			}
			if proc.Warm() && (init == 0 || got == init) && slices.Contains(sandbox.IdleWarmInits(l), got) {
				return o, got, kept
			}
		}
		t.Fatalf("no job ran in warm init %d and went back idle", init)
		return output{}, 0, false
	}
	check := func(step string, o output, kept, wantKept bool, want string) {
		t.Helper()
		if o.stdout != want+"\n" || kept != wantKept {
			t.Errorf("%s: printed %q, code kept %v; want %q, kept %v", step, o.stdout, kept, want, wantKept)
		}
	}
	o, init, _ := runCode(0)
	check("first", o, false, false, "one")
	o, _, kept := runCode(init)
	check("same code again", o, kept, true, "one")

	// An editor's save: a new file renamed over the old one.
	if err := writeExecutable(m.Source+".new", "#!/bin/sh\necho two\n"); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(m.Source+".new", m.Source); err != nil {
		t.Fatal(err)
	}
	o, _, kept = runCode(init)
	check("source replaced", o, kept, false, "two")
	o, _, kept = runCode(init)
	check("replaced source again", o, kept, true, "two")

	b, _ := runOn(t, l, init, 0, "other.sh", "ls -A /spider; grep -c same.sh /proc/self/mountinfo\n")
	if b.res.Err != nil && b.stdout == "" {
		t.Fatalf("other code: %v: %s", b.res.Err, b.stderr)
	}
	if b.stdout != "other.sh\n0\n" {
		t.Errorf("a job with other code in the same init sees %q of /spider and mounts of same.sh; want only its own, none", b.stdout)
	}
}

// TestWarmInitForItsCode: jobs of two spiders, one after the other, each
// take the idle init that has their code mounted.
func TestWarmInitForItsCode(t *testing.T) {
	l := warmLauncher(t)
	a, pathA := script(t, "code-a.sh", "echo a\n")
	b, pathB := script(t, "code-b.sh", "echo b\n")
	run := func(m sandbox.Mount, path, want string) bool {
		t.Helper()
		proc, wait := startCode(t, l, m, path)
		kept := proc.Warm() && proc.KeptCode()
		if o := wait(); o.res.Err != nil || o.stdout != want+"\n" {
			t.Fatalf("job: %v: %q %s", o.res.Err, o.stdout, o.stderr)
		}
		return kept
	}
	// Until the pool has an init for each (the filler starts the second
	// while the first jobs run).
	warm := false
	for i := 0; i < 20 && !warm; i++ {
		warm = run(a, pathA, "a") && run(b, pathB, "b")
	}
	kept := 0
	for i := 0; i < 6; i++ {
		if i%2 == 0 && run(a, pathA, "a") || i%2 == 1 && run(b, pathB, "b") {
			kept++
		}
	}
	if !warm || kept < 6 {
		t.Errorf("of 6 jobs alternating two spiders, %d found their code mounted in an idle init (warmed up: %v)", kept, warm)
	}
}

// mqOpen, as MQ_OPEN, is Python that opens the POSIX message queue
// argv[1] (creating it, mode 0666, if argv[2] is "create") and says how.
const mqOpen = `MQ_OPEN=import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.mq_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_uint, ctypes.c_void_p]
create = len(sys.argv) > 2
fd = libc.mq_open(sys.argv[1].encode(), os.O_RDWR | (os.O_CREAT if create else 0), 0o666, None)
print("mq %s: %s" % (sys.argv[1], "open" if fd >= 0 else "errno %d" % ctypes.get_errno()))
sys.exit(0 if fd >= 0 or not create else 1)`

// TestWarmNextTenantSeesNothing: a warm init reused for another tenant
// keeps nothing of the last one's: no process (a setsid daemon), no file
// in /tmp or /job (a tree, a symbolic link out), no mode or extended
// attribute it set on them, no SysV shared memory, semaphore set or message
// queue, no POSIX message queue, no mount of its code, nothing of its uid;
// the hostname is the sandbox's.
func TestWarmNextTenantSeesNothing(t *testing.T) {
	l := warmLauncher(t)
	var initPID, uidA int
	for i := 0; ; i++ {
		a, wait := start(t, l, "tenant-a.sh", refuseRoot+`
setsid sh -c 'trap "" TERM HUP; touch /tmp/daemon-up; while :; do sleep 1; done' </dev/null >/dev/null 2>&1 &
echo secret-a > /tmp/a-file
echo secret-a > /job/a-file
mkdir -p /job/deep/er && echo x > /job/deep/er/f && ln -s /etc /job/etc-link || exit 5
chmod 0777 /job /tmp || exit 6
/usr/bin/python3 -c 'import os; os.setxattr("/job", "user.secret", b"a"); os.setxattr("/tmp", "user.secret", b"a")' || exit 7
ipcmk -M 4096 -p 0666 >/dev/null && ipcmk -S 1 -p 0666 >/dev/null && ipcmk -Q -p 0666 >/dev/null || exit 3
/usr/bin/python3 -c "$MQ_OPEN" /tenant-a create || exit 8
i=0
while [ ! -e /tmp/daemon-up ]; do i=$((i+1)); [ $i -gt 5000 ] && exit 4; sleep 0.001; done
echo "ipc $(ipcs -m | grep -c '^0x') $(ipcs -s | grep -c '^0x') $(ipcs -q | grep -c '^0x')"
`, mqOpen)
		initPID, uidA = a.InitPID(), a.UID()
		o := wait()
		if o.res.Err != nil || !strings.Contains(o.stdout, "ipc 1 1 1") {
			t.Fatalf("tenant A: %v: %q %s", o.res.Err, o.stdout, o.stderr)
		}
		if pids := testenv.ProcessesOf(uidA); len(pids) > 0 {
			t.Fatalf("processes of tenant A's uid %d left: %v", uidA, pids)
		}
		// Its init is idle again, unless the pool was full (then A again).
		if a.Warm() && slices.Contains(sandbox.IdleWarmInits(l), initPID) {
			break
		}
		if i == 20 {
			t.Fatal("tenant A's warm init never went back to the pool")
		}
	}
	b, uidB := runOn(t, l, initPID, uidA, "tenant-b.sh", refuseRoot+`
echo "uid $(id -u)"
echo "tmp [$(ls -A /tmp)]"
echo "job [$(ls -A /job)]"
echo "ipc $(ipcs -m | grep -c '^0x') $(ipcs -s | grep -c '^0x') $(ipcs -q | grep -c '^0x')"
/usr/bin/python3 -c "$MQ_OPEN" /tenant-a
echo "spider [$(ls -A /spider)]"
echo "mounts of a $(grep -c tenant-a /proc/self/mountinfo)"
echo "uids [$(cat /proc/[0-9]*/status | awk '/^Uid:/ {print $2}' | sort -u | tr '\n' ' ')]"
echo "owned by a [$(find /job /tmp /dev /spider -xdev -uid "$A_UID" 2>/dev/null)]"
echo "host $(hostname)"
echo "modes $(stat -c %a /job) $(stat -c %a /tmp)"
/usr/bin/python3 -c 'import os; print("xattrs", os.listxattr("/job"), os.listxattr("/tmp"))'
`, "A_UID="+strconv.Itoa(uidA), mqOpen)
	if b.res.Err != nil {
		t.Fatalf("tenant B: %v: %s", b.res.Err, b.stderr)
	}
	want := []string{
		"uid " + strconv.Itoa(uidB),
		"tmp []",
		"job [tmp]",
		"ipc 0 0 0",
		"mq /tenant-a: errno 2", // ENOENT
		"spider [tenant-b.sh]",
		"mounts of a 0",
		"uids [0 " + strconv.Itoa(uidB) + " ]", // the init, and B
		"owned by a []",
		"host scrapethis-job",
		"modes 700 700",
		"xattrs [] []",
	}
	for _, w := range want {
		if !strings.Contains(b.stdout, w+"\n") {
			t.Errorf("tenant B in tenant A's init: want %q in\n%s", w, b.stdout)
		}
	}
	t.Logf("init %d: uid %d then %d:\n%s", initPID, uidA, uidB, b.stdout)
}

// TestWarmInitHoldsNoSecret: neither an idle warm init nor one running a
// job has anything but its own scrubbed environment, whatever the worker's
// and the job's hold.
func TestWarmInitHoldsNoSecret(t *testing.T) {
	t.Setenv("SCRAPETHIS_WORKER_SECRET", "worker-secret-1")
	l := warmLauncher(t)
	for _, pid := range sandbox.IdleWarmInits(l) {
		checkEnviron(t, pid)
	}
	proc, wait := start(t, l, "env.sh", refuseRoot+`
echo started
read x
`, "JOB_SECRET=job-secret-2")
	if proc.Warm() {
		checkEnviron(t, proc.InitPID())
	}
	// Ends the script: the worker's SIGTERM to the spider's group.
	syscall.Kill(-proc.Pid(), syscall.SIGTERM)
	wait()
}

func checkEnviron(t *testing.T, pid int) {
	t.Helper()
	env, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Trim(string(env), "\x00"); got != "GOMAXPROCS=2" {
		t.Errorf("warm init %d's environment: %q", pid, got)
	}
}

// TestWarmCloseLeavesNoProcess: Close ends every idle warm init.
func TestWarmCloseLeavesNoProcess(t *testing.T) {
	l := warmLauncher(t)
	idle := sandbox.IdleWarmInits(l)
	if len(idle) == 0 {
		t.Fatal("no idle warm init after a job")
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	for _, pid := range idle {
		if err := syscall.Kill(pid, 0); err == nil {
			t.Errorf("warm init %d still there after Close", pid)
		}
	}
	if left := sandbox.IdleWarmInits(l); len(left) > 0 {
		t.Errorf("idle after Close: %v", left)
	}
}
