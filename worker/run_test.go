package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/scrapethis/scrapethis"
	"github.com/scrapethis/scrapethis/demosite"
	"github.com/scrapethis/scrapethis/worker"
)

func TestExecutableSpider(t *testing.T) {
	// Not parallel: it plants variables in the worker's own environment.
	b := setup(t)
	t.Setenv("DATABASE_URL", "postgres://secret")
	t.Setenv("SCRAPETHIS_TEST_SECRET", "hunter2")
	id := b.script("env.sh", `#!/bin/sh
echo "starting with $*" >&2
echo '{"n":1}'
echo 'not json'
echo '[1,2]'
printf '{"job":"%s","spider":"%s","db":"%s","secret":"%s"}\n' "$SCRAPETHIS_JOB_ID" "$SCRAPETHIS_SPIDER" "$DATABASE_URL" "$SCRAPETHIS_TEST_SECRET"
echo '{"n":3}'
echo "bye" >&2
`)
	b.startWorker(nil)
	jobID := b.start(id, `{"q":"a b","n":2,"obj":{"x":true}}`, nil)
	j := b.waitStatus(jobID, scrapethis.StatusFinished)
	items := b.items(jobID)
	if len(items) != 3 || j.ItemsScraped != 3 {
		t.Fatalf("items_scraped %d, items %v", j.ItemsScraped, items)
	}
	var env map[string]string
	json.Unmarshal([]byte(items[1]), &env)
	if env["job"] != jobID || env["spider"] != "env.sh" || env["db"] != "" || env["secret"] != "" {
		t.Fatalf("spider environment: %v", env)
	}
	if items[2] != `{"n":3}` {
		t.Fatalf("order: %v", items)
	}
	logs := b.logs(jobID)
	for _, want := range []string{"starting with -a n=2 -a obj={\"x\":true} -a q=a b", "bye", "not a JSON object", "exit status 0"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
	if j.StartedAt == nil || j.FinishedAt == nil || j.Error != nil || j.Attempts != 1 {
		t.Fatalf("job %+v", j)
	}
}

func TestArgumentsArriveAsSeparateWords(t *testing.T) {
	t.Parallel()
	b := setup(t)
	out := filepath.Join(t.TempDir(), "argv")
	id := b.script("argv.sh", "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done > "+out+"\n")
	b.startWorker(nil)
	jobID := b.start(id, `{"q":"a b; rm -rf /","n":2}`, nil)
	b.waitStatus(jobID, scrapethis.StatusFinished)
	data, _ := os.ReadFile(out)
	if string(data) != "-a\nn=2\n-a\nq=a b; rm -rf /\n" {
		t.Fatalf("argv %q", data)
	}
}

func TestFailingSpiders(t *testing.T) {
	t.Parallel()
	b := setup(t)
	exit3 := b.script("exit3.sh", "#!/bin/sh\necho '{\"a\":1}'\nexit 3\n")
	os.WriteFile(filepath.Join(b.spiders, "noexec.sh"), []byte("#!/bin/sh\n"), 0o644)
	noexec, _ := b.db.CreateSpider(context.Background(), b.userID, "noexec", "noexec.sh")
	missing, _ := b.db.CreateSpider(context.Background(), b.userID, "missing", "missing.sh")
	outside := t.TempDir()
	os.WriteFile(filepath.Join(outside, "evil.sh"), []byte("#!/bin/sh\necho '{\"escaped\":1}'\n"), 0o755)
	os.Symlink(filepath.Join(outside, "evil.sh"), filepath.Join(b.spiders, "link.sh"))
	link, _ := b.db.CreateSpider(context.Background(), b.userID, "link", "link.sh")
	b.startWorker(nil)

	cases := map[string]struct{ spider, reason string }{
		"exit":    {exit3, "exit status 3"},
		"noexec":  {noexec.ID, "not executable"},
		"missing": {missing.ID, "not found"},
		"symlink": {link.ID, "leaves the spiders directory"},
	}
	for name, c := range cases {
		jobID := b.start(c.spider, `{}`, nil)
		j := b.waitStatus(jobID, scrapethis.StatusError)
		if j.Error == nil || !strings.Contains(*j.Error, c.reason) {
			t.Errorf("%s: reason %q, want %q", name, deref(j.Error), c.reason)
		}
		if name == "exit" && j.ItemsScraped != 1 {
			t.Errorf("exit: items before the failure not kept: %d", j.ItemsScraped)
		}
		if name == "symlink" && j.ItemsScraped != 0 {
			t.Error("a spider outside the spiders directory ran")
		}
	}
}

func TestScrapySpider(t *testing.T) {
	t.Parallel()
	if err := exec.Command("/usr/bin/python3", "-c", "import scrapy").Run(); err != nil {
		t.Skip("Scrapy is not installed (make test installs python3-scrapy)")
	}
	for _, runner := range scrapyRunners() {
		t.Run(runner, func(t *testing.T) {
			t.Parallel()
			testScrapySpider(t, runner)
		})
	}
}

func testScrapySpider(t *testing.T, runner string) {
	b := setup(t)
	site := httptest.NewServer(demosite.Handler("/demo"))
	defer site.Close()
	src, err := os.ReadFile("../spiders/quotes.py")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(b.spiders, "quotes.py"), src, 0o644)
	sp, _ := b.db.CreateSpider(context.Background(), b.userID, "quotes", "quotes.py")
	b.startWorker(withRunner(runner, nil))
	jobID := b.start(sp.ID, `{"start_url":"`+site.URL+`/demo/"}`, nil)
	j := b.waitStatus(jobID, scrapethis.StatusFinished)
	checkRunner(t, b.logs(jobID), runner)
	want := demosite.Pages * demosite.PerPage
	if j.ItemsScraped != int64(want) {
		t.Fatalf("items_scraped %d, want %d; log:\n%s", j.ItemsScraped, want, b.logs(jobID))
	}
	text, author := demosite.Quote(0)
	var first map[string]string
	json.Unmarshal([]byte(b.items(jobID)[0]), &first)
	if first["text"] != text || first["author"] != author {
		t.Fatalf("first item %v", first)
	}
	if logs := b.logs(jobID); !strings.Contains(logs, "'finish_reason': 'finished'") {
		t.Errorf("Scrapy stats not in the log:\n%s", logs)
	}
	if strings.Contains(b.logs(jobID), "DEBUG: Scraped from") {
		t.Error("Scrapy logged at DEBUG; want INFO by default")
	}
}

