package worker_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/scrapethis/scrapethis"
	"github.com/scrapethis/scrapethis/internal/testenv"
	"github.com/scrapethis/scrapethis/worker"
)

func needScrapy(t *testing.T) {
	t.Helper()
	if err := exec.Command("/usr/bin/python3", "-c", "import scrapy").Run(); err != nil {
		t.Skip("Scrapy is not installed (make test installs python3-scrapy)")
	}
}

// scrapySpider writes a Scrapy spider file and registers it.
func (b *bundle) scrapySpider(name, body string) string {
	b.t.Helper()
	if err := os.WriteFile(filepath.Join(b.spiders, name+".py"), []byte(body), 0o644); err != nil {
		b.t.Fatal(err)
	}
	sp, err := b.db.CreateSpider(context.Background(), b.userID, name, name+".py")
	if err != nil {
		b.t.Fatal(err)
	}
	return sp.ID
}

// zygotePid is the warm parent the job's spider was forked from, 0 if none.
func zygotePid(logs string) int {
	m := regexp.MustCompile(`forked from the warm Python parent (\d+)`).FindStringSubmatch(logs)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

const polluter = `import json, os, threading, time
import scrapy
import scrapy.http

class Polluter(scrapy.Spider):
    name = "polluter"

    def start_requests(self):
        json.dumps = lambda *a, **k: "polluted"
        scrapy.Spider.custom_settings = {"POLLUTED": True}
        scrapy.http.Request.polluted = True
        threading.Thread(target=time.sleep, args=(3600,), daemon=True, name="leftover").start()
        return []
`

const checker = `import json, threading
import scrapy
import scrapy.http

class Checker(scrapy.Spider):
    name = "checker"

    def start_requests(self):
        return []

    def closed(self, reason):
        ok = (json.dumps({"a": 1}) == '{"a": 1}' and scrapy.Spider.custom_settings is None
              and not hasattr(scrapy.http.Request, "polluted")
              and [t.name for t in threading.enumerate()] == ["MainThread"])
        self.logger.info("CLEAN %s", ok)
`

// TestForkIsolation: a job that monkeypatches a module, changes a class
// attribute and leaves a thread is followed, on the same warm parent, by a
// job that sees none of it. Sandboxed and not.
func TestForkIsolation(t *testing.T) {
	t.Parallel()
	needScrapy(t)
	for _, box := range []bool{false, true} {
		t.Run(map[bool]string{false: "sandbox off", true: "sandboxed"}[box], func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			var mod func(*worker.Config)
			if box {
				mod = sandboxed(t)
			}
			polluterID := b.scrapySpider("polluter", polluter)
			checkerID := b.scrapySpider("checker", checker)
			b.startWorker(withRunner("fork", mod))
			first := b.start(polluterID, `{}`, nil)
			b.waitStatus(first, scrapethis.StatusFinished)
			second := b.start(checkerID, `{}`, nil)
			b.waitStatus(second, scrapethis.StatusFinished)
			logs := b.logs(second)
			if zygotePid(logs) == 0 || zygotePid(logs) != zygotePid(b.logs(first)) {
				t.Fatalf("not forked from one warm parent:\n%s\n%s", b.logs(first), logs)
			}
			if !strings.Contains(logs, "CLEAN True") {
				t.Fatalf("the second job saw the first one's changes:\n%s", logs)
			}
		})
	}
}

