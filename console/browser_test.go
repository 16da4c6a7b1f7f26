package console_test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/scrapethis/scrapethis/archive"
	"github.com/scrapethis/scrapethis/console"
)

var screenshots = flag.Bool("screenshots", false, "write the browser test's screenshots into docs/ (make screenshots)")

// chromium finds Debian's chromium; scripts/services.sh installs it.
func chromium(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("chromium is not installed, so the console's browser test cannot run: `make test` installs it (scripts/services.sh: apt-get install chromium)")
	return ""
}

// tab is a browser tab that records what a person would notice went
// wrong: requests to another origin, script errors, console errors.
type tab struct {
	t      *testing.T
	ctx    context.Context
	origin string

	mu       sync.Mutex
	requests []string // every URL the page asked for
	problems []string
	dialogs  []bool // answers to confirm() dialogs, in order
}

func newTab(t *testing.T, origin string) *tab {
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium(t)), chromedp.WindowSize(1280, 900))
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox) // Chromium refuses to run as root with its sandbox
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc()
	})
	tb := &tab{t: t, ctx: ctx, origin: origin}
	if err := chromedp.Do(ctx); err != nil { // starts the browser, with no timeout
		t.Fatalf("start chromium: %v", err)
	}
	err := chromedp.Listen(ctx, func(ev any) {
		tb.mu.Lock()
		defer tb.mu.Unlock()
		switch e := ev.(type) {
		case *network.EventRequestWillBeSent:
			tb.requests = append(tb.requests, e.Request.URL)
			if u, err := url.Parse(e.Request.URL); err != nil || u.Scheme+"://"+u.Host != origin {
				tb.problems = append(tb.problems, "request to another origin: "+e.Request.URL)
			}
		case *runtime.EventExceptionThrown:
			d := e.ExceptionDetails
			desc := d.Text
			if d.Exception != nil {
				desc += " " + d.Exception.Description
			}
			tb.problems = append(tb.problems, fmt.Sprintf("script error at %s:%d: %s", d.URL, d.LineNumber, desc))
		case *runtime.EventConsoleAPICalled:
			if e.Type == runtime.ConsoleAPICalledTypeError || e.Type == runtime.ConsoleAPICalledTypeAssert || e.Type == runtime.ConsoleAPICalledTypeWarning {
				var args []string
				for _, a := range e.Args {
					args = append(args, a.Description+string(a.Value))
				}
				tb.problems = append(tb.problems, fmt.Sprintf("console %s: %v", e.Type, args))
			}
		case *network.EventResponseReceived:
			// Pages answer 4xx on purpose (a wrong key, another user's
			// job); a script, stylesheet or fetch that fails is a problem.
			if e.Type != network.ResourceTypeDocument && e.Response.Status >= 400 {
				tb.problems = append(tb.problems, fmt.Sprintf("%s %s answered %d", e.Type, e.Response.URL, e.Response.Status))
			}
		case *cdplog.EventEntryAdded:
			// Failed loads are judged above, by resource type.
			if e.Entry.Level == cdplog.EntryLevelError && e.Entry.Source != cdplog.EntrySourceNetwork {
				tb.problems = append(tb.problems, "browser log: "+e.Entry.Text+" "+e.Entry.URL)
			}
		case *page.EventJavascriptDialogOpening:
			accept := len(tb.dialogs) > 0 && tb.dialogs[0]
			if len(tb.dialogs) > 0 {
				tb.dialogs = tb.dialogs[1:]
			} else {
				tb.problems = append(tb.problems, "unexpected dialog: "+e.Message)
			}
			go chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: accept})
		}
	})
	if err != nil {
		t.Fatalf("listen to the tab: %v", err)
	}
	tb.run("enable the protocol's domains", chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		if _, err := cdp.Call(ctx, tg, network.Enable, network.EnableParams{}); err != nil {
			return err
		}
		if _, err := cdp.Call(ctx, tg, runtime.Enable, cdp.Empty{}); err != nil {
			return err
		}
		_, err := cdp.Call(ctx, tg, cdplog.Enable, cdp.Empty{})
		return err
	}))
	return tb
}

