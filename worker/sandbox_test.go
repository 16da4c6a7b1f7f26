package worker_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/scrapethis/scrapethis"
	"github.com/scrapethis/scrapethis/demosite"
	"github.com/scrapethis/scrapethis/internal/testenv"
	"github.com/scrapethis/scrapethis/sandbox"
	"github.com/scrapethis/scrapethis/worker"
)

// sandboxed turns the sandbox on for a test worker: this test binary is its
// init (see TestMain), with small limits.
func sandboxed(t *testing.T) func(*worker.Config) {
	if os.Geteuid() != 0 {
		t.Skip("the sandbox needs root")
	}
	return func(c *worker.Config) {
		c.Sandbox = sandbox.DefaultConfig()
		c.Sandbox.InitArgv = []string{os.Args[0], sandbox.InitCommand}
		c.Sandbox.LockDir = filepath.Join(os.TempDir(), "scrapethis-test-uids")
		c.Sandbox.Defaults.MemoryMB = 160
		c.Sandbox.Defaults.DiskMB = 16
		c.Sandbox.Defaults.Procs = 64
	}
}

// sandboxUID is the uid the worker logged for the job's sandbox.
func (b *bundle) sandboxUID(jobID string) int {
	b.t.Helper()
	// The worker's own lines reach the job's log in batches, after an item
	// may already have been counted: wait for the line, bounded.
	re := regexp.MustCompile(`in a sandbox \(uid (\d+),`)
	var m []string
	b.waitFor("the sandbox uid in the job's log", 30*time.Second, func() bool {
		m = re.FindStringSubmatch(b.logs(jobID))
		return m != nil
	})
	uid, _ := strconv.Atoi(m[1])
	return uid
}

// TestSandboxedHostileSpider runs, as a tenant would write it, a spider that
// hunts for the worker's secrets, writes where it should not, signals the
// worker and another tenant's spider, and daemonises; each success is an
// item "leak".
func TestSandboxedHostileSpider(t *testing.T) {
	b := setup(t)
	t.Setenv("SCRAPETHIS_TEST_SECRET", "hunter2-planted")
	t.Setenv("DATABASE_URL", "postgres://hunter2@db/secret")
	pidFile := filepath.Join(t.TempDir(), "victim")
	victim := b.script("victim.sh", "#!/bin/sh\necho '{\"victim\":1}'\nexec sleep 300\n")
	hostile := b.script("hostile.sh", `#!/bin/sh
leak() { printf '{"leak":"%s"}\n' "$1"; }
# Never do any of this as root: unsandboxed, it would harm the machine.
[ "$(id -u)" = 0 ] && { leak "runs as root"; exit 0; }
printf '{"uid":%s,"gid":%s,"pwd":"%s","home":"%s","tmpdir":"%s"}\n' "$(id -u)" "$(id -g)" "$(pwd)" "$HOME" "$TMPDIR"
cat /proc/1/environ >/dev/null 2>&1 && leak "read /proc/1/environ"
n=$(cat /proc/[0-9]*/environ /proc/[0-9]*/cmdline 2>/dev/null | tr '\0' '\n' | grep -c 'hunter[2]')
[ "$n" = 0 ] || leak "$n secrets under /proc"
env | grep -q 'hunter[2]' && leak "secret in its environment"
[ -e /proc/`+strconv.Itoa(os.Getpid())+` ] && leak "sees the worker"
kill -0 `+strconv.Itoa(os.Getpid())+` 2>/dev/null && leak "signals the worker"
for p in $(ls /proc | grep -E '^[0-9]+$'); do
  grep -q 'victim' /proc/$p/cmdline 2>/dev/null && leak "sees the victim" && [ "$(id -u)" != 0 ] && kill -TERM $p
done
# kill(-1) as root outside a sandbox would signal every process of the
# machine: only ever as an unprivileged uid.
[ "$(id -u)" != 0 ] && kill -TERM -1 2>/dev/null
for f in /etc/evil /usr/evil /spider/evil /spider/victim.sh /evil `+b.spiders+`/victim.sh `+pidFile+`; do
  echo x >> $f 2>/dev/null && leak "wrote $f"
done
ls `+b.spiders+` >/dev/null 2>&1 && leak "lists the spiders directory"
ls /etc | grep -qE 'postgres|redis|shadow' && leak "sees the platform's /etc"
echo mine > /tmp/mine && echo mine > "$HOME/mine2" || leak "cannot write its own directory"
dd if=/dev/zero of="$HOME/big" bs=1M count=64 2>/dev/null && leak "wrote 64 MiB"
setsid sh -c 'trap "" TERM HUP; while :; do sleep 1; done' </dev/null >/dev/null 2>&1 &
echo '{"done":1}'
`)
	b.startWorker(sandboxed(t))
	victimJob := b.start(victim, `{}`, nil)
	b.waitFor("the victim's item", 30*time.Second, func() bool { return b.job(victimJob).ItemsScraped == 1 })
	jobID := b.start(hostile, `{}`, nil)
	j := b.waitStatus(jobID, scrapethis.StatusFinished)
	items := b.items(jobID)
	var first struct {
		UID, GID          int
		Pwd, Home, Tmpdir string
	}
	if len(items) == 0 || json.Unmarshal([]byte(items[0]), &first) != nil {
		t.Fatalf("items %v; log:\n%s", items, b.logs(jobID))
	}
	if first.UID == 0 || first.UID == os.Getuid() || first.GID == 0 {
		t.Errorf("spider runs as uid %d gid %d", first.UID, first.GID)
	}
	if first.Pwd != "/job" || first.Home != "/job" || first.Tmpdir != "/tmp" {
		t.Errorf("job directory %+v", first)
	}
	for _, it := range items {
		if strings.Contains(it, "leak") {
			t.Errorf("%s", it)
		}
	}
	if items[len(items)-1] != `{"done":1}` || j.ItemsScraped != int64(len(items)) {
		t.Fatalf("items %v", items)
	}
	// The daemon is gone with its job; nothing of its uid is left.
	if left := testenv.ProcessesOf(b.sandboxUID(jobID)); len(left) > 0 {
		t.Errorf("processes of the job's uid left: %v", left)
	}
	if v := b.job(victimJob); v.Status != scrapethis.StatusRunning {
		t.Fatalf("the victim was disturbed: %+v", v)
	}
	b.cancel(victimJob, true)
	b.waitStatus(victimJob, scrapethis.StatusCancelled)
}