// sleeper is a spider that records its pid and a child's pid, then waits.
func sleeper(pidFile string, ignoreTerm bool) string {
	trap := ""
	if ignoreTerm {
		trap = "trap '' TERM\n"
	}
	return "#!/bin/sh\n" + trap + `echo '{"started":1}'
sleep 300 &
echo $$ $! > ` + pidFile + `
wait
`
}

func TestCancelRunningJob(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		ignoreTerm bool
		publish    bool
	}{
		{"obeys SIGTERM", false, true},
		{"ignores SIGTERM", true, true},
		{"cancel message lost", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := setup(t)
			pidFile := filepath.Join(t.TempDir(), "pids")
			id := b.script("sleep.sh", sleeper(pidFile, tc.ignoreTerm))
			b.startWorker(nil)
			jobID := b.start(id, `{}`, nil)
			pids := b.readPids(pidFile, 2)
			b.waitStatus(jobID, scrapethis.StatusRunning)
			b.cancel(jobID, tc.publish)
			j := b.waitStatus(jobID, scrapethis.StatusCancelled)
			for _, pid := range pids {
				if pidAlive(pid) {
					t.Errorf("process %d survived the cancel", pid)
				}
			}
			if j.ItemsScraped != 1 || j.FinishedAt == nil || deref(j.Error) != scrapethis.ReasonCancelled {
				t.Fatalf("cancelled job %+v", j)
			}
			if tc.ignoreTerm && !strings.Contains(b.logs(jobID), "SIGKILL") {
				t.Errorf("no SIGKILL in log:\n%s", b.logs(jobID))
			}
		})
	}
}

