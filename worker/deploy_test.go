package worker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/scrapethis/scrapethis"
	"github.com/scrapethis/scrapethis/api"
	"github.com/scrapethis/scrapethis/archive"
	"github.com/scrapethis/scrapethis/internal/testenv"
	"github.com/scrapethis/scrapethis/worker"
)

// shopSite serves n product pages linked from an index.
func shopSite(t *testing.T, n int) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		var b strings.Builder
		b.WriteString("<html><body>")
		for i := 1; i <= n; i++ {
			fmt.Fprintf(&b, `<a class="p" href="/p/%d">p%d</a>`, i, i)
		}
		b.WriteString("</body></html>")
		io.WriteString(w, b.String())
	})
	mux.HandleFunc("/p/", func(w http.ResponseWriter, r *http.Request) {
		id := strings.TrimPrefix(r.URL.Path, "/p/")
		fmt.Fprintf(w, `<html><body><h1>Product %s</h1><span class="price">%s0</span></body></html>`, id, id)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL
}

// shopProject writes a `scrapy startproject`-style project: an item class,
// a pipeline driven by a custom setting, a dependency shipped as a wheel,
// and one spider taking an argument. marker changes the bytes (and what
// the pipeline writes) from one version to the next.
func shopProject(t *testing.T, marker string) []byte {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{
		"scrapy.cfg":       "[settings]\ndefault = shop.settings\n\n[deploy]\nproject = shop\n",
		"shop/__init__.py": "",
		"shop/items.py": `import scrapy

class Product(scrapy.Item):
    name = scrapy.Field()
    price = scrapy.Field()
    category = scrapy.Field()
    version = scrapy.Field()
    helper = scrapy.Field()
`,
		"shop/settings.py": `BOT_NAME = "shop"
SPIDER_MODULES = ["shop.spiders"]
NEWSPIDER_MODULE = "shop.spiders"
ROBOTSTXT_OBEY = False
PRICE_FACTOR = 2
ITEM_PIPELINES = {"shop.pipelines.PricePipeline": 300}
`,
		"shop/pipelines.py": `class PricePipeline:
    def __init__(self, factor):
        self.factor = factor

    @classmethod
    def from_crawler(cls, crawler):
        return cls(crawler.settings.getint("PRICE_FACTOR"))

    def process_item(self, item, spider):
        item["price"] = item["price"] * self.factor
        item["version"] = "` + marker + `"
        return item
`,
		"shop/spiders/__init__.py": "",
		"shop/spiders/products.py": `import scrapy
import tinyhelper
from shop.items import Product

class ProductsSpider(scrapy.Spider):
    name = "products"

    def __init__(self, base_url=None, category="none", *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.start_urls = [base_url]
        self.category = category

    def parse(self, response):
        for href in response.css("a.p::attr(href)").getall():
            yield response.follow(href, self.parse_product)

    def parse_product(self, response):
        yield Product(name=response.css("h1::text").get(), price=int(response.css(".price::text").get()),
                      category=self.category, helper=tinyhelper.greet())
`,
		"requirements.txt": "tinyhelper==1.0\n",
	}
	for p, body := range files {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	wheels := filepath.Join(dir, "wheels")
	if err := os.MkdirAll(wheels, 0o755); err != nil {
		t.Fatal(err)
	}
	testenv.Wheel(t, wheels, "tinyhelper", "1.0", map[string]string{"tinyhelper/__init__.py": "def greet():\n    return 'hello from a wheel'\n"})
	data, err := archive.Pack(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

type deployEnv struct {
	*bundle
	url, key string
}

func (d deployEnv) call(method, path, contentType string, body []byte) (int, []byte) {
	d.t.Helper()
	req, err := http.NewRequest(method, d.url+path, bytes.NewReader(body))
	if err != nil {
		d.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+d.key)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		d.t.Fatal(err)
	}
	defer res.Body.Close()
	out, _ := io.ReadAll(res.Body)
	return res.StatusCode, out
}

type deployedVersion struct {
	ID, Label, Status string
	Error             *string
	Spiders           []string
}

// deploy uploads the archive and waits for its inspection.
func (d deployEnv) deploy(data []byte) deployedVersion {
	d.t.Helper()
	status, body := d.call("POST", "/api/v1/projects/shop/versions", "application/gzip", data)
	if status != http.StatusCreated {
		d.t.Fatalf("upload: %d %s", status, body)
	}
	var v deployedVersion
	json.Unmarshal(body, &v)
	testenv.WaitFor(d.t, 3*time.Minute, "version inspected", func() bool {
		_, body := d.call("GET", "/api/v1/projects/shop/versions/"+v.ID, "", nil)
		json.Unmarshal(body, &v)
		return v.Status != "building"
	})
	return v
}

func (d deployEnv) startJob(body string) string {
	d.t.Helper()
	status, out := d.call("POST", "/api/v1/jobs", "application/json", []byte(body))
	if status != http.StatusOK {
		d.t.Fatalf("start job %s: %d %s", body, status, out)
	}
	var r struct{ JobID string }
	json.Unmarshal(out, &r)
	return r.JobID
}

// worker starts one more worker of a machine of its own: a cache of its
// own, and no spiders directory at all.
func (d deployEnv) worker(mod func(*worker.Config)) (stop func()) {
	return d.startWorker(func(c *worker.Config) {
		c.SpidersDir = filepath.Join(d.t.TempDir(), "none")
		c.CacheDir = d.t.TempDir()
		if mod != nil {
			mod(c)
		}
	})
}

func newDeployEnv(t *testing.T, workers int, mod func(*worker.Config)) deployEnv {
	b := setup(t)
	_, key, err := b.db.CreateAPIKey(context.Background(), b.userID, "deploy")
	if err != nil {
		t.Fatal(err)
	}
	srv := api.New(b.db, b.queuer, testenv.Log(t, slog.LevelWarn))
	url := testenv.Serve(t, srv)
	d := deployEnv{bundle: b, url: url, key: key}
	for i := 0; i < workers; i++ {
		d.worker(mod)
	}
	return d
}

// TestDeployedProjectRuns deploys a Scrapy project over HTTP to two
// workers that share no disk, runs its spider with arguments and per-job
// settings, checks its pipeline, its wheel dependency and its Scrapy
// stats, and keeps a job pinned to v1 on v1 while v2 is deployed.
func TestDeployedProjectRuns(t *testing.T) {
	t.Parallel()
	d := newDeployEnv(t, 0, nil)
	site := shopSite(t, 5)
	// The first worker inspects v1, then its machine goes away: the next
	// two have never seen the version and fetch it from the platform.
	stopFirst := d.worker(nil)
	v1 := d.deploy(shopProject(t, "one"))
	stopFirst()
	d.worker(nil)
	d.worker(nil)
	if v1.Status != "ready" || strings.Join(v1.Spiders, ",") != "products" {
		t.Fatalf("v1: %+v (error %v)", v1, deref(v1.Error))
	}
	var spiders []scrapethis.Spider
	_, body := d.call("GET", "/api/v1/spiders", "", nil)
	json.Unmarshal(body, &spiders)
	if len(spiders) != 1 || spiders[0].RepoPath != "shop/spiders/products.py" || spiders[0].Project == nil {
		t.Fatalf("spiders: %s", body)
	}

	// Two jobs at once: both workers get one, each fetches the version.
	a := d.startJob(`{"spider_name": "products", "arguments": {"base_url": "` + site + `", "category": "tools"}}`)
	c := d.startJob(`{"spider_name": "products", "arguments": {"base_url": "` + site + `"}, "settings": {"PRICE_FACTOR": 3}}`)
	ja := d.waitStatus(a, scrapethis.StatusFinished)
	jc := d.waitStatus(c, scrapethis.StatusFinished)

	for _, tc := range []struct {
		job      scrapethis.Job
		factor   int
		category string
	}{{ja, 2, "tools"}, {jc, 3, "none"}} {
		items := d.items(tc.job.ID)
		if len(items) != 5 {
			t.Fatalf("job %s: %d items, want 5; log:\n%s", tc.job.ID, len(items), d.logs(tc.job.ID))
		}
		for _, raw := range items {
			var it struct {
				Name, Category, Version, Helper string
				Price                           int
			}
			json.Unmarshal([]byte(raw), &it)
			var n int
			fmt.Sscanf(it.Name, "Product %d", &n)
			if it.Price != n*10*tc.factor || it.Category != tc.category || it.Version != "one" || it.Helper != "hello from a wheel" {
				t.Fatalf("job %s item %s: factor %d, category %s", tc.job.ID, raw, tc.factor, tc.category)
			}
		}
		var st map[string]any
		if err := json.Unmarshal(tc.job.Stats, &st); err != nil {
			t.Fatalf("job %s stats %q: %v", tc.job.ID, tc.job.Stats, err)
		}
		if st["item_scraped_count"] != float64(5) || st["finish_reason"] != "finished" ||
			st["downloader/request_count"] != float64(6) || st["response_received_count"] != float64(6) {
			t.Fatalf("job %s stats: %v", tc.job.ID, st)
		}
		if _, ok := st["elapsed_time_seconds"].(float64); !ok {
			t.Fatalf("job %s stats without elapsed_time_seconds: %v", tc.job.ID, st)
		}
		if tc.job.Version == nil || tc.job.Version.ID != v1.ID {
			t.Fatalf("job %s ran version %+v, want %s", tc.job.ID, tc.job.Version, v1.ID)
		}
	}
	for _, id := range []string{ja.ID, jc.ID} {
		if l := d.logs(id); !strings.Contains(l, "prepared on this worker") && !strings.Contains(l, "from this worker's cache") {
			t.Fatalf("job %s does not say where its version came from:\n%s", id, l)
		}
	}
	if !strings.Contains(d.logs(ja.ID)+d.logs(jc.ID), "prepared on this worker in") {
		t.Fatalf("no job reported fetching and preparing the version")
	}

	// v2 changes the pipeline's marker; a job pinned to v1 still runs v1,
	// a job without a version runs v2.
	v2 := d.deploy(shopProject(t, "two"))
	if v2.Status != "ready" || v2.Label != "v2" {
		t.Fatalf("v2: %+v", v2)
	}
	pinned := d.startJob(`{"spider_name": "products", "version": "v1", "arguments": {"base_url": "` + site + `"}}`)
	latest := d.startJob(`{"spider_name": "products", "arguments": {"base_url": "` + site + `"}}`)
	for id, want := range map[string]string{pinned: "one", latest: "two"} {
		d.waitStatus(id, scrapethis.StatusFinished)
		items := d.items(id)
		var it struct{ Version string }
		if len(items) == 5 {
			json.Unmarshal([]byte(items[0]), &it)
		}
		if it.Version != want {
			t.Fatalf("job %s: items %v, want version %s", id, items, want)
		}
	}
}

// TestDeployFailures: versions that cannot run fail with the reason, and
// never stay building.
func TestDeployFailures(t *testing.T) {
	t.Parallel()
	d := newDeployEnv(t, 1, nil)
	write := func(files map[string]string) []byte {
		dir := t.TempDir()
		for p, body := range files {
			full := filepath.Join(dir, p)
			os.MkdirAll(filepath.Dir(full), 0o755)
			os.WriteFile(full, []byte(body), 0o644)
		}
		data, err := archive.Pack(context.Background(), dir)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	base := map[string]string{
		"scrapy.cfg":               "[settings]\ndefault = shop.settings\n",
		"shop/__init__.py":         "",
		"shop/settings.py":         "SPIDER_MODULES = ['shop.spiders']\n",
		"shop/spiders/__init__.py": "",
	}
	with := func(extra map[string]string) map[string]string {
		out := map[string]string{}
		for k, v := range base {
			out[k] = v
		}
		for k, v := range extra {
			out[k] = v
		}
		return out
	}
	for _, tc := range []struct {
		name  string
		files map[string]string
		want  string
	}{
		{"import error", with(map[string]string{"shop/spiders/bad.py": "import no_such_module_here\n"}), "no_such_module_here"},
		{"duplicate names", with(map[string]string{
			"shop/spiders/a.py": "import scrapy\nclass A(scrapy.Spider):\n    name = 'same'\n",
			"shop/spiders/b.py": "import scrapy\nclass B(scrapy.Spider):\n    name = 'same'\n",
		}), "same"},
		{"missing wheel", with(map[string]string{
			"shop/spiders/a.py": "import scrapy\nclass A(scrapy.Spider):\n    name = 'a'\n",
			"requirements.txt":  "not-shipped-anywhere==9.9\n",
			"wheels/README":     "no wheels here\n",
		}), "not-shipped-anywhere"},
	} {
		v := d.deploy(write(tc.files))
		if v.Status != "failed" || v.Error == nil || !strings.Contains(*v.Error, tc.want) {
			t.Errorf("%s: %+v (error %q), want failed mentioning %q", tc.name, v, deref(v.Error), tc.want)
		}
	}
}

// TestSandboxedDeployedProject: inspection and jobs of a deployed project
// with a virtualenv run in the sandbox, the version bound read-only.
func TestSandboxedDeployedProject(t *testing.T) {
	t.Parallel()
	for _, runner := range scrapyRunners() {
		t.Run(runner, func(t *testing.T) {
			t.Parallel()
			testSandboxedDeployedProject(t, runner)
		})
	}
}

func testSandboxedDeployedProject(t *testing.T, runner string) {
	d := newDeployEnv(t, 1, withRunner(runner, sandboxed(t)))
	site := shopSite(t, 3)
	v := d.deploy(shopProject(t, "boxed"))
	if v.Status != "ready" {
		t.Fatalf("version: %+v (error %q)", v, deref(v.Error))
	}
	id := d.startJob(`{"spider_name": "products", "arguments": {"base_url": "` + site + `"}, "memory_mb": 200}`)
	j := d.waitStatus(id, scrapethis.StatusFinished)
	if n := len(d.items(id)); n != 3 {
		t.Fatalf("%d items, want 3; log:\n%s", n, d.logs(id))
	}
	if l := d.logs(id); !strings.Contains(l, "in a sandbox (uid ") || !strings.Contains(l, "200 MiB memory") {
		t.Fatalf("job did not run sandboxed with its memory_mb:\n%s", l)
	}
	checkRunner(t, d.logs(id), runner)
	var st map[string]any
	if json.Unmarshal(j.Stats, &st); st["item_scraped_count"] != float64(3) {
		t.Fatalf("stats %s", j.Stats)
	}
}

// TestLostInspection: a version whose inspection task is lost (Redis
// flushed, an enqueue that failed) is inspected all the same.
func TestLostInspection(t *testing.T) {
	t.Parallel()
	d := newDeployEnv(t, 0, nil)
	status, body := d.call("POST", "/api/v1/projects/shop/versions", "application/gzip", shopProject(t, "lost"))
	if status != http.StatusCreated {
		t.Fatalf("upload: %d %s", status, body)
	}
	var v deployedVersion
	json.Unmarshal(body, &v)
	if err := d.rdb.FlushDB(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	d.worker(nil)
	testenv.WaitFor(t, 2*time.Minute, "the lost inspection to be made", func() bool {
		_, body := d.call("GET", "/api/v1/projects/shop/versions/"+v.ID, "", nil)
		json.Unmarshal(body, &v)
		return v.Status != "building"
	})
	if v.Status != "ready" {
		t.Fatalf("version %+v (error %q)", v, deref(v.Error))
	}
}
