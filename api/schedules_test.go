package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/scrapethis/scrapethis"
	"github.com/scrapethis/scrapethis/cronspec"
)

// scheduleBody is a schedule as a client reads it; pointers tell null
// from absent only together with scheduleFields.
type scheduleBody struct {
	ID             string          `json:"id"`
	Name           *string         `json:"name"`
	SpiderID       string          `json:"spider_id"`
	UserID         string          `json:"user_id"`
	Cron           string          `json:"cron"`
	Timezone       string          `json:"timezone"`
	Arguments      json.RawMessage `json:"arguments"`
	Enabled        bool            `json:"enabled"`
	TimeoutSeconds *int            `json:"timeout_seconds"`
	NoOverlap      bool            `json:"no_overlap"`
	NextRunAt      *string         `json:"next_run_at"`
	LastRunAt      *string         `json:"last_run_at"`
	CreatedAt      string          `json:"created_at"`
	UpdatedAt      string          `json:"updated_at"`
	Spider         struct {
		ID       string `json:"id"`
		Name     string `json:"name"`
		RepoPath string `json:"repo_path"`
	} `json:"spider"`
}

// scheduleFields are the fields every schedule carries, null or not.
var scheduleFields = []string{"id", "name", "spider_id", "user_id", "cron", "timezone", "arguments", "enabled",
	"timeout_seconds", "no_overlap", "next_run_at", "last_run_at", "created_at", "updated_at", "spider"}

// checkScheduleShape fails unless raw is one schedule object with every
// documented field present and its timestamps in RFC 3339 UTC.
func checkScheduleShape(t *testing.T, raw []byte) scheduleBody {
	t.Helper()
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		t.Fatalf("schedule %s: %v", raw, err)
	}
	for _, f := range scheduleFields {
		if _, ok := fields[f]; !ok {
			t.Errorf("schedule %s has no %q", raw, f)
		}
	}
	var sc scheduleBody
	if err := json.Unmarshal(raw, &sc); err != nil {
		t.Fatal(err)
	}
	for _, ts := range []*string{&sc.CreatedAt, &sc.UpdatedAt, sc.NextRunAt, sc.LastRunAt} {
		if ts != nil && !rfc3339.MatchString(*ts) {
			t.Errorf("timestamp %q in %s is not RFC 3339 UTC", *ts, raw)
		}
	}
	return sc
}