// TestForkedParentKilled: a killed warm parent costs no job: the next one
// starts a fresh Python while the parent is started again, and a later
// one is forked from the new parent.
func TestForkedParentKilled(t *testing.T) {
	t.Parallel()
	needScrapy(t)
	b := setup(t)
	id := b.scrapySpider("checker", checker)
	b.startWorker(withRunner("fork", nil))
	first := b.start(id, `{}`, nil)
	b.waitStatus(first, scrapethis.StatusFinished)
	parent := zygotePid(b.logs(first))
	if parent == 0 {
		t.Fatalf("not forked:\n%s", b.logs(first))
	}
	syscall.Kill(parent, syscall.SIGKILL)
	testenv.WaitFor(t, 10*time.Second, "the killed parent to be reaped", func() bool { return !pidAlive(parent) })
	second := b.start(id, `{}`, nil)
	b.waitStatus(second, scrapethis.StatusFinished)
	if p := zygotePid(b.logs(second)); p == parent {
		t.Fatalf("forked from a dead parent:\n%s", b.logs(second))
	}
	var again int
	testenv.WaitFor(t, 60*time.Second, "a job forked from a new warm parent", func() bool {
		j := b.start(id, `{}`, nil)
		b.waitStatus(j, scrapethis.StatusFinished)
		again = zygotePid(b.logs(j))
		return again != 0
	})
	if again == parent {
		t.Fatal("the dead parent forked again")
	}
}

// hangingSite answers /ok at once and never answers anything else.
func hangingSite(t *testing.T) string {
	t.Helper()
	release := make(chan struct{})
	site := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/ok" {
			return
		}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(site.Close)
	t.Cleanup(func() { close(release) })
	return site.URL
}

const hanging = `import scrapy

class Hanging(scrapy.Spider):
    name = "hanging"
    custom_settings = {"DOWNLOAD_TIMEOUT": 600}

    def start_requests(self):
        yield scrapy.Request(self.url + "/ok")

    def parse(self, response):
        yield {"started": 1}
        yield scrapy.Request(self.url + "/hang", callback=self.never)

    def never(self, response):
        yield {"never": 1}
`

// TestForkedCancelTimeoutMemory: forked Scrapy spiders in the sandbox are
// cancelled (SIGTERM, then SIGKILL), time out, and end on
// their memory limit, leaving no process of their uid.
func TestForkedCancelTimeoutMemory(t *testing.T) {
	t.Parallel()
	needScrapy(t)
	b := setup(t)
	url := hangingSite(t)
	hang := b.scrapySpider("hanging", hanging)
	hog := b.scrapySpider("hog", `import scrapy

class Hog(scrapy.Spider):
    name = "hog"

    def start_requests(self):
        self.ballast = bytearray(600 << 20)
        return []
`)
	b.startWorker(withRunner("fork", sandboxed(t)))

	cancelled := b.start(hang, `{"url":"`+url+`"}`, nil)
	b.waitFor("the first item", 60*time.Second, func() bool { return b.job(cancelled).ItemsScraped == 1 })
	uid := b.sandboxUID(cancelled)
	b.cancel(cancelled, true)
	j := b.waitStatus(cancelled, scrapethis.StatusCancelled)
	checkRunner(t, b.logs(cancelled), "fork")
	if left := testenv.ProcessesOf(uid); len(left) > 0 {
		t.Errorf("processes of uid %d left: %v", uid, left)
	}
	// The init forwarded SIGTERM to the forked spider (a download in
	// flight keeps Scrapy from closing within the grace: then SIGKILL).
	if !strings.Contains(b.logs(cancelled), "Received SIGTERM") || deref(j.Error) != scrapethis.ReasonCancelled {
		t.Errorf("Scrapy got no SIGTERM: %+v\n%s", j, b.logs(cancelled))
	}

	one := 1
	timedOut := b.start(hang, `{"url":"`+url+`"}`, &one)
	j = b.waitStatus(timedOut, scrapethis.StatusError)
	if deref(j.Error) != scrapethis.ReasonTimeout {
		t.Errorf("timeout: %+v\n%s", j, b.logs(timedOut))
	}

	hogged := b.start(hog, `{}`, nil)
	j = b.waitStatus(hogged, scrapethis.StatusError)
	checkRunner(t, b.logs(hogged), "fork")
	if !strings.Contains(deref(j.Error), "memory limit") || !strings.Contains(deref(j.Error), "160 MiB") {
		t.Fatalf("reason %q; log:\n%s", deref(j.Error), b.logs(hogged))
	}
}
