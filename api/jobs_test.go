package api_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/scrapethis/scrapethis/tasks"
)

var rfc3339 = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$`)

func TestCreateJobValidation(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, key := b.user("a@example.com")
	_, other := b.user("b@example.com")
	id := b.spider(key, "s", "s.py")
	otherID := b.spider(other, "theirs", "t.py")
	cases := []struct {
		body   string
		status int
		msg    string
	}{
		{`{}`, 400, "Missing spider_id or spider_name"},
		{``, 400, "Missing spider_id or spider_name"},
		{`{"arguments":{}}`, 400, "Missing spider_id or spider_name"},
		{`{"spider_id":""}`, 400, "Missing spider_id or spider_name"},
		{`{"spider_id":null,"spider_name":null}`, 400, "Missing spider_id or spider_name"},
		{`{"spider_id":`, 400, ""},
		{`[1,2]`, 400, ""},
		{`"x"`, 400, ""},
		{`{"spider_id":"` + id + `"} trailing`, 400, ""},
		{`{"spider_id":42}`, 400, ""},
		{`{"spider_id":"` + id + `","arguments":[1]}`, 400, "arguments must be a JSON object"},
		{`{"spider_id":"` + id + `","arguments":"a=b"}`, 400, "arguments must be a JSON object"},
		{`{"spider_id":"` + id + `","arguments":{"bad key":1}}`, 400, ""},
		{`{"spider_id":"` + id + `","arguments":{"1x":1}}`, 400, ""},
		{`{"spider_id":"` + id + `","timeout_seconds":0}`, 400, ""},
		{`{"spider_id":"` + id + `","timeout_seconds":"10"}`, 400, ""},
		{`{"spider_id":"00000000-0000-0000-0000-000000000000"}`, 404, "Spider not found"},
		{`{"spider_id":"not-a-uuid"}`, 404, "Spider not found"},
		{`{"spider_name":"nope"}`, 404, "Spider not found"},
		{`{"spider_id":"` + otherID + `"}`, 404, "Spider not found"},
		{`{"spider_name":"theirs"}`, 404, "Spider not found"},
	}
	for _, c := range cases {
		r := b.do("POST", "/api/v1/jobs", key, c.body)
		if r.status != c.status {
			t.Errorf("%s: status %d, want %d (%s)", c.body, r.status, c.status, r.body)
			continue
		}
		if msg := r.errorMessage(t); c.msg != "" && msg != c.msg {
			t.Errorf("%s: message %q, want %q", c.body, msg, c.msg)
		}
	}
	big := `{"spider_id":"` + id + `","arguments":{"x":"` + strings.Repeat("a", 1<<20) + `"}}`
	if r := b.do("POST", "/api/v1/jobs", key, big); r.status != http.StatusRequestEntityTooLarge {
		t.Errorf("big body: %d %s", r.status, r.body)
	}
	// Nothing of all that left a row behind.
	var n int
	b.sql.QueryRow(`SELECT count(*) FROM jobs`).Scan(&n)
	if n != 0 {
		t.Fatalf("%d job rows after refused requests", n)
	}
}

func TestCreateJobEnqueuesByID(t *testing.T) {
	t.Parallel()
	b := setup(t)
	uid, key := b.user("a@example.com")
	id := b.spider(key, "s", "s.py")
	jobID := b.job(key, `{"spider_name":"s","arguments":{"q":"x y","n":3,"deep":{"a":[1]}},"timeout_seconds":60}`)
	info, err := b.queuer.Inspector().GetTaskInfo(tasks.Queue, jobID)
	if err != nil {
		t.Fatalf("task of job %s not in Redis: %v", jobID, err)
	}
	if info.Type != tasks.TypeRunSpider || info.State != asynq.TaskStatePending {
		t.Fatalf("task %+v", info)
	}
	// Enqueueing the same job again is refused by its task id.
	j, err := b.db.JobByID(context.Background(), jobID)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.queuer.Enqueue(context.Background(), j); err != nil {
		t.Fatal(err)
	}
	pending, _ := b.queuer.Inspector().ListPendingTasks(tasks.Queue, asynq.PageSize(10000))
	copies := 0
	for _, p := range pending {
		if p.ID == jobID {
			copies++
		}
	}
	if copies != 1 {
		t.Fatalf("%d tasks for the job, want 1", copies)
	}

	var job map[string]any
	b.mustStatus(b.do("GET", "/api/v1/jobs/"+jobID, key, ""), 200).json(t, &job)
	for _, f := range []string{"id", "spider_id", "status", "items_scraped", "created_at", "finished_at", "spider", "user_id",
		"arguments", "started_at", "error", "schedule_id", "timeout_seconds"} {
		if _, ok := job[f]; !ok {
			t.Errorf("job lacks %q: %v", f, job)
		}
	}
	if job["status"] != "pending" || job["spider_id"] != id || job["user_id"] != uid || job["finished_at"] != nil ||
		job["items_scraped"] != float64(0) || job["timeout_seconds"] != float64(60) {
		t.Fatalf("job %v", job)
	}
	if !rfc3339.MatchString(job["created_at"].(string)) {
		t.Errorf("created_at %v", job["created_at"])
	}
	sp := job["spider"].(map[string]any)
	if sp["id"] != id || sp["name"] != "s" {
		t.Errorf("spider %v", sp)
	}
	if args := job["arguments"].(map[string]any); args["q"] != "x y" || args["n"] != float64(3) {
		t.Errorf("arguments %v", args)
	}
}

func TestJobTenancy(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, key := b.user("a@example.com")
	_, other := b.user("b@example.com")
	b.spider(key, "s", "s.py")
	jobID := b.job(key, `{"spider_name":"s"}`)
	for _, path := range []string{"/api/v1/jobs/" + jobID, "/api/v1/jobs/" + jobID + "/items", "/api/v1/jobs/" + jobID + "/logs",
		"/api/v1/jobs/00000000-0000-0000-0000-000000000000", "/api/v1/jobs/nope"} {
		if msg := b.mustStatus(b.do("GET", path, other, ""), 404).errorMessage(t); msg != "Job not found" {
			t.Errorf("%s: %q", path, msg)
		}
	}
	if msg := b.mustStatus(b.do("DELETE", "/api/v1/jobs/"+jobID, other, ""), 404).errorMessage(t); msg != "Job not found" {
		t.Errorf("delete: %q", msg)
	}
	var list []any
	b.mustStatus(b.do("GET", "/api/v1/jobs", other, ""), 200).json(t, &list)
	if len(list) != 0 {
		t.Fatalf("other user sees %d jobs", len(list))
	}
	// The job was untouched by the other user's DELETE.
	var job map[string]any
	b.mustStatus(b.do("GET", "/api/v1/jobs/"+jobID, key, ""), 200).json(t, &job)
	if job["status"] != "pending" {
		t.Fatalf("status %v", job["status"])
	}
}

func TestListJobs(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, key := b.user("a@example.com")
	s1 := b.spider(key, "one", "one.py")
	s2 := b.spider(key, "two", "two.py")
	var ids []string
	for i := 0; i < 7; i++ {
		sp := s1
		if i%2 == 1 {
			sp = s2
		}
		ids = append(ids, b.job(key, `{"spider_id":"`+sp+`"}`))
	}
	b.mustStatus(b.do("DELETE", "/api/v1/jobs/"+ids[0], key, ""), 200)

	var list []map[string]any
	b.mustStatus(b.do("GET", "/api/v1/jobs", key, ""), 200).json(t, &list)
	if len(list) != 7 {
		t.Fatalf("%d jobs", len(list))
	}
	for i, j := range list {
		if j["id"] != ids[len(ids)-1-i] {
			t.Fatalf("not newest first at %d: %v", i, j["id"])
		}
		if j["spider"].(map[string]any)["repo_path"] == nil {
			t.Fatalf("list row lacks spider.repo_path: %v", j)
		}
	}
	b.mustStatus(b.do("GET", "/api/v1/jobs?status=cancelled", key, ""), 200).json(t, &list)
	if len(list) != 1 || list[0]["id"] != ids[0] {
		t.Fatalf("status filter: %v", list)
	}
	b.mustStatus(b.do("GET", "/api/v1/jobs?spider_id="+s2, key, ""), 200).json(t, &list)
	if len(list) != 3 {
		t.Fatalf("spider filter: %d", len(list))
	}
	b.mustStatus(b.do("GET", "/api/v1/jobs?spider_id="+s1+"&status=pending", key, ""), 200).json(t, &list)
	if len(list) != 3 {
		t.Fatalf("both filters: %d", len(list))
	}
	for _, q := range []string{"status=done", "status=", "spider_id=x", "limit=0", "limit=-1", "limit=abc", "limit=1.5", "before=zzz"} {
		r := b.mustStatus(b.do("GET", "/api/v1/jobs?"+q, key, ""), 400)
		param := strings.SplitN(q, "=", 2)[0]
		if msg := r.errorMessage(t); !strings.Contains(msg, param) {
			t.Errorf("%s: message %q does not name %s", q, msg, param)
		}
	}
	// A limit above the maximum is clamped, not refused.
	b.mustStatus(b.do("GET", "/api/v1/jobs?limit=100000", key, ""), 200)

	// Pages of 3 through the Link header visit every job once, in order.
	var seen []string
	path := "/api/v1/jobs?limit=3"
	for pages := 0; path != ""; pages++ {
		if pages > 5 {
			t.Fatal("pagination does not end")
		}
		r := b.mustStatus(b.do("GET", path, key, ""), 200)
		var page []map[string]any
		r.json(t, &page)
		for _, j := range page {
			seen = append(seen, j["id"].(string))
		}
		path = ""
		if link := r.header.Get("Link"); link != "" {
			m := regexp.MustCompile(`^<([^>]+)>; rel="next"$`).FindStringSubmatch(link)
			if m == nil {
				t.Fatalf("Link %q", link)
			}
			path = m[1]
		}
	}
	if fmt.Sprint(seen) != fmt.Sprint(reverse(ids)) {
		t.Fatalf("pages gave %v, want %v", seen, reverse(ids))
	}
}

func reverse(s []string) []string {
	out := make([]string, len(s))
	for i, v := range s {
		out[len(s)-1-i] = v
	}
	return out
}

func TestCancelJob(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, key := b.user("a@example.com")
	b.spider(key, "s", "s.py")
	jobID := b.job(key, `{"spider_name":"s"}`)

	r := b.mustStatus(b.do("DELETE", "/api/v1/jobs/"+jobID, key, ""), 200)
	if strings.TrimSpace(string(r.body)) != `{"message":"Job cancelled","ok":true}` && strings.TrimSpace(string(r.body)) != `{"ok":true,"message":"Job cancelled"}` {
		t.Fatalf("body %s", r.body)
	}
	var job map[string]any
	b.mustStatus(b.do("GET", "/api/v1/jobs/"+jobID, key, ""), 200).json(t, &job)
	if job["status"] != "cancelled" || job["finished_at"] == nil {
		t.Fatalf("after cancel: %v", job)
	}
	// Its task is gone from the queue, so no worker will pick it up.
	if _, err := b.queuer.Inspector().GetTaskInfo(tasks.Queue, jobID); !errors.Is(err, asynq.ErrTaskNotFound) {
		t.Fatalf("task still queued: %v", err)
	}
	// Cancelling again is fine.
	b.mustStatus(b.do("DELETE", "/api/v1/jobs/"+jobID, key, ""), 200)

	for _, final := range []string{"finished", "error"} {
		id := b.job(key, `{"spider_name":"s"}`)
		if _, err := b.sql.Exec(`UPDATE jobs SET status = $2, finished_at = now() WHERE id = $1`, id, final); err != nil {
			t.Fatal(err)
		}
		b.mustStatus(b.do("DELETE", "/api/v1/jobs/"+id, key, ""), 409).errorMessage(t)
		b.mustStatus(b.do("GET", "/api/v1/jobs/"+id, key, ""), 200).json(t, &job)
		if job["status"] != final {
			t.Fatalf("409 changed the job: %v", job)
		}
	}
	b.mustStatus(b.do("DELETE", "/api/v1/jobs/00000000-0000-0000-0000-000000000000", key, ""), 404)
}

func TestItemsAndLogs(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, key := b.user("a@example.com")
	b.spider(key, "s", "s.py")
	jobID := b.job(key, `{"spider_name":"s"}`)
	ctx := context.Background()
	if _, started, err := b.db.StartJob(ctx, jobID, "w1"); err != nil || !started {
		t.Fatalf("start: %v %v", started, err)
	}
	if err := b.db.AppendItems(ctx, jobID, "w1", 0, []string{`{"a":1}`, `{"b":"two"}`}); err != nil {
		t.Fatal(err)
	}
	if err := b.db.AppendItems(ctx, jobID, "w1", 2, []string{`{"c":[3]}`}); err != nil {
		t.Fatal(err)
	}
	// A retried batch that had committed is not stored twice.
	if err := b.db.AppendItems(ctx, jobID, "w1", 2, []string{`{"c":[3]}`}); err != nil {
		t.Fatal(err)
	}
	if err := b.db.AppendLogs(ctx, jobID, 0, []string{"line one", "line two"}); err != nil {
		t.Fatal(err)
	}
	r := b.mustStatus(b.do("GET", "/api/v1/jobs/"+jobID+"/items", key, ""), 200)
	if strings.TrimSpace(string(r.body)) != `[{"a":1},{"b":"two"},{"c":[3]}]` {
		t.Fatalf("items %s", r.body)
	}
	r = b.mustStatus(b.do("GET", "/api/v1/jobs/"+jobID+"/items?format=jsonl", key, ""), 200)
	if string(r.body) != "{\"a\":1}\n{\"b\":\"two\"}\n{\"c\":[3]}\n" {
		t.Fatalf("jsonl %q", r.body)
	}
	b.mustStatus(b.do("GET", "/api/v1/jobs/"+jobID+"/items?format=xml", key, ""), 400)
	for _, q := range []string{"offset=-1", "offset=x", "limit=0", "limit=", "offset=1.5"} {
		b.mustStatus(b.do("GET", "/api/v1/jobs/"+jobID+"/items?"+q, key, ""), 400)
	}
	r = b.mustStatus(b.do("GET", "/api/v1/jobs/"+jobID+"/logs", key, ""), 200)
	if string(r.body) != "line one\nline two\n" || !strings.HasPrefix(r.header.Get("Content-Type"), "text/plain") {
		t.Fatalf("logs %q %s", r.body, r.header.Get("Content-Type"))
	}
	var job map[string]any
	b.mustStatus(b.do("GET", "/api/v1/jobs/"+jobID, key, ""), 200).json(t, &job)
	if job["items_scraped"] != float64(3) || job["status"] != "running" || job["started_at"] == nil {
		t.Fatalf("job %v", job)
	}
	// follow=1 ends once the job is final and everything is sent.
	if ok, err := b.db.FinishJob(ctx, jobID, "w1", "finished", nil); err != nil || !ok {
		t.Fatalf("finish: %v %v", ok, err)
	}
	r = b.mustStatus(b.do("GET", "/api/v1/jobs/"+jobID+"/logs?follow=1", key, ""), 200)
	if string(r.body) != "line one\nline two\n" {
		t.Fatalf("followed logs %q", r.body)
	}
	// A worker that no longer owns the job cannot add items.
	if err := b.db.AppendItems(ctx, jobID, "w1", 3, []string{`{}`}); err == nil {
		t.Fatal("items appended to a finished job")
	}
}

func TestReconcilerEnqueuesCommittedJobs(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, key := b.user("a@example.com")
	b.spider(key, "s", "s.py")
	var ids []string
	for i := 0; i < 3; i++ {
		ids = append(ids, b.job(key, `{"spider_name":"s"}`))
	}
	// Redis loses everything (a flush, or a restart without persistence).
	ins := b.queuer.Inspector()
	for _, id := range ids {
		if err := ins.DeleteTask(tasks.Queue, id); err != nil {
			t.Fatal(err)
		}
	}
	// And one job was committed by an API that died before enqueueing.
	u, _ := b.db.UserByKey(context.Background(), key)
	sp, _ := b.db.SpiderByName(context.Background(), u, "s")
	crashed, err := b.db.CreateJob(context.Background(), newJob(u, sp.ID))
	if err != nil {
		t.Fatal(err)
	}
	ids = append(ids, crashed.ID)
	// A cancelled job must not come back.
	b.mustStatus(b.do("DELETE", "/api/v1/jobs/"+ids[0], key, ""), 200)

	rec := tasks.NewReconciler(b.db, b.queuer, discard(), 0, 0)
	n, err := rec.Pass(context.Background())
	if err != nil || n != 3 {
		t.Fatalf("first pass enqueued %d (%v), want 3", n, err)
	}
	for _, id := range ids[1:] {
		if _, err := ins.GetTaskInfo(tasks.Queue, id); err != nil {
			t.Errorf("job %s not re-enqueued: %v", id, err)
		}
	}
	if _, err := ins.GetTaskInfo(tasks.Queue, ids[0]); err == nil {
		t.Error("cancelled job re-enqueued")
	}
	// A second pass finds nothing missing.
	if n, err := rec.Pass(context.Background()); err != nil || n != 0 {
		t.Fatalf("second pass enqueued %d (%v)", n, err)
	}
	// An archived task of a pending job (a handed-back job) is replaced.
	if err := ins.ArchiveTask(tasks.Queue, ids[1]); err != nil {
		t.Fatal(err)
	}
	if n, err := rec.Pass(context.Background()); err != nil || n != 1 {
		t.Fatalf("archived pass enqueued %d (%v)", n, err)
	}
	if info, err := ins.GetTaskInfo(tasks.Queue, ids[1]); err != nil || info.State != asynq.TaskStatePending {
		t.Fatalf("archived task not replaced: %+v %v", info, err)
	}
}

func TestArgumentsPostgresWouldRefuse(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, key := b.user("a@example.com")
	b.spider(key, "s", "s.py")
	deep := strings.Repeat("[", 5000) + strings.Repeat("]", 5000)
	for _, body := range []string{
		`{"spider_name":"s","arguments":{"a":"nul \u0000 here"}}`,
		`{"spider_name":"s","arguments":{"a":{"b\u0000":1}}}`,
		`{"spider_name":"s","arguments":{"a":` + deep + `}}`,
	} {
		b.mustStatus(b.do("POST", "/api/v1/jobs", key, body), 400).errorMessage(t)
	}
	b.mustStatus(b.do("POST", "/api/v1/jobs", key, `{"spider_name":"nul\u0000"}`), 404)
	// A lone surrogate is replaced, not a 500.
	id := b.job(key, `{"spider_name":"s","arguments":{"a":"\ud800x","n":12345678901234567890}}`)
	var job map[string]any
	b.mustStatus(b.do("GET", "/api/v1/jobs/"+id, key, ""), 200).json(t, &job)
	if job["arguments"].(map[string]any)["a"] != "\uFFFDx" {
		t.Fatalf("arguments %v", job["arguments"])
	}
}

// TestNonCanonicalIDs: ids are accepted only in canonical form; any other
// spelling Postgres would parse (upper case, braces, urn:uuid:) is a plain
// 404 (400 on a filter), never a 500 nor database text; a cursor out of
// range is a 400.
func TestNonCanonicalIDs(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, key := b.user("ids@example.com")
	sp := b.spider(key, "s", "s.py")
	id := b.job(key, `{"spider_id":"`+sp+`"}`)
	b.mustStatus(b.do("GET", "/api/v1/jobs/"+id, key, ""), 200)
	for _, v := range []string{strings.ToUpper(id), "{" + id + "}", "urn:uuid:" + id, strings.ReplaceAll(id, "-", ""), id + "%00"} {
		for _, m := range []string{"GET", "DELETE"} {
			r := b.mustStatus(b.do(m, "/api/v1/jobs/"+v, key, ""), 404)
			if msg := r.errorMessage(t); msg != "Job not found" {
				t.Errorf("%s %s: %q", m, v, msg)
			}
		}
		b.mustStatus(b.do("GET", "/api/v1/spiders/"+strings.ReplaceAll(v, id, sp), key, ""), 404)
		r := b.mustStatus(b.do("GET", "/api/v1/jobs?spider_id="+url.QueryEscape(strings.ReplaceAll(v, id, sp)), key, ""), 400)
		if strings.Contains(string(r.body), "syntax") {
			t.Errorf("database text: %s", r.body)
		}
	}
	for _, c := range []string{"-9223372036854775808/" + id, "9223372036854775807/" + id, "1/" + strings.ToUpper(id)} {
		b.mustStatus(b.do("GET", "/api/v1/jobs?before="+base64.RawURLEncoding.EncodeToString([]byte(c)), key, ""), 400)
	}
}

func TestItemsWindowAndCSV(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, key := b.user("a@example.com")
	_, other := b.user("b@example.com")
	b.spider(key, "s", "s.py")
	jobID := b.job(key, `{"spider_name":"s"}`)
	ctx := context.Background()
	if _, started, err := b.db.StartJob(ctx, jobID, "w1"); err != nil || !started {
		t.Fatalf("start: %v %v", started, err)
	}
	// More items than one page of the stream, so paging is crossed.
	items := make([]string, 2500)
	for i := range items {
		items[i] = fmt.Sprintf(`{"n":%d}`, i)
	}
	items[0] = `{"name":"Tea, \"green\"","price":1.5,"tags":["a","b"],"meta":{"x":null},"empty":null}`
	items[1] = `{"extra":"line one\nline two","name":"  spaced"}`
	items[2] = `{"n":true,  "name" : "x"}`
	if err := b.db.AppendItems(ctx, jobID, "w1", 0, items); err != nil {
		t.Fatal(err)
	}
	get := func(q string) string {
		return string(b.mustStatus(b.do("GET", "/api/v1/jobs/"+jobID+"/items?"+q, key, ""), 200).body)
	}
	var all []map[string]any
	if err := json.Unmarshal([]byte(get("")), &all); err != nil || len(all) != 2500 || all[2499]["n"] != float64(2499) {
		t.Fatalf("all items: %d %v", len(all), err)
	}
	var window []map[string]any
	if err := json.Unmarshal([]byte(get("offset=1000&limit=1200")), &window); err != nil || len(window) != 1200 ||
		window[0]["n"] != float64(1000) || window[1199]["n"] != float64(2199) {
		t.Fatalf("window: %d %v", len(window), err)
	}
	if got := get("format=jsonl&offset=2498"); got != "{\"n\":2498}\n{\"n\":2499}\n" {
		t.Fatalf("jsonl tail %q", got)
	}
	if got := get("offset=2500"); strings.TrimSpace(got) != "[]" {
		t.Fatalf("past the end %q", got)
	}
	if got := get("format=csv&offset=9999"); got != "" {
		t.Fatalf("csv past the end %q", got)
	}
	want := "name,price,tags,meta,empty,extra,n\r\n" +
		"\"Tea, \"\"green\"\"\",1.5,\"[\"\"a\"\",\"\"b\"\"]\",\"{\"\"x\"\":null}\",,,\r\n" +
		"\"  spaced\",,,,,\"line one\r\nline two\",\r\n" +
		"x,,,,,,true\r\n" +
		",,,,,,3\r\n"
	r := b.mustStatus(b.do("GET", "/api/v1/jobs/"+jobID+"/items?format=csv&limit=4", key, ""), 200)
	if string(r.body) != want {
		t.Fatalf("csv\n%q\nwant\n%q", r.body, want)
	}
	if ct := r.header.Get("Content-Type"); ct != "text/csv; charset=utf-8" {
		t.Fatalf("csv content type %q", ct)
	}
	// The header is the union of the window's keys only.
	if got := get("format=csv&offset=10&limit=2"); got != "n\r\n10\r\n11\r\n" {
		t.Fatalf("csv window %q", got)
	}
	full := get("format=csv")
	if n := strings.Count(full, "\r\n"); n != 2502 { // header, 2500 records, one with an embedded newline
		t.Fatalf("csv lines %d", n)
	}
	b.mustStatus(b.do("GET", "/api/v1/jobs/"+jobID+"/items?format=csv", other, ""), 404)
}
