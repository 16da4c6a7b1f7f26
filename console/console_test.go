package console_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/scrapethis/scrapethis/api"
	"github.com/scrapethis/scrapethis/console"
)

func TestSignInSessionAndSignOut(t *testing.T) {
	t.Parallel()
	b := setup(t, options{})
	alice := b.user("alice@example.com")
	c := b.client()

	// Every page sends a stranger to sign in, and back after.
	if a := c.get("/jobs?status=error"); a.url != "/signin" || !strings.Contains(a.body, `name="next" value="/jobs?status=error"`) {
		t.Fatalf("signed out /jobs landed on %s", a.url)
	}
	if a := c.signIn("st_not-a-key"); a.status != http.StatusUnauthorized || !strings.Contains(a.body, "That API key is not valid") {
		t.Fatalf("wrong key: %d %s", a.status, a.body)
	}
	a := c.signIn(alice.key)
	if a.status != 200 || a.url != "/jobs" || !strings.Contains(a.body, alice.email) {
		t.Fatalf("sign-in landed on %d %s", a.status, a.url)
	}
	u, _ := url.Parse(b.url)
	var session *http.Cookie
	for _, ck := range c.http.Jar.Cookies(u) {
		if ck.Name == console.SessionCookie {
			session = ck
		}
		if strings.Contains(ck.Value, alice.key) {
			t.Errorf("cookie %s holds the API key", ck.Name)
		}
	}
	if session == nil {
		t.Fatal("no session cookie")
	}
	// The jar does not keep attributes: read them off a fresh sign-in.
	raw := b.client()
	form := raw.get("/signin")
	raw.http.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	res := raw.post("/signin", url.Values{"csrf": {raw.csrf(form)}, "key": {alice.key}})
	set := strings.Join(res.header.Values("Set-Cookie"), "\n")
	if res.status != http.StatusSeeOther || !strings.Contains(set, console.SessionCookie+"=") ||
		!strings.Contains(set, "HttpOnly") || !strings.Contains(set, "SameSite=Lax") || strings.Contains(set, alice.key) {
		t.Fatalf("sign-in answer %d, cookies:\n%s", res.status, set)
	}
	var rows int
	b.sql.QueryRow(`SELECT count(*) FROM console_sessions WHERE user_id = $1`, alice.id).Scan(&rows)
	if rows != 2 {
		t.Fatalf("%d session rows, want 2", rows)
	}

	// Sign-out ends the session on the server, not just in the browser.
	jobs := c.get("/jobs")
	if a := c.post("/signout", url.Values{"csrf": {c.csrf(jobs)}}); a.url != "/signin" {
		t.Fatalf("sign-out landed on %s", a.url)
	}
	b.sql.QueryRow(`SELECT count(*) FROM console_sessions WHERE user_id = $1`, alice.id).Scan(&rows)
	if rows != 1 {
		t.Fatalf("%d session rows after sign-out, want 1", rows)
	}
	replay := b.client()
	replay.http.Jar.SetCookies(u, []*http.Cookie{{Name: console.SessionCookie, Value: session.Value}})
	if a := replay.get("/jobs"); a.url != "/signin" {
		t.Fatalf("the signed-out cookie still opens %s", a.url)
	}
}

func TestRevokedKeyEndsItsSessions(t *testing.T) {
	t.Parallel()
	b := setup(t, options{})
	alice := b.user("alice@example.com")
	c := b.client()
	if a := c.signIn(alice.key); a.url != "/jobs" {
		t.Fatalf("sign-in landed on %s", a.url)
	}
	if _, err := b.db.RevokeAPIKey(context.Background(), alice.key); err != nil {
		t.Fatal(err)
	}
	if a := c.get("/spiders"); a.url != "/signin" {
		t.Fatalf("a session of a revoked key still opens %s", a.url)
	}
	if a := c.signIn(alice.key); a.status != http.StatusUnauthorized {
		t.Fatalf("sign-in with a revoked key: %d", a.status)
	}
}