// run runs browser actions, failing the test on error; each call has a
// bound for slow machines, never a timing assertion.
func (tb *tab) run(what string, actions ...chromedp.Action[chromedp.Void]) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, 2*time.Minute)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		tb.t.Fatalf("%s: %v\nproblems so far: %v", what, err, tb.problemList())
	}
}

// load runs actions that make the page navigate, and waits for the new
// page; it returns the page's HTTP status.
func (tb *tab) load(what string, actions ...chromedp.Action[chromedp.Void]) int64 {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, 2*time.Minute)
	defer cancel()
	res, err := chromedp.RunResponse(ctx, actions...)
	if err != nil {
		tb.t.Fatalf("%s: %v\nproblems so far: %v", what, err, tb.problemList())
	}
	return res.Status
}

func (tb *tab) problemList() []string {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	return append([]string(nil), tb.problems...)
}

// requestsTo counts the requests whose path starts with prefix.
func (tb *tab) requestsTo(prefix string) int {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	n := 0
	for _, r := range tb.requests {
		if u, err := url.Parse(r); err == nil && strings.HasPrefix(u.Path, prefix) {
			n++
		}
	}
	return n
}

func (tb *tab) answerDialogs(accept ...bool) {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	tb.dialogs = append(tb.dialogs, accept...)
}

func (tb *tab) eval(expr string) string {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, time.Minute)
	defer cancel()
	out, err := chromedp.Run(ctx, chromedp.Evaluate[string](expr))
	if err != nil {
		tb.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return out
}

// waitFor polls a JavaScript condition on the page until it is true.
func (tb *tab) waitFor(what, cond string) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, 2*time.Minute)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](cond, chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(90*time.Second))); err != nil {
		tb.t.Fatalf("wait for %s: %v\nproblems so far: %v", what, err, tb.problemList())
	}
}

func (tb *tab) path() string {
	return tb.eval(`location.pathname + location.search`)
}

// fits checks that the page needs no sideways scrolling.
func (tb *tab) fits(where string) {
	tb.t.Helper()
	if over := tb.eval(`String(document.documentElement.scrollWidth - document.documentElement.clientWidth)`); over != "0" {
		tb.t.Errorf("%s at %s scrolls sideways by %s px", tb.path(), where, over)
	}
}

// shot saves a screenshot of the page (full height) as docs/NAME.png with
// -screenshots, and into the test's temporary directory otherwise.
func (tb *tab) shot(name string) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, time.Minute)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		tb.t.Fatalf("screenshot %s: %v", name, err)
	}
	if len(png) < 1000 {
		tb.t.Fatalf("screenshot %s is %d bytes", name, len(png))
	}
	dir := tb.t.TempDir()
	if *screenshots {
		dir = filepath.Join("..", "docs")
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		tb.t.Fatal(err)
	}
}

const (
	gateSpider = `#!/bin/sh
# -a gate=PATH: log, wait for the test to create PATH, then yield 3 items.
gate=${2#gate=}
echo "waiting for the gate" >&2
i=0
while [ ! -e "$gate" ]; do i=$((i+1)); [ $i -gt 6000 ] && exit 3; sleep 0.05; done
echo "gate opened" >&2
for n in 1 2 3; do echo "{\"n\": $n, \"name\": \"item $n\", \"tags\": [\"a\", \"b\"]}"; done
echo "done" >&2
`
	sleepSpider = "#!/bin/sh\necho 'sleeping' >&2\nexec sleep 300\n"
)