func TestSandboxedMemoryLimit(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id := b.script("hog.sh", "#!/bin/sh\necho '{\"a\":1}'\nexec /usr/bin/python3 -c 'b = b\"x\" * (600 << 20); print(len(b))'\n")
	b.startWorker(sandboxed(t))
	jobID := b.start(id, `{}`, nil)
	j := b.waitStatus(jobID, scrapethis.StatusError)
	if !strings.Contains(deref(j.Error), "memory limit") || !strings.Contains(deref(j.Error), "160 MiB") {
		t.Fatalf("reason %q; log:\n%s", deref(j.Error), b.logs(jobID))
	}
}

// TestSandboxedCancel: a shell spider with a child is cancelled; its whole
// sandbox is gone when the job is final.
func TestSandboxedCancel(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id := b.script("sleep.sh", "#!/bin/sh\necho '{\"started\":1}'\nsleep 300 &\nwait\n")
	b.startWorker(sandboxed(t))
	jobID := b.start(id, `{}`, nil)
	b.waitFor("the first item", 30*time.Second, func() bool { return b.job(jobID).ItemsScraped == 1 })
	uid := b.sandboxUID(jobID)
	began := time.Now()
	b.cancel(jobID, true)
	j := b.waitStatus(jobID, scrapethis.StatusCancelled)
	t.Logf("cancelled in %s (including the worker's poll of the cancel)", time.Since(began).Round(time.Millisecond))
	if deref(j.Error) != scrapethis.ReasonCancelled {
		t.Fatalf("job %+v", j)
	}
	if left := testenv.ProcessesOf(uid); len(left) > 0 {
		t.Errorf("processes of uid %d left: %v", uid, left)
	}
	if strings.Contains(b.logs(jobID), "SIGKILL after") && strings.Contains(b.logs(jobID), "did not stop") {
		t.Errorf("needed SIGKILL:\n%s", b.logs(jobID))
	}
}

func TestSandboxedScrapyAndExecutableSpiders(t *testing.T) {
	t.Parallel()
	if err := exec.Command("/usr/bin/python3", "-c", "import scrapy").Run(); err != nil {
		t.Skip("Scrapy is not installed (make test installs python3-scrapy)")
	}
	for _, runner := range scrapyRunners() {
		t.Run(runner, func(t *testing.T) {
			t.Parallel()
			testSandboxedScrapyAndExecutableSpiders(t, runner)
		})
	}
}

func testSandboxedScrapyAndExecutableSpiders(t *testing.T, runner string) {
	b := setup(t)
	site := httptest.NewServer(demosite.Handler("/demo"))
	defer site.Close()
	for _, f := range []string{"quotes.py", "quotes_plain"} {
		src, err := os.ReadFile("../spiders/" + f)
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(b.spiders, f), src, 0o755)
	}
	scrapy, _ := b.db.CreateSpider(context.Background(), b.userID, "quotes", "quotes.py")
	plain, _ := b.db.CreateSpider(context.Background(), b.userID, "quotes_plain", "quotes_plain")
	b.startWorker(withRunner(runner, sandboxed(t)))
	want := int64(demosite.Pages * demosite.PerPage)
	for _, sp := range []string{scrapy.ID, plain.ID} {
		jobID := b.start(sp, `{"start_url":"`+site.URL+`/demo/"}`, nil)
		j := b.waitStatus(jobID, scrapethis.StatusFinished)
		if j.ItemsScraped != want {
			t.Fatalf("items_scraped %d, want %d; log:\n%s", j.ItemsScraped, want, b.logs(jobID))
		}
		if sp == scrapy.ID && !strings.Contains(b.logs(jobID), "MEMUSAGE_LIMIT_MB") {
			t.Errorf("Scrapy ran without MEMUSAGE_LIMIT_MB:\n%s", b.logs(jobID))
		}
		if sp == scrapy.ID {
			checkRunner(t, b.logs(jobID), runner)
		}
	}
}