func TestFormsNeedTheirCSRFToken(t *testing.T) {
	t.Parallel()
	b := setup(t, options{})
	alice := b.user("alice@example.com")
	sp := b.spider(alice, "s", "s.sh", "#!/bin/sh\n")
	c := b.client()
	c.signIn(alice.key)
	for _, form := range []url.Values{
		{"spider": {sp.ID}},
		{"spider": {sp.ID}, "csrf": {"forged"}},
	} {
		if a := c.post("/new-job", form); a.status != http.StatusBadRequest || !strings.Contains(a.body, "did not come from this site") {
			t.Fatalf("start without a good token: %d %s", a.status, a.body)
		}
	}
	// A browser's cross-site POST is refused before any form is read,
	// even with the right token.
	token := c.csrf(c.get("/new-job"))
	req, _ := http.NewRequest("POST", b.url+"/new-job", strings.NewReader(url.Values{"spider": {sp.ID}, "csrf": {token}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	req.Header.Set("Origin", "https://attacker.example")
	if a := c.do(req); a.status != http.StatusForbidden {
		t.Fatalf("cross-site POST: %d", a.status)
	}
	// The sign-in form has its own token: a forged sign-in (login CSRF)
	// opens nothing.
	other := b.client()
	if a := other.post("/signin", url.Values{"key": {alice.key}, "csrf": {"x"}}); a.status != http.StatusBadRequest {
		t.Fatalf("sign-in without its cookie: %d", a.status)
	}
	var n int
	b.sql.QueryRow(`SELECT count(*) FROM jobs`).Scan(&n)
	if n != 0 {
		t.Fatalf("%d jobs after refused forms", n)
	}
	// With the token, the same form starts the job.
	if a := c.post("/new-job", url.Values{"spider": {sp.ID}, "csrf": {token}, "arguments": {"{}"}}); a.status != 200 || !strings.HasPrefix(a.url, "/jobs/") {
		t.Fatalf("start with the token: %d %s", a.status, a.url)
	}
}

// Failed sign-ins count toward the API's auth throttle, and failures on
// the API toward sign-ins: past the limit the address is refused at
// sign-in and on the API alike, a good key included.
func TestFailedSignInsAreThrottled(t *testing.T) {
	t.Parallel()
	b := setup(t, options{})
	alice := b.user("alice@example.com")
	for range 10 {
		if st, _ := b.apiDo("st_guess", "GET", "/api/v1/jobs", ""); st != http.StatusUnauthorized {
			t.Fatalf("bad key on the API: %d", st)
		}
	}
	c := b.client()
	var a answer
	for i := 0; ; i++ {
		if i > 10*api.AuthBurst {
			t.Fatalf("no 429 after %d failed sign-ins", i)
		}
		if a = c.signIn("st_guess"); a.status != http.StatusUnauthorized {
			break
		}
	}
	if a.status != http.StatusTooManyRequests || a.header.Get("Retry-After") == "" || !strings.Contains(a.body, "Too many failed sign-ins") {
		t.Fatalf("past the limit: %d, Retry-After %q", a.status, a.header.Get("Retry-After"))
	}
	if a := c.signIn(alice.key); a.status != http.StatusTooManyRequests {
		t.Fatalf("a good key from the throttled address: %d", a.status)
	}
	if st, _ := b.apiDo(alice.key, "GET", "/api/v1/jobs", ""); st != http.StatusTooManyRequests {
		t.Fatalf("the API from the same address: %d", st)
	}
}

// Another user's objects are 404 on every page, fragment and download,
// as missing ones are, and actions on them change nothing.
func TestTenancy(t *testing.T) {
	t.Parallel()
	b := setup(t, options{})
	alice, bob := b.user("alice@example.com"), b.user("bob@example.com")
	b.spider(alice, "mine", "mine.sh", "#!/bin/sh\n")
	theirs := b.spider(bob, "theirs", "theirs.sh", "#!/bin/sh\n")
	bobJob := b.startJob(bob.key, `{"spider_name": "theirs"}`)
	st, body := b.apiDo(bob.key, "POST", "/api/v1/schedules", `{"spider_name": "theirs", "cron": "@daily"}`)
	if st != 201 {
		t.Fatalf("bob's schedule: %d %s", st, body)
	}
	var sched struct{ ID string }
	if err := jsonUnmarshal(body, &sched); err != nil {
		t.Fatal(err)
	}
	if _, err := b.sql.Exec(`INSERT INTO projects (id, user_id, name) VALUES (gen_random_uuid(), $1, 'bobs')`, bob.id); err != nil {
		t.Fatal(err)
	}

	c := b.client()
	c.signIn(alice.key)
	for _, path := range []string{
		"/jobs/" + bobJob, "/jobs/" + bobJob + "/summary", "/jobs/" + bobJob + "/items",
		"/jobs/" + bobJob + "/download/items.json", "/jobs/" + bobJob + "/download/log.txt", "/jobs/" + bobJob + "/log?follow=1",
		"/projects/bobs", "/jobs/00000000-0000-0000-0000-000000000000", "/jobs/NOT-AN-ID", "/projects/nope", "/no-such-page",
	} {
		a := c.get(path)
		if a.status != http.StatusNotFound || !strings.Contains(a.body, "There is nothing here") {
			t.Errorf("GET %s: %d", path, a.status)
		}
	}
	if a := c.get("/live/jobs?id=" + bobJob); a.status != 200 || strings.TrimSpace(a.body) != "{}" {
		t.Errorf("live status of bob's job: %d %s", a.status, a.body)
	}
	for _, page := range []string{"/jobs", "/jobs?spider=" + theirs.ID, "/spiders", "/schedules", "/new-job", "/projects"} {
		a := c.get(page)
		if a.status != 200 || strings.Contains(a.body, "theirs") || strings.Contains(a.body, bobJob[len(bobJob)-8:]) || strings.Contains(a.body, "bobs") {
			t.Errorf("%s shows bob's objects (%d)", page, a.status)
		}
	}
	token := c.csrf(c.get("/schedules"))
	for _, path := range []string{"/jobs/" + bobJob + "/cancel", "/schedules/" + sched.ID + "/enabled", "/schedules/" + sched.ID + "/delete"} {
		if a := c.post(path, url.Values{"csrf": {token}, "enabled": {"false"}}); a.status != http.StatusNotFound {
			t.Errorf("POST %s: %d", path, a.status)
		}
	}
	if j := b.job(bobJob); j.CancelRequestedAt != nil || j.Status.Final() {
		t.Errorf("bob's job after alice's cancel: %s", j.Status)
	}
	var enabled bool
	b.sql.QueryRow(`SELECT enabled FROM schedules WHERE id = $1`, sched.ID).Scan(&enabled)
	if !enabled {
		t.Error("alice disabled bob's schedule")
	}
}

func TestJobsPagesFiltersAndKeyset(t *testing.T) {
	t.Parallel()
	b := setup(t, options{})
	alice := b.user("alice@example.com")
	one := b.spider(alice, "one", "one.sh", "#!/bin/sh\n")
	two := b.spider(alice, "two", "two.sh", "#!/bin/sh\n")
	ctx := context.Background()
	// 120 jobs of one (a minute apart, newest last) and 5 of two.
	for i := range 125 {
		sp := one.ID
		if i >= 120 {
			sp = two.ID
		}
		if _, err := b.sql.ExecContext(ctx, `INSERT INTO jobs (id, user_id, spider_id, status, created_at, finished_at)
			VALUES (gen_random_uuid(), $1, $2, 'finished', now() - make_interval(mins => $3), now())`, alice.id, sp, 200-i); err != nil {
			t.Fatal(err)
		}
	}
	c := b.client()
	c.signIn(alice.key)
	var seen []string
	path := "/jobs?spider=" + one.ID
	for pages := 0; path != ""; pages++ {
		if pages > 5 {
			t.Fatal("paging does not end")
		}
		a := c.get(path)
		ids := jobRow.FindAllStringSubmatch(a.body, -1)
		for _, m := range ids {
			seen = append(seen, m[1])
		}
		path = ""
		if m := olderLink.FindStringSubmatch(a.body); m != nil {
			path = strings.ReplaceAll(m[1], "&amp;", "&")
		}
	}
	if len(seen) != 120 {
		t.Fatalf("paged through %d jobs of spider one, want 120", len(seen))
	}
	var want []string
	if err := b.sql.SelectContext(ctx, &want, `SELECT id FROM jobs WHERE spider_id = $1 ORDER BY created_at DESC, id DESC`, one.ID); err != nil {
		t.Fatal(err)
	}
	if strings.Join(seen, ",") != strings.Join(want, ",") {
		t.Fatal("pages are not the jobs newest first, each once")
	}
	if a := c.get("/jobs?status=running"); !strings.Contains(a.body, "No jobs match these filters") {
		t.Error("status filter shows jobs")
	}
	if a := c.get("/jobs?status=bogus&before=zzz"); a.status != 200 || !strings.Contains(a.body, "Unknown status") || !strings.Contains(a.body, "not valid") {
		t.Errorf("bad filters: %d", a.status)
	}
}