func TestCancelledJobNeverRunsAgain(t *testing.T) {
	t.Parallel()
	b := setup(t)
	runs := filepath.Join(t.TempDir(), "runs")
	id := b.script("count.sh", "#!/bin/sh\necho run >> "+runs+"\nexec sleep 300\n")
	b.startWorker(func(c *worker.Config) { c.Concurrency = 1 })
	jobID := b.start(id, `{}`, nil)
	b.waitStatus(jobID, scrapethis.StatusRunning)
	b.waitFor("spider start", 10*time.Second, func() bool { d, _ := os.ReadFile(runs); return len(d) > 0 })
	b.cancel(jobID, true)
	b.waitStatus(jobID, scrapethis.StatusCancelled)
	// The worker is still taking work, and no task of the cancelled job is
	// left to run again (the retry asynq leaves behind is deleted).
	other := b.start(b.script("ok.sh", "#!/bin/sh\n"), `{}`, nil)
	b.waitStatus(other, scrapethis.StatusFinished)
	b.waitFor("the cancelled job's task to be gone", 30*time.Second, func() bool { return !b.taskExists(jobID) })
	// Even delivered again, it does not run.
	b.redeliver(b.job(jobID))
	if d, _ := os.ReadFile(runs); strings.Count(string(d), "run") != 1 {
		t.Fatalf("cancelled spider ran %d times", strings.Count(string(d), "run"))
	}
	if j := b.job(jobID); j.Status != scrapethis.StatusCancelled || j.Attempts != 1 {
		t.Fatalf("job %+v", j)
	}
}

func TestTimeout(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id := b.script("slow.sh", "#!/bin/sh\necho '{\"a\":1}'\nexec sleep 300\n")
	b.startWorker(nil)
	one := 1
	jobID := b.start(id, `{}`, &one)
	j := b.waitStatus(jobID, scrapethis.StatusError)
	if deref(j.Error) != scrapethis.ReasonTimeout || j.ItemsScraped != 1 {
		t.Fatalf("job %+v", j)
	}
}

func TestConcurrencyLimitAndNoDoubleRuns(t *testing.T) {
	t.Parallel()
	b := setup(t)
	trace := filepath.Join(t.TempDir(), "trace")
	id := b.script("trace.sh", `#!/bin/sh
echo "start $SCRAPETHIS_JOB_ID $(date +%s%N)" >> `+trace+`
sleep 0.2
echo "end $SCRAPETHIS_JOB_ID $(date +%s%N)" >> `+trace+`
echo '{"ok":1}'
`)
	b.startWorker(func(c *worker.Config) { c.Concurrency = 2 })
	b.startWorker(func(c *worker.Config) { c.Concurrency = 2 })
	var ids []string
	for i := 0; i < 30; i++ {
		ids = append(ids, b.start(id, `{}`, nil))
	}
	for _, id := range ids {
		j := b.waitStatus(id, scrapethis.StatusFinished)
		if j.Attempts != 1 || j.ItemsScraped != 1 {
			t.Fatalf("job %s: attempts %d items %d", id, j.Attempts, j.ItemsScraped)
		}
	}
	data, _ := os.ReadFile(trace)
	type ev struct {
		t     string
		delta int
	}
	var evs []ev
	starts := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		f := strings.Fields(line)
		if f[0] == "start" {
			starts[f[1]]++
			evs = append(evs, ev{f[2], 1})
		} else {
			evs = append(evs, ev{f[2], -1})
		}
	}
	for _, id := range ids {
		if starts[id] != 1 {
			t.Errorf("job %s started %d times", id, starts[id])
		}
	}
	sort.Slice(evs, func(i, j int) bool {
		if len(evs[i].t) != len(evs[j].t) {
			return len(evs[i].t) < len(evs[j].t)
		}
		if evs[i].t != evs[j].t {
			return evs[i].t < evs[j].t
		}
		return evs[i].delta < evs[j].delta
	})
	live, peak := 0, 0
	for _, e := range evs {
		live += e.delta
		peak = max(peak, live)
	}
	if peak > 4 {
		t.Fatalf("%d spiders at once on two workers of concurrency 2", peak)
	}
}

func TestManyItemsInOrder(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id := b.script("many.sh", "#!/bin/sh\nseq 1 20000 | sed 's/.*/{\"i\":&}/'\n")
	b.startWorker(nil)
	jobID := b.start(id, `{}`, nil)
	j := b.waitStatus(jobID, scrapethis.StatusFinished)
	items := b.items(jobID)
	if j.ItemsScraped != 20000 || len(items) != 20000 {
		t.Fatalf("items_scraped %d, stored %d", j.ItemsScraped, len(items))
	}
	for i, it := range items {
		if it != fmt.Sprintf(`{"i":%d}`, i+1) {
			t.Fatalf("item %d is %s", i, it)
		}
	}
}