// TestBrowser is a person's session in headless Chromium: sign in with a
// wrong key and a right one, look at cookies and storage, start a job from
// the form and watch it finish with its items and log, follow a running
// job live, cancel one, manage schedules, open another user's objects,
// visit every page at 1280 px and on a 390 px phone; with no request to
// another origin and no script error anywhere.
func TestBrowser(t *testing.T) {
	chromium(t)
	t.Parallel()
	b := setup(t, options{worker: true})
	alice, bob := b.user("alice@example.com"), b.user("bob@example.com")
	quotes, err := os.ReadFile("../spiders/quotes.py")
	if err != nil {
		t.Fatal(err)
	}
	b.spider(alice, "quotes", "quotes.py", string(quotes))
	gated := b.spider(alice, "gated", "gate.sh", gateSpider)
	b.spider(alice, "sleepy", "sleep.sh", sleepSpider)
	b.spider(bob, "bobs_spider", "bob.sh", "#!/bin/sh\necho '{\"secret\": 1}'\n")
	bobJob := b.startJob(bob.key, `{"spider_name": "bobs_spider"}`)
	b.deployBundle(alice, "shop")

	tb := newTab(t, b.url)
	gates := t.TempDir()

	// Sign in: a wrong key, then the right one.
	tb.run("open the console", chromedp.Navigate(b.url+"/"), chromedp.WaitVisible(chromedp.CSS(`#key`)))
	if p := tb.path(); p != "/signin" {
		t.Fatalf("a stranger lands on %s", p)
	}
	tb.shot("console-signin")
	tb.load("sign in with a wrong key", chromedp.SendKeys(chromedp.CSS(`#key`), "st_wrong"), chromedp.Submit(chromedp.CSS(`#key`)))
	tb.run("sign in with a wrong key", chromedp.WaitVisible(chromedp.CSS(`#key-problem`)))
	if msg := tb.eval(`document.getElementById('key-problem').textContent`); !strings.Contains(msg, "not valid") {
		t.Fatalf("wrong key says %q", msg)
	}
	tb.load("sign in", chromedp.SendKeys(chromedp.CSS(`#key`), alice.key), chromedp.Submit(chromedp.CSS(`#key`)))
	tb.run("sign in", chromedp.WaitVisible(chromedp.CSS(`.filters`)))
	if p := tb.path(); p != "/jobs" {
		t.Fatalf("sign-in lands on %s", p)
	}
	// The key is nowhere in the browser: not in a cookie, not in storage,
	// and the session cookie is out of scripts' reach.
	got, err := chromedp.Call(tb.ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{b.url}})
	if err != nil {
		t.Fatal(err)
	}
	cookies := got.Cookies
	var session *network.Cookie
	for _, ck := range cookies {
		if strings.Contains(ck.Value, alice.key) {
			t.Errorf("cookie %s holds the key", ck.Name)
		}
		if ck.Name == console.SessionCookie {
			session = ck
		}
	}
	if session == nil || !session.HTTPOnly || session.SameSite != network.CookieSameSiteLax {
		t.Fatalf("session cookie: %+v", session)
	}
	if got := tb.eval(`document.cookie + '|' + localStorage.length + '|' + sessionStorage.length`); got != "|0|0" {
		t.Fatalf("scripts see cookies|localStorage|sessionStorage: %q", got)
	}

	// Start a Scrapy job from the form: the API's own messages first.
	tb.run("open the form", chromedp.Navigate(b.url+"/new-job"), chromedp.WaitVisible(chromedp.CSS(`#spider`)))
	quotesID := tb.eval(`[...document.querySelectorAll('#spider option')].find(o => o.textContent.trim() === 'quotes').value`)
	tb.load("a job with bad arguments", chromedp.SetValue(chromedp.CSS(`#spider`), quotesID),
		chromedp.SetValue(chromedp.CSS(`#arguments`), `{"bad key": 1}`), chromedp.Submit(chromedp.CSS(`#arguments`)))
	tb.run("a job with bad arguments", chromedp.WaitVisible(chromedp.CSS(`#arguments-problem`)))
	msg := tb.eval(`document.getElementById('arguments-problem').textContent`)
	st, apiBody := b.apiDo(alice.key, "POST", "/api/v1/jobs", `{"spider_name": "quotes", "arguments": {"bad key": 1}}`)
	var apiErr struct{ Error string }
	json.Unmarshal(apiBody, &apiErr)
	if st != 400 || msg != apiErr.Error {
		t.Fatalf("the form says %q; the API says %d %q", msg, st, apiErr.Error)
	}
	if got := tb.eval(`document.activeElement.id + ' ' + document.getElementById('arguments').getAttribute('aria-invalid')`); got != "arguments true" {
		t.Errorf("after a refused form, focus and aria-invalid: %q", got)
	}
	tb.shot("console-new-job-refused")
	tb.load("a job with arguments that are not JSON", chromedp.SetValue(chromedp.CSS(`#arguments`), `{start_url:`), chromedp.Submit(chromedp.CSS(`#arguments`)))
	tb.run("a job with arguments that are not JSON", chromedp.WaitVisible(chromedp.CSS(`#arguments-problem`)))
	if msg := tb.eval(`document.getElementById('arguments-problem').textContent`); !strings.Contains(msg, "must be JSON") {
		t.Errorf("not-JSON arguments say %q", msg)
	}
	tb.load("start the job", chromedp.SetValue(chromedp.CSS(`#spider`), quotesID),
		chromedp.SetValue(chromedp.CSS(`#arguments`), `{"start_url": "`+b.url+`/demo/"}`), chromedp.Submit(chromedp.CSS(`#arguments`)))
	tb.run("start the job", chromedp.WaitVisible(chromedp.CSS(`#summary`)))
	jobPath := tb.path()
	if !strings.HasPrefix(jobPath, "/jobs/") || !strings.Contains(tb.eval(`document.querySelector('.notice').textContent`), "Job started") {
		t.Fatalf("started job lands on %s", jobPath)
	}
	jobID := strings.TrimSuffix(strings.TrimPrefix(jobPath, "/jobs/"), "?done=started")
	tb.eval(`String(window.stillThisPage = true)`)
	tb.waitFor("the Scrapy job to finish", `document.querySelector('#summary-body [data-status]').dataset.status === 'finished'`)
	tb.waitFor("its items table", `document.querySelectorAll('#items table tbody tr').length > 0`)
	tb.waitFor("its whole log", `document.getElementById('log-state').textContent.includes('ended')`)
	if tb.eval(`String(window.stillThisPage)`) != "true" {
		t.Error("the job page reloaded to show the job's end")
	}
	j := b.job(jobID)
	if j.Status != "finished" || j.ItemsScraped == 0 {
		t.Fatalf("the Scrapy job: %s, %d items, %v", j.Status, j.ItemsScraped, j.Error)
	}
	rows := tb.eval(`String(document.querySelectorAll('#items table tbody tr').length)`)
	cols := tb.eval(`[...document.querySelectorAll('#items thead th')].map(th => th.textContent).join(',')`)
	if rows != fmt.Sprint(min(j.ItemsScraped, 100)) || cols != "#,text,author,url" {
		t.Errorf("items table: %s rows (of %d), columns %s", rows, j.ItemsScraped, cols)
	}
	if log := tb.eval(`document.getElementById('log').textContent`); !strings.Contains(log, "Spider closed (finished)") {
		t.Errorf("the log shows: %.300s", log)
	}
	if stats := tb.eval(`document.querySelector('details.stats pre').textContent`); !strings.Contains(stats, `"item_scraped_count": `+fmt.Sprint(j.ItemsScraped)) {
		t.Errorf("stats show: %.300s", stats)
	}
	tb.shot("console-job")
	b.checkDownloads(session.Value, j.ID, int(j.ItemsScraped))

	// A running job, live: status, log and items arrive without a reload,
	// at no more than one request per poll interval.
	gate := filepath.Join(gates, "one")
	tb.load("start the gated job", chromedp.Navigate(b.url+"/new-job?spider="+gated.ID), chromedp.WaitVisible(chromedp.CSS(`#arguments`)),
		chromedp.SetValue(chromedp.CSS(`#arguments`), `{"gate": "`+gate+`"}`), chromedp.Submit(chromedp.CSS(`#arguments`)))
	tb.run("start the gated job", chromedp.WaitVisible(chromedp.CSS(`#summary`)))
	liveStart := time.Now()
	summariesBefore := tb.requestsTo("/jobs/")
	tb.eval(`String(window.stillThisPage = true)`)
	tb.waitFor("the gated job to run", `document.querySelector('#summary-body [data-status]').dataset.status === 'running'`)
	tb.waitFor("its first log line", `document.getElementById('log').textContent.includes('waiting for the gate')`)
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tb.waitFor("the gated job to finish", `document.querySelector('#summary-body [data-status]').dataset.status === 'finished'`)
	tb.waitFor("its items", `document.querySelectorAll('#items table tbody tr').length === 3`)
	tb.waitFor("the rest of its log", `document.getElementById('log').textContent.includes('gate opened')`)
	window := time.Since(liveStart)
	requests := tb.requestsTo("/jobs/") - summariesBefore
	if tb.eval(`String(window.stillThisPage)`) != "true" {
		t.Error("the job page reloaded")
	}
	if tb.eval(`document.getElementById('cancel') === null ? 'gone' : 'there'`) != "gone" {
		t.Error("a finished job still offers Cancel")
	}
	// One summary poll per 2 s, one log stream and one items fetch: a
	// bound that only a polling bug could break, whatever the machine.
	if limit := int(window/(2*time.Second)) + 3; requests > limit {
		t.Errorf("%d requests in %s of live updates, more than %d", requests, window, limit)
	}
	t.Logf("live job page: %d requests in %s (%.2f/s)", requests, window.Round(time.Millisecond), float64(requests)/window.Seconds())

	// The jobs list updates statuses live too.
	gate2 := filepath.Join(gates, "two")
	listed := b.startJob(alice.key, `{"spider_id": "`+gated.ID+`", "arguments": {"gate": "`+gate2+`"}}`)
	tb.run("open the jobs list", chromedp.Navigate(b.url+"/jobs"), chromedp.WaitVisible(chromedp.CSS(`#jobs`)))
	tb.eval(`String(window.stillThisPage = true)`)
	row := `document.querySelector('tr[data-job="` + listed + `"] [data-field="status"]').textContent.trim()`
	tb.waitFor("the listed job to run", row+` === 'running'`)
	tb.shot("console-jobs")
	if err := os.WriteFile(gate2, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tb.waitFor("the listed job to finish", row+` === 'finished'`)
	if tb.eval(`String(window.stillThisPage)`) != "true" {
		t.Error("the jobs list reloaded")
	}

	// Cancel a running job, with confirmation: No first, then Yes.
	sleepy := b.startJob(alice.key, `{"spider_name": "sleepy"}`)
	tb.run("open the sleeping job", chromedp.Navigate(b.url+"/jobs/"+sleepy), chromedp.WaitVisible(chromedp.CSS(`#cancel`)))
	tb.waitFor("it to run", `document.querySelector('#summary-body [data-status]').dataset.status === 'running'`)
	tb.answerDialogs(false)
	tb.run("cancel, then think better of it", chromedp.Click(chromedp.CSS(`#cancel button`)))
	tb.waitFor("the dialog to be answered", `true`)
	if j := b.job(sleepy); j.CancelRequestedAt != nil {
		t.Fatal("dismissing the confirmation cancelled the job")
	}
	tb.answerDialogs(true)
	tb.load("cancel", chromedp.Click(chromedp.CSS(`#cancel button`)))
	tb.run("cancel", chromedp.WaitVisible(chromedp.CSS(`.notice`)))
	if n := tb.eval(`document.querySelector('.notice').textContent`); n != "Job cancelled." {
		t.Errorf("after cancel: %q", n)
	}
	tb.waitFor("the job to end cancelled", `document.querySelector('#summary-body [data-status]').dataset.status === 'cancelled'`)
	if j := b.job(sleepy); j.Status != "cancelled" {
		t.Errorf("cancelled job is %s", j.Status)
	}

	// Schedules: a refused spec, then create, disable, enable, delete.
	tb.run("open schedules", chromedp.Navigate(b.url+"/schedules"), chromedp.WaitVisible(chromedp.CSS(`#cron`)))
	tb.load("a bad cron spec", chromedp.SetValue(chromedp.CSS(`#cron`), "every tuesday"), chromedp.Submit(chromedp.CSS(`#cron`)))
	tb.run("a bad cron spec", chromedp.WaitVisible(chromedp.CSS(`#cron-problem`)))
	tb.load("a schedule", chromedp.SetValue(chromedp.CSS(`#cron`), "30 6 * * 1-5"), chromedp.SetValue(chromedp.CSS(`#timezone`), "Europe/Paris"),
		chromedp.Submit(chromedp.CSS(`#cron`)))
	tb.run("a schedule", chromedp.WaitVisible(chromedp.CSS(`#schedules`)))
	if n := tb.eval(`document.querySelector('.notice').textContent`); n != "Schedule created." {
		t.Errorf("after create: %q", n)
	}
	tb.load("disable it", chromedp.Click(chromedp.CSS(`#schedules form[action$="/enabled"] button`)))
	tb.run("disable it", chromedp.WaitVisible(chromedp.CSS(`.status-off`)))
	tb.shot("console-schedules")
	tb.load("enable it", chromedp.Click(chromedp.CSS(`#schedules form[action$="/enabled"] button`)))
	tb.run("enable it", chromedp.WaitVisible(chromedp.CSS(`.status-on`)))
	tb.answerDialogs(true)
	tb.load("delete it", chromedp.Click(chromedp.CSS(`#schedules form[action$="/delete"] button`)))
	tb.run("delete it", chromedp.WaitVisible(chromedp.CSS(`.notice`)))
	if got := tb.eval(`document.querySelector('.notice').textContent + ' ' + (document.getElementById('schedules') === null)`); got != "Schedule deleted. true" {
		t.Errorf("after delete: %q", got)
	}

	// Another user's job and project are not there.
	for _, p := range []string{"/jobs/" + bobJob, "/projects/bobs"} {
		tb.run("open "+p, chromedp.Navigate(b.url+p), chromedp.WaitVisible(chromedp.CSS(`h1`)))
		if h := tb.eval(`document.querySelector('h1').textContent`); h != "Not Found" {
			t.Errorf("%s shows %q", p, h)
		}
	}

	// Every page, at 1280 px and on a phone.
	pages := []string{"/jobs", "/jobs/" + jobID, "/jobs/" + sleepy, "/new-job", "/spiders", "/projects", "/projects/shop", "/schedules"}
	for _, size := range []struct {
		name   string
		w, h   int64
		mobile bool
	}{{"1280 px", 1280, 900, false}, {"390 px", 390, 844, true}} {
		var opts []chromedp.EmulateViewportOption
		if size.mobile {
			opts = append(opts, chromedp.EmulateMobile)
		}
		tb.run("resize to "+size.name, chromedp.EmulateViewport(size.w, size.h, opts...))
		for _, p := range pages {
			tb.run("open "+p, chromedp.Navigate(b.url+p), chromedp.WaitVisible(chromedp.CSS(`main h1`)))
			tb.fits(size.name)
			if h := tb.eval(`document.querySelector('main h1').textContent`); h == "Not Found" {
				t.Errorf("%s is not found", p)
			}
		}
		if size.mobile {
			tb.run("open the job on a phone", chromedp.Navigate(b.url+"/jobs/"+jobID), chromedp.WaitVisible(chromedp.CSS(`main h1`)))
			tb.shot("console-job-phone")
			tb.run("open projects on a phone", chromedp.Navigate(b.url+"/projects/shop"), chromedp.WaitVisible(chromedp.CSS(`main h1`)))
			tb.shot("console-project-phone")
		}
	}
	tb.run("back to 1280", chromedp.EmulateViewport(1280, 900))
	tb.run("open the project", chromedp.Navigate(b.url+"/projects/shop"), chromedp.WaitVisible(chromedp.CSS(`#versions`)))
	if got := tb.eval(`[...document.querySelectorAll('#versions .status')].map(s => s.textContent).join(',')`); got != "failed,ready" {
		t.Errorf("versions' build status: %s", got)
	}

	// Keyboard: the first Tab reaches the skip link, which moves focus to
	// the page's content.
	tb.run("tab to the skip link", chromedp.Navigate(b.url+"/jobs"), chromedp.WaitVisible(chromedp.CSS(`#jobs`)), chromedp.KeyEvent("\t"))
	if got := tb.eval(`document.activeElement.className`); got != "skip" {
		t.Errorf("first Tab focuses %q", got)
	}
	tb.run("follow it", chromedp.KeyEvent("\r"))
	tb.waitFor("focus in main", `document.activeElement.id === 'main'`)

	// Sign out.
	tb.load("sign out", chromedp.Click(chromedp.CSS(`.signout button`)))
	tb.run("sign out", chromedp.WaitVisible(chromedp.CSS(`#key`)))
	tb.run("open jobs signed out", chromedp.Navigate(b.url+"/jobs"), chromedp.WaitVisible(chromedp.CSS(`#key`)))

	if p := tb.problemList(); len(p) > 0 {
		t.Errorf("the browser noticed:\n%s", strings.Join(p, "\n"))
	}
}

