package console_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/scrapethis/scrapethis"
	"github.com/scrapethis/scrapethis/api"
	"github.com/scrapethis/scrapethis/console"
	"github.com/scrapethis/scrapethis/db"
	"github.com/scrapethis/scrapethis/demosite"
	"github.com/scrapethis/scrapethis/internal/testenv"
	"github.com/scrapethis/scrapethis/tasks"
	"github.com/scrapethis/scrapethis/worker"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// bundle is one test's platform: the API server with the console mounted
// (and the demo site at /demo/), on its own database and Redis, and a
// worker unless the test needs none.
type bundle struct {
	t       *testing.T
	db      *db.DB
	sql     *sqlx.DB
	srv     *api.Server
	url     string
	spiders string
}

type options struct {
	worker bool
	mod    func(*api.Server)
}

func setup(t *testing.T, o options) *bundle {
	t.Helper()
	dsn := testenv.DatabaseDSN(t)
	store := testenv.Open(t, dsn)
	rdb := testenv.RedisClient(t)
	log := testenv.Log(t, slog.LevelWarn)
	srv := api.New(store, tasks.NewQueuer(rdb), log)
	srv.Console = console.New(console.Config{API: srv, DB: store, Log: log})
	if o.mod != nil {
		o.mod(srv)
	}
	mux := http.NewServeMux()
	mux.Handle("/demo/", demosite.Handler("/demo"))
	mux.Handle("/", srv.Handler())
	hs := httptest.NewServer(mux)
	t.Cleanup(func() {
		hs.Close()
		srv.Close()
	})
	b := &bundle{t: t, db: store, sql: testenv.SQL(t, dsn), srv: srv, url: hs.URL, spiders: t.TempDir()}
	if o.worker {
		cfg := worker.DefaultConfig()
		cfg.SpidersDir = b.spiders
		cfg.CancelGrace = time.Second
		cfg.ShutdownTimeout = time.Second
		cfg.Sandbox.Enabled = false // the sandbox has tests of its own
		testenv.StartWorker(t, cfg, store, rdb, log)
	}
	return b
}

type user struct {
	id, email, key string
}

func (b *bundle) user(email string) user {
	b.t.Helper()
	u, err := b.db.EnsureUser(context.Background(), email)
	if err != nil {
		b.t.Fatal(err)
	}
	_, key, err := b.db.CreateAPIKey(context.Background(), u.ID, "test")
	if err != nil {
		b.t.Fatal(err)
	}
	return user{id: u.ID, email: email, key: key}
}

// spider writes an executable (or *.py) spider into the spiders directory
// and registers it for u.
func (b *bundle) spider(u user, name, file, body string) scrapethis.Spider {
	b.t.Helper()
	if err := os.WriteFile(filepath.Join(b.spiders, file), []byte(body), 0o755); err != nil {
		b.t.Fatal(err)
	}
	sp, err := b.db.CreateSpider(context.Background(), u.id, name, file)
	if err != nil {
		b.t.Fatal(err)
	}
	return sp
}

// apiDo calls the JSON API with a key.
func (b *bundle) apiDo(key, method, path, body string) (int, []byte) {
	b.t.Helper()
	req, err := http.NewRequest(method, b.url+path, strings.NewReader(body))
	if err != nil {
		b.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer res.Body.Close()
	data, _ := io.ReadAll(res.Body)
	return res.StatusCode, data
}

// startJob starts a job through the API and returns its id.
func (b *bundle) startJob(key, body string) string {
	b.t.Helper()
	st, data := b.apiDo(key, "POST", "/api/v1/jobs", body)
	var out struct{ JobID string }
	if st != 200 || json.Unmarshal(data, &out) != nil || out.JobID == "" {
		b.t.Fatalf("start job %s: %d %s", body, st, data)
	}
	return out.JobID
}

func (b *bundle) job(id string) scrapethis.Job {
	b.t.Helper()
	j, err := b.db.JobByID(context.Background(), id)
	if err != nil {
		b.t.Fatal(err)
	}
	return j
}

// browserless is a person's session driven over plain HTTP: a cookie jar
// that follows redirects, for the checks a browser is not needed for.
type browserless struct {
	t    *testing.T
	b    *bundle
	http *http.Client
}

func (b *bundle) client() *browserless {
	jar, _ := cookiejar.New(nil)
	return &browserless{t: b.t, b: b, http: &http.Client{Jar: jar}}
}

type answer struct {
	status int
	url    string
	header http.Header
	body   string
}

func (c *browserless) do(req *http.Request) answer {
	c.t.Helper()
	res, err := c.http.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer res.Body.Close()
	data, _ := io.ReadAll(res.Body)
	return answer{status: res.StatusCode, url: res.Request.URL.Path, header: res.Header, body: string(data)}
}

func (c *browserless) get(path string) answer {
	c.t.Helper()
	req, _ := http.NewRequest("GET", c.b.url+path, nil)
	return c.do(req)
}

func (c *browserless) post(path string, form url.Values) answer {
	c.t.Helper()
	req, _ := http.NewRequest("POST", c.b.url+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return c.do(req)
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrf is the CSRF token in a page's forms.
func (c *browserless) csrf(page answer) string {
	c.t.Helper()
	m := csrfField.FindStringSubmatch(page.body)
	if m == nil {
		c.t.Fatalf("no csrf field on %s: %s", page.url, page.body)
	}
	return m[1]
}

// signIn signs in with key and returns the page it lands on.
func (c *browserless) signIn(key string) answer {
	c.t.Helper()
	form := c.get("/signin")
	return c.post("/signin", url.Values{"csrf": {c.csrf(form)}, "key": {key}})
}

var (
	jobRow    = regexp.MustCompile(`<tr data-job="([0-9a-f-]{36})"`)
	olderLink = regexp.MustCompile(`<a href="([^"]+)" rel="next">`)
)

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
