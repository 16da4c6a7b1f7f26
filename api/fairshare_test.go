package api_test

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/scrapethis/scrapethis/tasks"
)

// TestPriorities: priority 0-4 (default 2) on jobs and schedules, each on
// its asynq queue; anything else is a 400 naming the field, and creates
// nothing.
func TestPriorities(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, key := b.user("a@example.com")
	id := b.spider(key, "s", "s.py")
	for _, bad := range []string{`-1`, `5`, `2.5`, `"2"`, `true`, `{}`, `[]`, `1e1`, `99999999999999999999`} {
		r := b.do("POST", "/api/v1/jobs", key, `{"spider_id":"`+id+`","priority":`+bad+`}`)
		if r.status != http.StatusBadRequest || r.errorMessage(t) != "priority must be a whole number from 0 (lowest) to 4 (highest)" {
			t.Errorf("job priority %s: %d %s", bad, r.status, r.body)
		}
		r = b.do("POST", "/api/v1/schedules", key, `{"spider_id":"`+id+`","cron":"@daily","priority":`+bad+`}`)
		if r.status != http.StatusBadRequest {
			t.Errorf("schedule priority %s: %d %s", bad, r.status, r.body)
		}
	}
	var n int
	b.sql.QueryRow(`SELECT (SELECT count(*) FROM jobs) + (SELECT count(*) FROM schedules)`).Scan(&n)
	if n != 0 {
		t.Fatalf("%d rows after refused requests", n)
	}

	for _, c := range []struct {
		field string
		want  float64
		queue string
	}{{``, 2, "spiders"}, {`,"priority":null`, 2, "spiders"}, {`,"priority":0`, 0, "spiders-0"}, {`,"priority":4`, 4, "spiders-4"}, {`,"priority":3`, 3, "spiders-3"}} {
		jobID := b.job(key, `{"spider_id":"`+id+`"`+c.field+`}`)
		var j map[string]any
		b.mustStatus(b.do("GET", "/api/v1/jobs/"+jobID, key, ""), 200).json(t, &j)
		if j["priority"] != c.want {
			t.Errorf("%s: priority %v, want %v", c.field, j["priority"], c.want)
		}
		if c.queue != tasks.QueueFor(int(c.want)) {
			t.Fatalf("queue of %v is %s, want %s", c.want, tasks.QueueFor(int(c.want)), c.queue)
		}
		if _, err := b.queuer.Inspector().GetTaskInfo(c.queue, jobID); err != nil {
			t.Errorf("%s: task not on queue %s: %v", c.field, c.queue, err)
		}
	}
	var list []map[string]any
	b.mustStatus(b.do("GET", "/api/v1/jobs", key, ""), 200).json(t, &list)
	for _, j := range list {
		if _, ok := j["priority"].(float64); !ok {
			t.Fatalf("list row without priority: %v", j)
		}
	}

	var sc map[string]any
	b.mustStatus(b.do("POST", "/api/v1/schedules", key, `{"spider_id":"`+id+`","cron":"@daily"}`), 201).json(t, &sc)
	if sc["priority"] != 2.0 {
		t.Fatalf("schedule default priority %v", sc["priority"])
	}
	path := "/api/v1/schedules/" + sc["id"].(string)
	b.mustStatus(b.do("PATCH", path, key, `{"priority":4}`), 200).json(t, &sc)
	if sc["priority"] != 4.0 {
		t.Fatalf("patched priority %v", sc["priority"])
	}
	for _, bad := range []string{`null`, `7`, `"4"`} {
		if r := b.do("PATCH", path, key, `{"priority":`+bad+`}`); r.status != 400 {
			t.Errorf("PATCH priority %s: %d %s", bad, r.status, r.body)
		}
	}
	b.mustStatus(b.do("GET", path, key, ""), 200).json(t, &sc)
	if sc["priority"] != 4.0 {
		t.Fatalf("priority after refused PATCHes %v", sc["priority"])
	}
}

// TestSpiderMaxRunning: max_running on POST and PATCH (null no cap, 0
// holds everything); a job held back by it is pending with no task in
// Redis, and raising the cap enqueues it at once. Another user's spider is
// a 404.
func TestSpiderMaxRunning(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, key := b.user("a@example.com")
	_, otherKey := b.user("b@example.com")
	var sp map[string]any
	b.mustStatus(b.do("POST", "/api/v1/spiders", key, `{"name":"s","repo_path":"s.py","max_running":0}`), 201).json(t, &sp)
	if sp["max_running"] != 0.0 {
		t.Fatalf("max_running %v", sp["max_running"])
	}
	id := sp["id"].(string)
	for _, bad := range []string{`-1`, `1.5`, `"3"`, `true`} {
		if r := b.do("POST", "/api/v1/spiders", key, `{"name":"t","repo_path":"t.py","max_running":`+bad+`}`); r.status != 400 {
			t.Errorf("POST max_running %s: %d %s", bad, r.status, r.body)
		}
		if r := b.do("PATCH", "/api/v1/spiders/"+id, key, `{"max_running":`+bad+`}`); r.status != 400 {
			t.Errorf("PATCH max_running %s: %d %s", bad, r.status, r.body)
		}
	}
	var plain map[string]any
	b.mustStatus(b.do("POST", "/api/v1/spiders", key, `{"name":"u","repo_path":"u.py"}`), 201).json(t, &plain)
	if v, ok := plain["max_running"]; !ok || v != nil {
		t.Fatalf("uncapped spider's max_running %v (present %v), want null", v, ok)
	}

	jobID := b.job(key, `{"spider_id":"`+id+`"}`)
	if _, err := b.queuer.Inspector().GetTaskInfo(tasks.Queue, jobID); !errors.Is(err, asynq.ErrTaskNotFound) && !errors.Is(err, asynq.ErrQueueNotFound) {
		t.Fatalf("a held job has a task: %v", err)
	}
	var j map[string]any
	b.mustStatus(b.do("GET", "/api/v1/jobs/"+jobID, key, ""), 200).json(t, &j)
	if j["status"] != "pending" {
		t.Fatalf("held job is %v", j["status"])
	}
	if r := b.do("PATCH", "/api/v1/spiders/"+id, otherKey, `{"max_running":null}`); r.status != 404 {
		t.Fatalf("another user's PATCH: %d %s", r.status, r.body)
	}
	b.mustStatus(b.do("PATCH", "/api/v1/spiders/"+id, key, `{"max_running":3}`), 200).json(t, &sp)
	if sp["max_running"] != 3.0 {
		t.Fatalf("patched max_running %v", sp["max_running"])
	}
	if _, err := b.queuer.Inspector().GetTaskInfo(tasks.Queue, jobID); err != nil {
		t.Fatalf("raising the cap did not enqueue the held job: %v", err)
	}
	b.mustStatus(b.do("PATCH", "/api/v1/spiders/"+id, key, `{}`), 200).json(t, &sp)
	if sp["max_running"] != 3.0 {
		t.Fatalf("an empty PATCH changed max_running to %v", sp["max_running"])
	}
	b.mustStatus(b.do("PATCH", "/api/v1/spiders/"+id, key, `{"max_running":null}`), 200).json(t, &sp)
	if v, ok := sp["max_running"]; !ok || v != nil {
		t.Fatalf("max_running after null %v", v)
	}
	var got int
	if err := b.sql.QueryRowContext(context.Background(), `SELECT count(*) FROM jobs WHERE held`).Scan(&got); err != nil || got != 0 {
		t.Fatalf("%d held jobs, %v", got, err)
	}
}