// TestWorkerRefusesWithoutSandbox: a worker that cannot build its sandbox
// does not start, and says why in one sentence.
func TestWorkerRefusesWithoutSandbox(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cfg := testConfig(b.spiders)
	sandboxed(t)(&cfg)
	cfg.Sandbox.InitArgv = []string{"/bin/false"} // an init that cannot build one
	w := worker.New(cfg, b.db, b.rdb, testenv.Log(t, slog.LevelInfo), nil)
	err := w.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "sandbox") || !strings.Contains(err.Error(), "SCRAPETHIS_SANDBOX=off") || strings.Count(err.Error(), ". ") > 0 {
		t.Fatalf("worker started or said %v", err)
	}
	t.Log(err)
}

// TestSandboxedIsolatedNetwork: with SCRAPETHIS_SANDBOX_NETWORK=isolated a
// Scrapy spider (each runner: the forked one joins the init's network
// namespace) and an executable spider crawl a site off the host, in a
// network namespace of their own.
func TestSandboxedIsolatedNetwork(t *testing.T) {
	t.Parallel()
	if err := exec.Command("/usr/bin/python3", "-c", "import scrapy").Run(); err != nil {
		t.Skip("Scrapy is not installed (make test installs python3-scrapy)")
	}
	for _, runner := range scrapyRunners() {
		t.Run(runner, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			rn := testenv.StartRemoteNet(t)
			srv := &http.Server{Handler: demosite.Handler("/demo")}
			served := make(chan error, 1)
			ln := rn.Listen(t, 80)
			go func() { served <- srv.Serve(ln) }()
			defer func() { srv.Close(); <-served }()
			for _, f := range []string{"quotes.py", "quotes_plain"} {
				src, err := os.ReadFile("../spiders/" + f)
				if err != nil {
					t.Fatal(err)
				}
				os.WriteFile(filepath.Join(b.spiders, f), src, 0o755)
			}
			scrapy, _ := b.db.CreateSpider(context.Background(), b.userID, "quotes", "quotes.py")
			plain, _ := b.db.CreateSpider(context.Background(), b.userID, "quotes_plain", "quotes_plain")
			b.startWorker(withRunner(runner, func(c *worker.Config) {
				sandboxed(t)(c)
				c.Sandbox.Network = sandbox.NetworkIsolated
				c.Sandbox.NetworkDeny = []netip.Prefix{rn.DeniedNet}
			}))
			want := int64(demosite.Pages * demosite.PerPage)
			for _, sp := range []string{scrapy.ID, plain.ID} {
				jobID := b.start(sp, `{"start_url":"http://`+rn.Addr.String()+`/demo/"}`, nil)
				j := b.waitStatus(jobID, scrapethis.StatusFinished)
				if j.ItemsScraped != want {
					t.Fatalf("items_scraped %d, want %d; log:\n%s", j.ItemsScraped, want, b.logs(jobID))
				}
				if sp == scrapy.ID {
					checkRunner(t, b.logs(jobID), runner)
				}
			}
			// The same site on a denied address (the host itself reaches
			// it): nothing, from either spider, forked or not.
			for _, sp := range []string{scrapy.ID, plain.ID} {
				nj := scrapethis.NewJob{UserID: b.userID, SpiderID: sp,
					Arguments: json.RawMessage(`{"start_url":"http://` + rn.Denied.String() + `/demo/"}`)}
				if sp == scrapy.ID {
					nj.Settings = json.RawMessage(`{"DOWNLOAD_TIMEOUT": 3, "RETRY_ENABLED": false}`)
				}
				j, err := b.db.CreateJob(context.Background(), nj)
				if err != nil {
					t.Fatal(err)
				}
				if err := b.queuer.Enqueue(context.Background(), j); err != nil {
					t.Fatal(err)
				}
				b.waitFor("the denied job to end", 60*time.Second, func() bool { j = b.job(j.ID); return j.Status.Final() })
				if j.ItemsScraped != 0 {
					t.Errorf("a job scraped %d items off a denied address; log:\n%s", j.ItemsScraped, b.logs(j.ID))
				}
			}
		})
	}
}