func TestItemsCountedWhileRunning(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id := b.script("slowitems.sh", "#!/bin/sh\necho '{\"a\":1}'\necho '{\"a\":2}'\nexec sleep 300\n")
	b.startWorker(nil)
	jobID := b.start(id, `{}`, nil)
	b.waitFor("items_scraped to reach 2 while running", 30*time.Second, func() bool {
		j := b.job(jobID)
		return j.Status == scrapethis.StatusRunning && j.ItemsScraped == 2
	})
	b.cancel(jobID, true)
	b.waitStatus(jobID, scrapethis.StatusCancelled)
}

func TestBinaryGarbageIsStoredSafely(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id := b.script("garbage.sh", `#!/bin/sh
printf '{"ok":1}\n{"bad":"\377\376"}\n'
printf 'latin1 \351t\351 and a nul \000 here\n' >&2
printf '{"ok":2}\n'
`)
	b.startWorker(nil)
	jobID := b.start(id, `{}`, nil)
	j := b.waitStatus(jobID, scrapethis.StatusFinished)
	if j.ItemsScraped != 2 {
		t.Fatalf("items_scraped %d, want 2 (the invalid UTF-8 line is not an item)", j.ItemsScraped)
	}
	if logs := b.logs(jobID); !strings.Contains(logs, "latin1 \uFFFDt\uFFFD and a nul  here") {
		t.Fatalf("log:\n%q", logs)
	}
}

// TestDroppedLinesAreVisible: a line too long to store and a line that is
// not an item leave the job finished, but its stats say what was dropped.
func TestDroppedLinesAreVisible(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id := b.script("dropper.sh", `#!/bin/sh
echo '{"ok":1}'
printf '{"huge":"'; head -c 9000000 /dev/zero | tr '\0' 'a'; printf '"}\n'
echo 'not an item'
echo '{"ok":2}'
`)
	b.startWorker(nil)
	j := b.waitStatus(b.start(id, `{}`, nil), scrapethis.StatusFinished)
	var st map[string]float64
	if err := json.Unmarshal(j.Stats, &st); err != nil {
		t.Fatalf("stats %q: %v", j.Stats, err)
	}
	if j.ItemsScraped != 2 || st["scrapethis/items_dropped_too_long"] != 1 || st["scrapethis/stdout_lines_not_items"] != 1 {
		t.Fatalf("items %d, stats %s", j.ItemsScraped, j.Stats)
	}
}

// TestJobItemLimit: past the job's item bytes limit, items are dropped and
// counted, and the log says so once.
func TestJobItemLimit(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id := b.script("many.sh", `#!/bin/sh
i=0
while [ $i -lt 3 ]; do i=$((i+1)); printf '{"blob":"'; head -c 600000 /dev/zero | tr '\0' 'a'; printf '"}\n'; done
`)
	b.startWorker(func(c *worker.Config) { c.JobItemMaxMB = 1 })
	jobID := b.start(id, `{}`, nil)
	j := b.waitStatus(jobID, scrapethis.StatusFinished)
	var st map[string]float64
	json.Unmarshal(j.Stats, &st)
	if j.ItemsScraped != 1 || st["scrapethis/items_dropped_over_limit"] != 2 || strings.Count(b.logs(jobID), "passed its limit of 1 MiB") != 1 {
		t.Fatalf("items %d, stats %s, log:\n%s", j.ItemsScraped, j.Stats, b.logs(jobID))
	}
}

// TestCancelShellWithChild: a shell spider whose child runs in the
// foreground ends on SIGTERM, its child too; the child, adopted by the
// worker, is reaped at once, so the job never waits for its group (nor
// for the SIGKILL of the grace period, 30s here).
func TestCancelShellWithChild(t *testing.T) {
	t.Parallel()
	b := setup(t)
	pidFile := filepath.Join(t.TempDir(), "pids")
	id := b.script("fg.sh", "#!/bin/sh\necho '{\"started\":1}'\necho $$ > "+pidFile+"\nsleep 300\n")
	b.startWorker(func(c *worker.Config) { c.CancelGrace = 30 * time.Second })
	jobID := b.start(id, `{}`, nil)
	b.readPids(pidFile, 1)
	b.waitStatus(jobID, scrapethis.StatusRunning)
	b.cancel(jobID, true)
	b.waitStatus(jobID, scrapethis.StatusCancelled)
	logs := b.logs(jobID)
	if strings.Contains(logs, "did not stop within") || strings.Contains(logs, "outlived it") {
		t.Fatalf("the cancel waited for the group:\n%s", logs)
	}
}