// deployBundle uploads a bundle project with a ready version, then a
// second one whose spider name clashes with a spider of the user's, and
// waits for the worker's verdicts.
func (b *bundle) deployBundle(u user, name string) {
	b.t.Helper()
	for i, manifest := range []string{`{"spiders": {"shop_items": "run.sh"}}`, `{"spiders": {"quotes": "run.sh"}}`} {
		dir := b.t.TempDir()
		os.WriteFile(filepath.Join(dir, "scrapethis.json"), []byte(manifest), 0o644)
		os.WriteFile(filepath.Join(dir, "run.sh"), []byte("#!/bin/sh\necho '{\"sku\": 1}'\n"), 0o755)
		data, err := archive.Pack(context.Background(), dir)
		if err != nil {
			b.t.Fatal(err)
		}
		req, _ := http.NewRequest("POST", b.url+"/api/v1/projects/"+name+"/versions", strings.NewReader(string(data)))
		req.Header.Set("Authorization", "Bearer "+u.key)
		req.Header.Set("Content-Type", "application/gzip")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			b.t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 201 {
			b.t.Fatalf("upload %d: %d", i, res.StatusCode)
		}
		want := []string{"ready", "failed"}[i]
		deadline := time.Now().Add(time.Minute)
		for {
			_, body := b.apiDo(u.key, "GET", fmt.Sprintf("/api/v1/projects/%s/versions/v%d", name, i+1), "")
			var v struct{ Status string }
			json.Unmarshal(body, &v)
			if v.Status == want {
				break
			}
			if v.Status != "building" || time.Now().After(deadline) {
				b.t.Fatalf("version %d is %s, want %s: %s", i+1, v.Status, want, body)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// checkDownloads reads the job page's download links with the browser's
// session cookie.
func (b *bundle) checkDownloads(session, jobID string, items int) {
	b.t.Helper()
	get := func(file string) (int, string, string) {
		req, _ := http.NewRequest("GET", b.url+"/jobs/"+jobID+"/download/"+file, nil)
		req.AddCookie(&http.Cookie{Name: console.SessionCookie, Value: session})
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			b.t.Fatal(err)
		}
		defer res.Body.Close()
		var sb strings.Builder
		buf := make([]byte, 32<<10)
		for {
			n, err := res.Body.Read(buf)
			sb.Write(buf[:n])
			if err != nil {
				break
			}
		}
		return res.StatusCode, res.Header.Get("Content-Disposition"), sb.String()
	}
	st, disp, body := get("items.json")
	var arr []map[string]any
	if st != 200 || !strings.HasPrefix(disp, "attachment;") || json.Unmarshal([]byte(body), &arr) != nil || len(arr) != items {
		b.t.Errorf("items.json: %d %q, %d items of %d", st, disp, len(arr), items)
	}
	if st, _, body := get("items.jsonl"); st != 200 || strings.Count(body, "\n") != items {
		b.t.Errorf("items.jsonl: %d, %d lines", st, strings.Count(body, "\n"))
	}
	if st, _, body := get("items.csv"); st != 200 || !strings.Contains(strings.SplitN(body, "\n", 2)[0], "author") || strings.Count(body, "\n") < items+1 {
		b.t.Errorf("items.csv: %d %.200s", st, body)
	}
	if st, _, body := get("log.txt"); st != 200 || !strings.Contains(body, "Spider closed") {
		b.t.Errorf("log.txt: %d %.200s", st, body)
	}
	if st, _, _ := get("other.txt"); st != 404 {
		b.t.Errorf("other.txt: %d", st)
	}
}
