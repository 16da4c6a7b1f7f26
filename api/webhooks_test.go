package api_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/scrapethis/scrapethis/db"
)

func TestWebhooksAPI(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, key := b.user("a@example.com")
	_, other := b.user("b@example.com")
	for _, c := range []struct{ body, msg string }{
		{`{}`, "Missing url"},
		{`{"url":"ftp://93.184.216.34/"}`, "Invalid url"},
		{`{"url":"http://127.0.0.1:9/hook"}`, "private"},
		{`{"url":"http://localhost/hook"}`, "private"},
		{`{"url":"http://169.254.169.254/"}`, "private"},
		{`{"url":"https://93.184.216.34/h","events":[]}`, "Invalid events"},
		{`{"url":"https://93.184.216.34/h","events":["job.started"]}`, "Invalid events"},
		{`{"url":"https://93.184.216.34/h","events":"*"}`, "Invalid events"},
		{`{"url":"https://93.184.216.34/h","events":["*","*"]}`, "Invalid events"},
		{`{"url":42}`, ""},
	} {
		r := b.mustStatus(b.do("POST", "/api/v1/webhooks", key, c.body), 400)
		if msg := r.errorMessage(t); !strings.Contains(msg, c.msg) {
			t.Errorf("%s: %q, want %q in it", c.body, msg, c.msg)
		}
	}
	var created map[string]any
	b.mustStatus(b.do("POST", "/api/v1/webhooks", key, `{"url":"https://93.184.216.34/h","events":["job.finished","job.error"]}`), 201).json(t, &created)
	id, _ := created["id"].(string)
	secret, _ := created["secret"].(string)
	if id == "" || !strings.HasPrefix(secret, "whsec_") || created["url"] != "https://93.184.216.34/h" || len(created["events"].([]any)) != 2 {
		t.Fatalf("created %v", created)
	}
	var all map[string]any
	b.mustStatus(b.do("POST", "/api/v1/webhooks", key, `{"url":"https://93.184.216.34/all"}`), 201).json(t, &all)
	if ev := all["events"].([]any); len(ev) != 1 || ev[0] != "*" {
		t.Fatalf("default events %v", ev)
	}
	// The secret is shown once.
	var got map[string]any
	r := b.mustStatus(b.do("GET", "/api/v1/webhooks/"+id, key, ""), 200)
	r.json(t, &got)
	if _, ok := got["secret"]; ok || strings.Contains(string(r.body), secret) {
		t.Fatalf("GET shows the secret: %s", r.body)
	}
	var list []map[string]any
	r = b.mustStatus(b.do("GET", "/api/v1/webhooks", key, ""), 200)
	r.json(t, &list)
	if len(list) != 2 || list[0]["id"] != all["id"] || strings.Contains(string(r.body), "whsec_") {
		t.Fatalf("list %s", r.body)
	}
	// Another user's webhook is not found, and neither is its log.
	for _, p := range []string{"/api/v1/webhooks/" + id, "/api/v1/webhooks/" + id + "/deliveries"} {
		b.mustStatus(b.do("GET", p, other, ""), 404)
	}
	b.mustStatus(b.do("DELETE", "/api/v1/webhooks/"+id, other, ""), 404)
	b.mustStatus(b.do("GET", "/api/v1/webhooks/not-a-uuid", key, ""), 404)
	var none []any
	b.mustStatus(b.do("GET", "/api/v1/webhooks", other, ""), 200).json(t, &none)
	if len(none) != 0 {
		t.Fatalf("other user's list %v", none)
	}

	// A finished job's delivery shows in the log once attempted.
	b.spider(key, "s", "s.py")
	jobID := b.job(key, `{"spider_name":"s"}`)
	ctx := context.Background()
	b.db.StartJob(ctx, jobID, "w1")
	if ok, err := b.db.FinishJob(ctx, jobID, "w1", "finished", nil); err != nil || !ok {
		t.Fatalf("finish: %v %v", ok, err)
	}
	claimed, err := b.db.ClaimDeliveries(ctx, 10, time.Minute)
	if err != nil || len(claimed) != 2 {
		t.Fatalf("claimed %v %v", claimed, err)
	}
	for _, dl := range claimed {
		res := db.DeliveryResult{Status: 503, Err: "status 503", Duration: 12 * time.Millisecond, Retry: time.Hour}
		if dl.WebhookID == id {
			res = db.DeliveryResult{Status: 200, Duration: 3 * time.Millisecond}
		}
		if err := b.db.SettleDelivery(ctx, dl, res); err != nil {
			t.Fatal(err)
		}
	}
	var log []map[string]any
	b.mustStatus(b.do("GET", "/api/v1/webhooks/"+id+"/deliveries", key, ""), 200).json(t, &log)
	if len(log) != 1 || log[0]["event"] != "job.finished" || log[0]["job_id"] != jobID || log[0]["attempt"] != float64(1) ||
		log[0]["response_status"] != float64(200) || log[0]["error"] != nil || !rfc3339.MatchString(log[0]["created_at"].(string)) {
		t.Fatalf("log %v", log)
	}
	b.mustStatus(b.do("GET", "/api/v1/webhooks/"+all["id"].(string)+"/deliveries?limit=1", key, ""), 200).json(t, &log)
	if len(log) != 1 || log[0]["response_status"] != float64(503) || log[0]["error"] != "status 503" {
		t.Fatalf("log %v", log)
	}
	b.mustStatus(b.do("GET", "/api/v1/webhooks/"+id+"/deliveries?limit=0", key, ""), 400)

	b.mustStatus(b.do("DELETE", "/api/v1/webhooks/"+id, key, ""), 200)
	b.mustStatus(b.do("GET", "/api/v1/webhooks/"+id, key, ""), 404)
	b.mustStatus(b.do("DELETE", "/api/v1/webhooks/"+id, key, ""), 404)
}
