package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/jmoiron/sqlx"

	"github.com/scrapethis/scrapethis/api"
	"github.com/scrapethis/scrapethis/db"
	"github.com/scrapethis/scrapethis/internal/testenv"
	"github.com/scrapethis/scrapethis/tasks"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// bundle is one test's API server on its own database and Redis.
type bundle struct {
	t      *testing.T
	db     *db.DB
	sql    *sqlx.DB // fixtures and checks
	queuer *tasks.Queuer
	url    string
}

func setup(t *testing.T) *bundle {
	t.Helper()
	dsn := testenv.DatabaseDSN(t)
	store := testenv.Open(t, dsn)
	rdb := testenv.RedisClient(t)
	q := tasks.NewQueuer(rdb)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	url := testenv.Serve(t, api.New(store, q, log))
	return &bundle{t: t, db: store, sql: testenv.SQL(t, dsn), queuer: q, url: url}
}

// user makes a user with a fresh key.
func (b *bundle) user(email string) (userID, key string) {
	b.t.Helper()
	u, err := b.db.EnsureUser(context.Background(), email)
	if err != nil {
		b.t.Fatal(err)
	}
	_, key, err = b.db.CreateAPIKey(context.Background(), u.ID, "test")
	if err != nil {
		b.t.Fatal(err)
	}
	return u.ID, key
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %q: %v", r.body, err)
	}
}

func (r response) errorMessage(t *testing.T) string {
	t.Helper()
	var e struct {
		Error string `json:"error"`
	}
	r.json(t, &e)
	if e.Error == "" {
		t.Fatalf("no error message in %s", r.body)
	}
	return e.Error
}

// do sends a request with the key (none if empty) and a raw body.
func (b *bundle) do(method, path, key string, body string) response {
	b.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, b.url+path, rd)
	if err != nil {
		b.t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(res.Body)
	if err != nil {
		b.t.Fatal(err)
	}
	checkOpenAPI(b.t, req, res.StatusCode, res.Header, data)
	return response{status: res.StatusCode, header: res.Header, body: data}
}

func (b *bundle) mustStatus(r response, want int) response {
	b.t.Helper()
	if r.status != want {
		b.t.Fatalf("status %d, want %d: %s", r.status, want, r.body)
	}
	return r
}

// spider registers a spider and returns its id.
func (b *bundle) spider(key, name, path string) string {
	b.t.Helper()
	body, _ := json.Marshal(map[string]string{"name": name, "repo_path": path})
	r := b.mustStatus(b.do("POST", "/api/v1/spiders", key, string(body)), http.StatusCreated)
	var s struct{ ID string }
	r.json(b.t, &s)
	return s.ID
}

// job starts a job and returns its id.
func (b *bundle) job(key, body string) string {
	b.t.Helper()
	r := b.mustStatus(b.do("POST", "/api/v1/jobs", key, body), http.StatusOK)
	var out map[string]any
	r.json(b.t, &out)
	if out["status"] != "pending" || out["jobId"] == "" {
		b.t.Fatalf("create answered %s", r.body)
	}
	return out["jobId"].(string)
}

func TestAuthentication(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, key := b.user("a@example.com")
	cases := map[string]string{
		"missing":   "",
		"malformed": "Basic abc",
		"unknown":   "Bearer st_nope",
		"empty":     "Bearer ",
	}
	for name, header := range cases {
		req, _ := http.NewRequest("GET", b.url+"/api/v1/jobs", nil)
		if header != "" {
			req.Header.Set("Authorization", header)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 401 || strings.TrimSpace(string(body)) != `{"error":"Invalid or missing API key"}` {
			t.Errorf("%s: %d %s", name, res.StatusCode, body)
		}
	}
	b.mustStatus(b.do("GET", "/api/v1/jobs", key, ""), 200)
	if n, err := b.db.RevokeAPIKey(context.Background(), key); err != nil || n != 1 {
		t.Fatalf("revoke: %d %v", n, err)
	}
	b.mustStatus(b.do("GET", "/api/v1/jobs", key, ""), 401)
	// The key is stored only as a hash.
	var stored int
	b.sql.QueryRow(`SELECT count(*) FROM api_keys WHERE key_hash = $1`, []byte(key)).Scan(&stored)
	if stored != 0 {
		t.Fatal("key stored in clear")
	}
}

func TestSpiders(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, key := b.user("a@example.com")
	_, other := b.user("b@example.com")
	id := b.spider(key, "my-spider", "spiders/my_spider.py")
	r := b.mustStatus(b.do("GET", "/api/v1/spiders/"+id, key, ""), 200)
	var sp map[string]any
	r.json(t, &sp)
	if sp["name"] != "my-spider" || sp["repo_path"] != "spiders/my_spider.py" {
		t.Fatalf("spider %s", r.body)
	}
	if msg := b.mustStatus(b.do("POST", "/api/v1/spiders", key, `{"name":"my-spider","repo_path":"x.py"}`), 409).errorMessage(t); !strings.Contains(msg, "already exists") {
		t.Errorf("duplicate: %s", msg)
	}
	// The same name for another user is fine.
	b.spider(other, "my-spider", "x.py")
	for _, body := range []string{
		`{"name":"a","repo_path":"/etc/passwd"}`,
		`{"name":"a","repo_path":"../outside.py"}`,
		`{"name":"a","repo_path":"ok/../../outside.py"}`,
		`{"name":"a","repo_path":""}`,
		`{"name":"a"}`,
		`{"repo_path":"a.py"}`,
		`{"name":"a","repo_path":"."}`,
		`{"name":"a","repo_path":42}`,
		`not json`,
	} {
		b.mustStatus(b.do("POST", "/api/v1/spiders", key, body), 400).errorMessage(t)
	}
	b.mustStatus(b.do("GET", "/api/v1/spiders/"+id, other, ""), 404)
	b.mustStatus(b.do("DELETE", "/api/v1/spiders/"+id, other, ""), 404)
	var list []map[string]any
	b.mustStatus(b.do("GET", "/api/v1/spiders", key, ""), 200).json(t, &list)
	if len(list) != 1 {
		t.Fatalf("list: %v", list)
	}
	// A spider with a pending job cannot go; once the job is cancelled it can.
	jobID := b.job(key, `{"spider_id":"`+id+`"}`)
	b.mustStatus(b.do("DELETE", "/api/v1/spiders/"+id, key, ""), 409)
	b.mustStatus(b.do("DELETE", "/api/v1/jobs/"+jobID, key, ""), 200)
	b.mustStatus(b.do("DELETE", "/api/v1/spiders/"+id, key, ""), 200)
	b.mustStatus(b.do("GET", "/api/v1/spiders/"+id, key, ""), 404)
	// Its job still shows what it ran, and the name is free again.
	r = b.mustStatus(b.do("GET", "/api/v1/jobs/"+jobID, key, ""), 200)
	if !bytes.Contains(r.body, []byte(`"name":"my-spider"`)) {
		t.Fatalf("job after spider delete: %s", r.body)
	}
	b.spider(key, "my-spider", "again.py")
}
