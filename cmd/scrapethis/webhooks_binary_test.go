package main_test

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/scrapethis/scrapethis/internal/testenv"
	"github.com/scrapethis/scrapethis/webhooks"
)

// TestBinaryWebhookSurvivesKill: a job finishes while its webhook's
// receiver is down; the API and worker processes are killed (SIGKILL) and
// started again; the receiver comes back; the event arrives, signed, once
// acknowledged, with the failed attempt in the delivery log.
func TestBinaryWebhookSurvivesKill(t *testing.T) {
	bin := build(t)
	spiders := t.TempDir()
	os.WriteFile(filepath.Join(spiders, "hello.sh"), []byte("#!/bin/sh\necho '{\"hello\":\"world\"}'\n"), 0o755)
	addr := freeAddr(t)
	receiverAddr := freeAddr(t) // nothing listens there yet: the receiver is down
	dsn := testenv.DatabaseDSN(t)
	e := env(append(os.Environ(),
		"DATABASE_URL="+dsn,
		"REDIS_URL="+testenv.LeaseRedis(t),
		"SCRAPETHIS_HTTP_ADDR="+addr,
		"SCRAPETHIS_SPIDERS_DIR="+spiders,
		"SCRAPETHIS_CACHE_DIR="+t.TempDir(),
		"SCRAPETHIS_WORKER_METRICS_ADDR=off",
		"SCRAPETHIS_SANDBOX=off",
		"SCRAPETHIS_WEBHOOK_ALLOW_PRIVATE=true",
	))
	e.run(t, bin, "migrate")
	key := lastLine(e.run(t, bin, "apikey", "create", "--email", "hooks@example.com"))
	// killable runs a process that the test SIGKILLs (or, at its end, stops).
	killable := func(args ...string) *exec.Cmd {
		cmd := exec.Command(bin, args...)
		cmd.Env = e
		cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return cmd
	}
	kill := func(cmd *exec.Cmd) {
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
	}
	api, worker := killable("api"), killable("worker")
	base := "http://" + addr
	waitHTTP(t, base+"/api/v1/openapi.json")
	alice := client{t, base, key}
	alice.expect("POST", "/api/v1/spiders", `{"name":"hello","repo_path":"hello.sh"}`, 201)
	hook := alice.expect("POST", "/api/v1/webhooks", `{"url":"http://`+receiverAddr+`/hook","events":["job.finished"]}`, 201)
	hookID, secret := hook["id"].(string), hook["secret"].(string)
	jobID := alice.expect("POST", "/api/v1/jobs", `{"spider_name":"hello"}`, 200)["jobId"].(string)

	attempts := func() []map[string]any {
		_, data := alice.do("GET", "/api/v1/webhooks/"+hookID+"/deliveries", "")
		var out []map[string]any
		json.Unmarshal(data, &out)
		return out
	}
	testenv.WaitFor(t, time.Minute, "a failed delivery attempt", func() bool { return len(attempts()) >= 1 })
	if a := attempts()[0]; a["response_status"] != nil || !strings.Contains(a["error"].(string), "refused") || a["job_id"] != jobID {
		t.Fatalf("first attempt %v", a)
	}
	// The platform is killed, and comes back; so does the receiver.
	kill(worker)
	kill(api)
	var mu sync.Mutex
	var got []http.Header
	var bodies [][]byte
	ln, err := net.Listen("tcp", receiverAddr)
	if err != nil {
		t.Skipf("the receiver's port was taken meanwhile: %v", err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		got, bodies = append(got, r.Header.Clone()), append(bodies, body)
		mu.Unlock()
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	killable("api")
	killable("worker")
	waitHTTP(t, base+"/api/v1/openapi.json")
	testenv.WaitFor(t, time.Minute, "the delivery after the restart", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) >= 1
	})
	mu.Lock()
	h, body := got[0], bodies[0]
	mu.Unlock()
	ts, _ := strconv.ParseInt(h.Get("webhook-timestamp"), 10, 64)
	if !webhooks.Verify(secret, h.Get("webhook-id"), ts, body, h.Get("webhook-signature")) {
		t.Fatalf("signature does not verify: %v", h)
	}
	var msg struct {
		Type string
		Data struct{ ID, Status string }
	}
	if err := json.Unmarshal(body, &msg); err != nil || msg.Type != "job.finished" || msg.Data.ID != jobID || msg.Data.Status != "finished" {
		t.Fatalf("delivery %s %v", body, err)
	}
	testenv.WaitFor(t, 30*time.Second, "the 200 in the delivery log", func() bool {
		a := attempts()
		return len(a) >= 2 && a[0]["response_status"] == float64(200)
	})
}