func parseAPITime(t *testing.T, s *string) time.Time {
	t.Helper()
	if s == nil {
		t.Fatal("null timestamp")
	}
	v, err := time.Parse(time.RFC3339, *s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestSchedulesCRUD(t *testing.T) {
	t.Parallel()
	b := setup(t)
	uid, key := b.user("a@example.com")
	spiderID := b.spider(key, "my-spider", "spiders/my_spider.py")

	// Defaults: UTC, enabled, {} arguments, no timeout, no overlap check.
	before := time.Now().Truncate(time.Second)
	r := b.mustStatus(b.do("POST", "/api/v1/schedules", key, `{"spider_name":"my-spider","cron":"*/5 * * * *"}`), http.StatusCreated)
	sc := checkScheduleShape(t, r.body)
	if sc.SpiderID != spiderID || sc.UserID != uid || sc.Cron != "*/5 * * * *" || sc.Timezone != "UTC" || !sc.Enabled ||
		string(sc.Arguments) != "{}" || sc.TimeoutSeconds != nil || sc.NoOverlap || sc.LastRunAt != nil || sc.Name != nil {
		t.Fatalf("created %s", r.body)
	}
	if sc.Spider.ID != spiderID || sc.Spider.Name != "my-spider" || sc.Spider.RepoPath != "spiders/my_spider.py" {
		t.Fatalf("spider of the schedule: %s", r.body)
	}
	next := parseAPITime(t, sc.NextRunAt)
	if next.Before(before) || next.After(before.Add(5*time.Minute)) || next.Minute()%5 != 0 || next.Second() != 0 {
		t.Fatalf("next_run_at %s for */5 created at %s", next, before)
	}

	// Everything given, by spider_id.
	r = b.mustStatus(b.do("POST", "/api/v1/schedules", key, `{"spider_id":"`+spiderID+`","cron":"@every 90s","timezone":"Europe/Paris",
		"arguments":{"page":2,"q":"x"},"enabled":false,"timeout_seconds":600,"no_overlap":true}`), http.StatusCreated)
	full := checkScheduleShape(t, r.body)
	if full.Timezone != "Europe/Paris" || full.Enabled || full.NextRunAt != nil || *full.TimeoutSeconds != 600 || !full.NoOverlap {
		t.Fatalf("created %s", r.body)
	}
	var args map[string]any
	if json.Unmarshal(full.Arguments, &args); args["page"] != float64(2) || args["q"] != "x" {
		t.Fatalf("arguments %s", full.Arguments)
	}

	// Get one, and the list, newest first, with the same fields.
	r = b.mustStatus(b.do("GET", "/api/v1/schedules/"+sc.ID, key, ""), http.StatusOK)
	if got := checkScheduleShape(t, r.body); got.ID != sc.ID || got.Cron != sc.Cron || *got.NextRunAt != *sc.NextRunAt {
		t.Fatalf("get %s", r.body)
	}
	r = b.mustStatus(b.do("GET", "/api/v1/schedules", key, ""), http.StatusOK)
	var list []json.RawMessage
	r.json(t, &list)
	if len(list) != 2 {
		t.Fatalf("list %s", r.body)
	}
	if checkScheduleShape(t, list[0]).ID != full.ID || checkScheduleShape(t, list[1]).ID != sc.ID {
		t.Fatalf("list is not newest first: %s", r.body)
	}

	// Patch every editable field.
	r = b.mustStatus(b.do("PATCH", "/api/v1/schedules/"+sc.ID, key, `{"cron":"@hourly","timezone":"Asia/Kolkata",
		"arguments":{"a":1},"enabled":true,"timeout_seconds":30,"no_overlap":true}`), http.StatusOK)
	patched := checkScheduleShape(t, r.body)
	if patched.Cron != "@hourly" || patched.Timezone != "Asia/Kolkata" || *patched.TimeoutSeconds != 30 || !patched.NoOverlap ||
		!strings.Contains(string(patched.Arguments), `"a"`) || patched.Spider.RepoPath != "spiders/my_spider.py" {
		t.Fatalf("patched %s", r.body)
	}
	// @hourly in a +05:30 zone fires at :30 UTC.
	if n := parseAPITime(t, patched.NextRunAt); n.Minute() != 30 || n.Second() != 0 {
		t.Fatalf("next_run_at %s for @hourly in Asia/Kolkata", n)
	}
	// null clears the timeout; an empty patch changes nothing.
	r = b.mustStatus(b.do("PATCH", "/api/v1/schedules/"+sc.ID, key, `{"timeout_seconds":null}`), http.StatusOK)
	if checkScheduleShape(t, r.body).TimeoutSeconds != nil {
		t.Fatalf("timeout not cleared: %s", r.body)
	}
	r = b.mustStatus(b.do("PATCH", "/api/v1/schedules/"+sc.ID, key, `{}`), http.StatusOK)
	if got := checkScheduleShape(t, r.body); got.Cron != "@hourly" || *got.NextRunAt != *patched.NextRunAt {
		t.Fatalf("empty patch: %s", r.body)
	}

	// Delete: gone, twice over.
	b.mustStatus(b.do("DELETE", "/api/v1/schedules/"+sc.ID, key, ""), http.StatusOK)
	b.mustStatus(b.do("GET", "/api/v1/schedules/"+sc.ID, key, ""), http.StatusNotFound)
	b.mustStatus(b.do("DELETE", "/api/v1/schedules/"+sc.ID, key, ""), http.StatusNotFound)
	b.mustStatus(b.do("PATCH", "/api/v1/schedules/"+sc.ID, key, `{"enabled":false}`), http.StatusNotFound)
	r = b.mustStatus(b.do("GET", "/api/v1/schedules", key, ""), http.StatusOK)
	r.json(t, &list)
	if len(list) != 1 {
		t.Fatalf("list after delete: %s", r.body)
	}
}

func TestScheduleValidation(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, key := b.user("a@example.com")
	_, other := b.user("b@example.com")
	id := b.spider(key, "s", "s.py")
	otherID := b.spider(other, "theirs", "t.py")
	ok := `"spider_id":"` + id + `"`
	cases := []struct {
		body   string
		status int
		msg    string // a part of the error message
	}{
		{`{}`, 400, "Missing spider_id or spider_name"},
		{``, 400, "Missing spider_id or spider_name"},
		{`{"cron":"@daily"}`, 400, "Missing spider_id or spider_name"},
		{`{` + ok + `}`, 400, "Missing cron"},
		{`{` + ok + `,"cron":""}`, 400, "Missing cron"},
		{`{` + ok + `,"cron":null}`, 400, "Missing cron"},
		{`{` + ok + `,"cron":5}`, 400, "cron must be a string"},
		{`{` + ok + `,"cron":"every day"}`, 400, `"every day"`},
		{`{` + ok + `,"cron":"* * * *"}`, 400, `"* * * *"`},
		{`{` + ok + `,"cron":"0 0 * * * *"}`, 400, `"0 0 * * * *"`},
		{`{` + ok + `,"cron":"60 * * * *"}`, 400, `"60 * * * *"`},
		{`{` + ok + `,"cron":"@every 500ms"}`, 400, "at least 1s"},
		{`{` + ok + `,"cron":"@every 0s"}`, 400, "@every 0s"},
		{`{` + ok + `,"cron":"@fortnightly"}`, 400, "@fortnightly"},
		{`{` + ok + `,"cron":"TZ=UTC"}`, 400, "TZ=UTC"},
		{`{` + ok + `,"cron":"0 0 31 2 *"}`, 400, "never fires"},
		{`{` + ok + `,"cron":"@daily","timezone":"Mars/Olympus"}`, 400, `"Mars/Olympus"`},
		{`{` + ok + `,"cron":"@daily","timezone":"Local"}`, 400, `"Local"`},
		{`{` + ok + `,"cron":"@daily","timezone":""}`, 400, "Invalid timezone"},
		{`{` + ok + `,"cron":"@daily","timezone":"../../../etc/passwd"}`, 400, "Invalid timezone"},
		{`{` + ok + `,"cron":"@daily","timezone":3}`, 400, "timezone must be a string"},
		{`{` + ok + `,"cron":"@daily","arguments":[1]}`, 400, "arguments must be a JSON object"},
		{`{` + ok + `,"cron":"@daily","arguments":{"bad key":1}}`, 400, "bad key"},
		{`{` + ok + `,"cron":"@daily","timeout_seconds":0}`, 400, "timeout_seconds"},
		{`{` + ok + `,"cron":"@daily","timeout_seconds":"10"}`, 400, "timeout_seconds"},
		{`{` + ok + `,"cron":"@daily","enabled":"yes"}`, 400, "enabled must be true or false"},
		{`{` + ok + `,"cron":"@daily","no_overlap":1}`, 400, "no_overlap must be true or false"},
		{`{` + ok + `,"cron":"@daily"} trailing`, 400, "Invalid JSON body"},
		{`[1]`, 400, "Invalid JSON body"},
		{`{"spider_id":`, 400, "Invalid JSON body"},
		{`{"spider_id":"00000000-0000-0000-0000-000000000000","cron":"@daily"}`, 404, "Spider not found"},
		{`{"spider_id":"not-a-uuid","cron":"@daily"}`, 404, "Spider not found"},
		{`{"spider_name":"nope","cron":"@daily"}`, 404, "Spider not found"},
		{`{"spider_id":"` + otherID + `","cron":"@daily"}`, 404, "Spider not found"},
		{`{"spider_name":"theirs","cron":"@daily"}`, 404, "Spider not found"},
	}
	for _, c := range cases {
		r := b.do("POST", "/api/v1/schedules", key, c.body)
		if r.status != c.status {
			t.Errorf("POST %s: status %d, want %d (%s)", c.body, r.status, c.status, r.body)
			continue
		}
		if msg := r.errorMessage(t); !strings.Contains(msg, c.msg) {
			t.Errorf("POST %s: message %q, want it to contain %q", c.body, msg, c.msg)
		}
	}

	r := b.mustStatus(b.do("POST", "/api/v1/schedules", key, `{`+ok+`,"cron":"@daily"}`), http.StatusCreated)
	sc := checkScheduleShape(t, r.body)
	patches := []struct{ body, msg string }{
		{`{"cron":"nope"}`, `"nope"`},
		{`{"cron":""}`, "Missing cron"},
		{`{"cron":null}`, "cron must be a string"},
		{`{"cron":"@every 999ms"}`, "at least 1s"},
		{`{"timezone":"Europe/Nowhere"}`, `"Europe/Nowhere"`},
		{`{"timezone":"Local"}`, `"Local"`},
		{`{"enabled":null}`, "enabled must be true or false"},
		{`{"enabled":"false"}`, "enabled must be true or false"},
		{`{"no_overlap":null}`, "no_overlap must be true or false"},
		{`{"arguments":"x"}`, "arguments must be a JSON object"},
		{`{"timeout_seconds":-1}`, "timeout_seconds"},
		{`not json`, "Invalid JSON body"},
	}
	for _, p := range patches {
		r := b.do("PATCH", "/api/v1/schedules/"+sc.ID, key, p.body)
		if r.status != 400 {
			t.Errorf("PATCH %s: status %d, want 400 (%s)", p.body, r.status, r.body)
			continue
		}
		if msg := r.errorMessage(t); !strings.Contains(msg, p.msg) {
			t.Errorf("PATCH %s: message %q, want it to contain %q", p.body, msg, p.msg)
		}
	}
	// Nothing of the bad patches stuck.
	r = b.mustStatus(b.do("GET", "/api/v1/schedules/"+sc.ID, key, ""), http.StatusOK)
	if got := checkScheduleShape(t, r.body); got.Cron != "@daily" || got.Timezone != "UTC" || !got.Enabled || *got.NextRunAt != *sc.NextRunAt {
		t.Fatalf("after bad patches: %s", r.body)
	}

	// Bodies over 1 MiB are 413, on POST and PATCH.
	big := `{` + ok + `,"cron":"@daily","arguments":{"x":"` + strings.Repeat("a", 1<<20) + `"}}`
	if msg := b.mustStatus(b.do("POST", "/api/v1/schedules", key, big), http.StatusRequestEntityTooLarge).errorMessage(t); !strings.Contains(msg, "too large") {
		t.Errorf("413 message %q", msg)
	}
	b.mustStatus(b.do("PATCH", "/api/v1/schedules/"+sc.ID, key, big), http.StatusRequestEntityTooLarge).errorMessage(t)
}

// TestScheduleTenancy: another user's schedule answers exactly as a
// missing one does, for every method.
func TestScheduleTenancy(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, key := b.user("a@example.com")
	_, other := b.user("b@example.com")
	b.spider(key, "s", "s.py")
	r := b.mustStatus(b.do("POST", "/api/v1/schedules", key, `{"spider_name":"s","cron":"@daily"}`), http.StatusCreated)
	sc := checkScheduleShape(t, r.body)
	missing := "00000000-0000-0000-0000-000000000000"
	for _, id := range []string{sc.ID, missing, "not-a-uuid"} {
		for _, m := range []struct{ method, body string }{{"GET", ""}, {"PATCH", `{"enabled":false}`}, {"DELETE", ""}} {
			r := b.do(m.method, "/api/v1/schedules/"+id, other, m.body)
			if r.status != 404 || strings.TrimSpace(string(r.body)) != `{"error":"Schedule not found"}` {
				t.Errorf("%s %s as another user: %d %s", m.method, id, r.status, r.body)
			}
		}
	}
	var list []json.RawMessage
	b.mustStatus(b.do("GET", "/api/v1/schedules", other, ""), http.StatusOK).json(t, &list)
	if len(list) != 0 {
		t.Fatalf("another user lists %d schedules", len(list))
	}
	// Untouched by the other user's tries.
	r = b.mustStatus(b.do("GET", "/api/v1/schedules/"+sc.ID, key, ""), http.StatusOK)
	if got := checkScheduleShape(t, r.body); !got.Enabled {
		t.Fatalf("another user's PATCH took effect: %s", r.body)
	}
	b.mustStatus(b.do("GET", "/api/v1/schedules", "", ""), http.StatusUnauthorized)
	b.mustStatus(b.do("POST", "/api/v1/schedules", "st_nope", `{"spider_name":"s","cron":"@daily"}`), http.StatusUnauthorized)
}

// TestSchedulePatchRecomputesNextRun: a change of timing recomputes
// next_run_at at once; other edits leave it, so a due fire is not lost.
func TestSchedulePatchRecomputesNextRun(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, key := b.user("a@example.com")
	b.spider(key, "s", "s.py")
	r := b.mustStatus(b.do("POST", "/api/v1/schedules", key, `{"spider_name":"s","cron":"0 9 * * *"}`), http.StatusCreated)
	sc := checkScheduleShape(t, r.body)
	var before, after time.Time // around the last request
	patch := func(body string) scheduleBody {
		t.Helper()
		before = time.Now()
		defer func() { after = time.Now() }()
		return checkScheduleShape(t, b.mustStatus(b.do("PATCH", "/api/v1/schedules/"+sc.ID, key, body), http.StatusOK).body)
	}
	expect := func(got scheduleBody, cron, zone string) {
		t.Helper()
		spec, err := cronspec.Parse(cron, zone)
		if err != nil {
			t.Fatal(err)
		}
		// Computed from the handler's "now", somewhere between before and after.
		lo, hi := spec.Next(before.Add(-time.Second)), spec.Next(after)
		if next := parseAPITime(t, got.NextRunAt); next.Before(lo) || next.After(hi) {
			t.Fatalf("%s in %s: next_run_at %s, want from %s to %s", cron, zone, next, lo, hi)
		}
	}
	before = time.Now().Add(-time.Minute)
	after = time.Now()
	expect(sc, "0 9 * * *", "UTC")
	expect(patch(`{"timezone":"Asia/Tokyo"}`), "0 9 * * *", "Asia/Tokyo")
	expect(patch(`{"cron":"0 0 1 1 *"}`), "0 0 1 1 *", "Asia/Tokyo")
	if got := patch(`{"enabled":false}`); got.NextRunAt != nil || got.Enabled {
		t.Fatalf("disabled: %+v", got)
	}
	expect(patch(`{"enabled":true}`), "0 0 1 1 *", "Asia/Tokyo")

	// Make it due, as it would be a moment before the scheduler's tick:
	// an edit of anything but the timing keeps that fire.
	due := time.Now().Add(-time.Second).UTC().Truncate(time.Second)
	if _, err := b.sql.Exec(`UPDATE schedules SET next_run_at = $2 WHERE id = $1`, sc.ID, due); err != nil {
		t.Fatal(err)
	}
	for _, body := range []string{`{"arguments":{"a":1}}`, `{"no_overlap":true}`, `{"timeout_seconds":5}`, `{"enabled":true}`, `{"cron":"0 0 1 1 *"}`} {
		if got := parseAPITime(t, patch(body).NextRunAt); !got.Equal(due) {
			t.Fatalf("PATCH %s moved next_run_at from %s to %s", body, due, got)
		}
	}
	expect(patch(`{"cron":"@every 10s"}`), "@every 10s", "Asia/Tokyo")
}

// TestScheduleDeleteKeepsJobs: deleting a schedule leaves its jobs, with
// schedule_id null; deleting its spider deletes the schedule.
func TestScheduleDeleteKeepsJobs(t *testing.T) {
	t.Parallel()
	b := setup(t)
	uid, key := b.user("a@example.com")
	spiderID := b.spider(key, "s", "s.py")
	r := b.mustStatus(b.do("POST", "/api/v1/schedules", key, `{"spider_name":"s","cron":"@daily"}`), http.StatusCreated)
	sc := checkScheduleShape(t, r.body)
	at := time.Now().UTC().Truncate(time.Second)
	nj := newJob(uid, spiderID)
	nj.ScheduleID, nj.ScheduledFor = &sc.ID, &at
	job, err := b.db.CreateJob(context.Background(), nj)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		ScheduleID *string `json:"schedule_id"`
		Status     string  `json:"status"`
	}
	b.mustStatus(b.do("GET", "/api/v1/jobs/"+job.ID, key, ""), http.StatusOK).json(t, &got)
	if got.ScheduleID == nil || *got.ScheduleID != sc.ID {
		t.Fatalf("job's schedule_id %v, want %s", got.ScheduleID, sc.ID)
	}
	b.mustStatus(b.do("DELETE", "/api/v1/schedules/"+sc.ID, key, ""), http.StatusOK)
	b.mustStatus(b.do("GET", "/api/v1/jobs/"+job.ID, key, ""), http.StatusOK).json(t, &got)
	if got.ScheduleID != nil || got.Status != string(scrapethis.StatusPending) {
		t.Fatalf("job after its schedule was deleted: %+v", got)
	}

	// A spider's schedules go with it.
	r = b.mustStatus(b.do("POST", "/api/v1/schedules", key, `{"spider_name":"s","cron":"@daily"}`), http.StatusCreated)
	sc = checkScheduleShape(t, r.body)
	b.mustStatus(b.do("DELETE", "/api/v1/jobs/"+job.ID, key, ""), http.StatusOK)
	b.mustStatus(b.do("DELETE", "/api/v1/spiders/"+spiderID, key, ""), http.StatusOK)
	b.mustStatus(b.do("GET", "/api/v1/schedules/"+sc.ID, key, ""), http.StatusNotFound)
}
