package scrapyrun

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const python = "/usr/bin/python3"

// needScrapy skips a test on a machine without Debian's Scrapy, as the
// worker's tests do.
func needScrapy(t *testing.T) {
	t.Helper()
	if err := exec.Command(python, "-c", "import scrapy").Run(); err != nil {
		t.Skip("Scrapy is not installed (make test installs python3-scrapy)")
	}
}

// writeFiles writes files (slash paths relative to dir) under dir.
func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, text := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// tree lists the files under dir.
func tree(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		out = append(out, filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// shopProject is a `scrapy startproject` layout: an Item class, a pipeline
// that changes items, a custom setting the spider reads, its own
// EXTENSIONS entry, and settings that ours or the job's must override.
var shopProject = map[string]string{
	"scrapy.cfg":       "[settings]\ndefault = shop.settings\n\n[deploy]\nproject = shop\n",
	"shop/__init__.py": "",
	"shop/items.py": `import scrapy


class Product(scrapy.Item):
    name = scrapy.Field()
    price = scrapy.Field()
    category = scrapy.Field()
    greeting = scrapy.Field()
    pipeline = scrapy.Field()
`,
	"shop/pipelines.py": `from shop.items import Product


class CentsPipeline:
    def process_item(self, item, spider):
        if not isinstance(item, Product):
            return item
        item["price"] = round(item["price"] * 100)
        item["pipeline"] = "cents"
        return item
`,
	"shop/extensions.py": `from scrapy import signals


class Marker:
    def __init__(self, crawler):
        self.crawler = crawler

    @classmethod
    def from_crawler(cls, crawler):
        ext = cls(crawler)
        crawler.signals.connect(ext.spider_closed, signal=signals.spider_closed)
        return ext

    def spider_closed(self, spider):
        self.crawler.stats.set_value("shop/marker", "ran")
`,
	"shop/settings.py": `BOT_NAME = "shop"
SPIDER_MODULES = ["shop.spiders"]
NEWSPIDER_MODULE = "shop.spiders"
ROBOTSTXT_OBEY = False
ITEM_PIPELINES = {"shop.pipelines.CentsPipeline": 300}
EXTENSIONS = {"shop.extensions.Marker": 500}
SHOP_GREETING = "from settings.py"
SHOP_LIMIT = 10
LOG_LEVEL = "DEBUG"
TELNETCONSOLE_ENABLED = True
FEEDS = {"settings-feed.jsonl": {"format": "jsonlines"}}
HTTPCACHE_ENABLED = True
REQUEST_FINGERPRINTER_IMPLEMENTATION = "2.7"
print("settings.py prints this")
`,
	"shop/spiders/__init__.py": "",
	"shop/spiders/products.py": `import scrapy

from shop.items import Product


class ProductsSpider(scrapy.Spider):
    name = "products"

    def start_requests(self):
        yield scrapy.Request(self.base + "/list")

    def parse(self, response):
        for href in response.css("a::attr(href)").getall()[: self.settings.getint("SHOP_LIMIT")]:
            yield response.follow(href, self.parse_product)

    def parse_product(self, response):
        print("a print from the spider")
        yield Product(
            name=response.css("h1::text").get(),
            price=float(response.css(".price::text").get()),
            category=self.category,
            greeting=self.settings.get("SHOP_GREETING"),
        )
`,
	"shop/spiders/slow.py": `import scrapy


class SlowSpider(scrapy.Spider):
    name = "slow"

    def start_requests(self):
        yield scrapy.Request(self.base + "/slow")

    def parse(self, response):
        yield {"slow": response.text}
`,
}

// site is the spiders' web site: /list links three products, and /slow
// answers once the test releases it.
type site struct {
	*httptest.Server
	release func()
}

func newSite(t *testing.T) *site {
	t.Helper()
	released := make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("/list", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `<html><body><a href="/p/1">1</a> <a href="/p/2">2</a> <a href="/p/3">3</a></body></html>`)
	})
	mux.HandleFunc("/p/{id}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `<html><body><h1>Product %s</h1><span class="price">%s.25</span></body></html>`, r.PathValue("id"), r.PathValue("id"))
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-released:
			fmt.Fprint(w, "done")
		case <-r.Context().Done():
		}
	})
	srv := httptest.NewServer(mux)
	var once sync.Once
	s := &site{Server: srv, release: func() { once.Do(func() { close(released) }) }}
	t.Cleanup(srv.Close)
	t.Cleanup(s.release) // before Close: a held /slow would block it
	return s
}

// command is argv as a process in dir, with a small, fixed environment.
func command(ctx context.Context, argv []string, dir string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + dir, "LANG=C.UTF-8"}
	cmd.WaitDelay = 10 * time.Second
	return cmd
}

// result is what a run printed.
type result struct {
	stdout, stderr []byte
	err            error
	stats          []map[string]any
	cgroups        []string // a sandboxed run's, as the launcher made them
}

// execute runs argv in dir to its end, within a bounded time.
func execute(t *testing.T, argv []string, dir string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := command(ctx, argv, dir)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	res := result{err: cmd.Run()}
	res.stdout, res.stderr = stdout.Bytes(), stderr.Bytes()
	for line := range bytes.Lines(res.stderr) {
		if raw, ok := ParseStats(line); ok {
			res.stats = append(res.stats, decodeStats(t, raw))
		}
	}
	return res
}

func decodeStats(t *testing.T, raw json.RawMessage) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("stats %s: %v", raw, err)
	}
	return m
}

// items decodes stdout, which must hold JSON objects only.
func items(t *testing.T, stdout []byte) []map[string]any {
	t.Helper()
	var out []map[string]any
	for line := range bytes.Lines(stdout) {
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("stdout line %q is not an item: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

// checkFinal checks a run's final stats against its items.
func checkFinal(t *testing.T, res result, nItems int) map[string]any {
	t.Helper()
	if len(res.stats) == 0 {
		t.Fatalf("no stats line; stderr:\n%s", res.stderr)
	}
	final := res.stats[len(res.stats)-1]
	if final["finish_reason"] != "finished" {
		t.Errorf("finish_reason %v", final["finish_reason"])
	}
	if final["item_scraped_count"] != float64(nItems) {
		t.Errorf("item_scraped_count %v, want %d", final["item_scraped_count"], nItems)
	}
	if n, _ := final["downloader/request_count"].(float64); n <= 0 {
		t.Errorf("downloader/request_count %v", final["downloader/request_count"])
	}
	if n, _ := final["downloader/response_count"].(float64); n <= 0 {
		t.Errorf("downloader/response_count %v", final["downloader/response_count"])
	}
	if _, ok := final["elapsed_time_seconds"].(float64); !ok {
		t.Errorf("elapsed_time_seconds %v", final["elapsed_time_seconds"])
	}
	for _, k := range []string{"start_time", "finish_time"} {
		s, _ := final[k].(string)
		if _, err := time.Parse(time.RFC3339Nano, s); err != nil {
			t.Errorf("%s %v: %v", k, final[k], err)
		}
	}
	return final
}

func TestCrawlProject(t *testing.T) {
	t.Parallel()
	needScrapy(t)
	site := newSite(t)
	project, job := t.TempDir(), t.TempDir()
	writeFiles(t, project, shopProject)
	before := tree(t, project)

	argv, err := Run{
		Python: python, Mode: ModeCrawl, Spider: "products",
		ProjectRoot: project, SettingsModule: "shop.settings",
		Args:     []string{"-a", "base=" + site.URL, "-a", "category=books"},
		LogLevel: "INFO", MemoryLimitMB: 1024,
		Settings: map[string]json.RawMessage{
			"SHOP_GREETING": json.RawMessage(`"from the job"`),
			"SHOP_LIMIT":    json.RawMessage(`2`),
		},
	}.Argv()
	if err != nil {
		t.Fatal(err)
	}
	res := execute(t, argv, job)
	if res.err != nil {
		t.Fatalf("%v: %s", res.err, LastError(res.stderr))
	}

	got := items(t, res.stdout)
	if len(got) != 2 {
		t.Fatalf("%d items, want 2 (SHOP_LIMIT of the job): %v", len(got), got)
	}
	for _, it := range got {
		name, _ := it["name"].(string)
		var id int
		if _, err := fmt.Sscanf(name, "Product %d", &id); err != nil {
			t.Fatalf("item %v: name: %v", it, err)
		}
		want := map[string]any{"name": name, "price": float64(id*100 + 25), "category": "books",
			"greeting": "from the job", "pipeline": "cents"}
		if !mapsEqual(it, want) {
			t.Errorf("item %v, want %v", it, want)
		}
	}

	final := checkFinal(t, res, 2)
	if final["shop/marker"] != "ran" {
		t.Errorf("the project's own extension did not run: shop/marker %v", final["shop/marker"])
	}
	if final["downloader/request_count"] != float64(3) {
		t.Errorf("downloader/request_count %v, want 3", final["downloader/request_count"])
	}
	if _, ok := final["memusage/startup"]; !ok {
		t.Errorf("no memusage/startup: MEMUSAGE not enabled")
	}

	log := string(res.stderr)
	for _, s := range []string{"a print from the spider", "settings.py prints this", "'MEMUSAGE_LIMIT_MB': '922'"} {
		if !strings.Contains(log, s) {
			t.Errorf("stderr lacks %q", s)
		}
	}
	for _, s := range []string{"] DEBUG: ", "Telnet console listening", "TelnetConsole"} {
		if strings.Contains(log, s) {
			t.Errorf("stderr has %q: our LOG_LEVEL/TELNETCONSOLE_ENABLED lost to settings.py", s)
		}
	}
	if after := tree(t, project); !slices.Equal(before, after) {
		t.Errorf("the run wrote into the project:\nbefore %q\nafter  %q", before, after)
	}
	jobFiles := tree(t, job)
	for _, want := range []string{"scrapy.cfg", ".scrapy/httpcache/products"} {
		if !slices.Contains(jobFiles, want) {
			t.Errorf("job directory lacks %s: %q", want, jobFiles)
		}
	}
	if slices.Contains(jobFiles, "settings-feed.jsonl") {
		t.Errorf("settings.py's FEEDS redirected items: %q", jobFiles)
	}
}

func mapsEqual(a, b map[string]any) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return bytes.Equal(ja, jb)
}

// TestPeriodicStats holds the spider's one request at the site until the
// test has read two stats lines, then lets it finish.
func TestPeriodicStats(t *testing.T) {
	t.Parallel()
	needScrapy(t)
	site := newSite(t)
	project, job := t.TempDir(), t.TempDir()
	writeFiles(t, project, shopProject)
	argv, err := Run{
		Python: python, Mode: ModeCrawl, Spider: "slow", ProjectRoot: project, // settings module from scrapy.cfg
		Args: []string{"-a", "base=" + site.URL}, LogLevel: "INFO",
		StatsInterval: 50 * time.Millisecond,
	}.Argv()
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := command(ctx, argv, job)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	pipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var held, all []map[string]any
	released := false
	sc := bufio.NewScanner(pipe)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		stderr.Write(sc.Bytes())
		stderr.WriteByte('\n')
		raw, ok := ParseStats(sc.Bytes())
		if !ok {
			continue
		}
		stats := decodeStats(t, raw)
		all = append(all, stats)
		if !released {
			held = append(held, stats)
			if len(held) == 2 {
				site.release()
				released = true
			}
		}
	}
	err = cmd.Wait()
	if len(held) < 2 {
		t.Fatalf("%d stats lines while the request was held (run: %v); stderr:\n%s", len(held), err, stderr.Bytes())
	}
	if err != nil {
		t.Fatalf("%v: %s", err, LastError(stderr.Bytes()))
	}
	for _, s := range held {
		if _, ok := s["finish_reason"]; ok {
			t.Errorf("a stats line while running has finish_reason: %v", s)
		}
		if _, ok := s["start_time"].(string); !ok {
			t.Errorf("a stats line while running lacks start_time: %v", s)
		}
	}
	checkFinal(t, result{stdout: stdout.Bytes(), stderr: stderr.Bytes(), stats: all}, 1)
	if got := items(t, stdout.Bytes()); len(got) != 1 || got[0]["slow"] != "done" {
		t.Errorf("items %v", got)
	}
}

const fileSpider = `import datetime

import scrapy


class FileSpider(scrapy.Spider):
    name = "file"
    custom_settings = {"FEEDS": {"custom-feed.json": {"format": "json"}}}

    def start_requests(self):
        yield scrapy.Request(self.base + "/list")

    def parse(self, response):
        print('{"fake": "item"}')
        stats = self.crawler.stats
        stats.set_value("file/huge", "x" * 100000)
        stats.set_value("file/nan", float("nan"))
        stats.set_value("file/when", datetime.datetime(2020, 1, 2, 4, 4, 5, tzinfo=datetime.timezone(datetime.timedelta(hours=1))))
        stats.set_value("file/object", object())
        stats.set_value("file/nested", {1: (1.5, None, "\x00")})
        for href in response.css("a::attr(href)").getall():
            yield response.follow(href, self.parse_product)

    def parse_product(self, response):
        yield {"name": response.css("h1::text").get(), "tag": self.settings.get("TAG")}
`

func TestRunspider(t *testing.T) {
	t.Parallel()
	needScrapy(t)
	site := newSite(t)
	code, job := t.TempDir(), t.TempDir()
	writeFiles(t, code, map[string]string{"spider.py": fileSpider})
	argv, err := Run{
		Python: python, Mode: ModeRunspider, Spider: filepath.Join(code, "spider.py"),
		Args: []string{"-a", "base=" + site.URL}, LogLevel: "INFO",
		Settings: map[string]json.RawMessage{"TAG": json.RawMessage(`"x"`)},
	}.Argv()
	if err != nil {
		t.Fatal(err)
	}
	res := execute(t, argv, job)
	if res.err != nil {
		t.Fatalf("%v: %s", res.err, LastError(res.stderr))
	}
	got := items(t, res.stdout)
	if len(got) != 3 {
		t.Fatalf("items %v, want 3 (and not the printed one)", got)
	}
	for _, it := range got {
		if it["tag"] != "x" {
			t.Errorf("item %v: the job's TAG setting did not apply", it)
		}
	}
	final := checkFinal(t, res, 3)
	if !strings.Contains(string(res.stderr), `{"fake": "item"}`) {
		t.Errorf("the spider's print is not in its log")
	}
	if files := tree(t, job); slices.Contains(files, "custom-feed.json") {
		t.Errorf("custom_settings FEEDS redirected items: %q", files)
	}

	// Stats that are not JSON, or too big for a line.
	if _, ok := final["file/huge"]; ok || final["scrapethis/stats_dropped"] != float64(1) {
		t.Errorf("a 100 kB stat is kept (%v), or not counted as dropped: %v", ok, final["scrapethis/stats_dropped"])
	}
	obj, _ := final["file/object"].(string)
	nested, _ := json.Marshal(final["file/nested"])
	for k, ok := range map[string]bool{
		"file/nan":    final["file/nan"] == "nan",
		"file/when":   final["file/when"] == "2020-01-02T03:04:05Z",
		"file/object": strings.HasPrefix(obj, "<object object at "),
		"file/nested": string(nested) == "{\"1\":[1.5,null,\"\uFFFD\"]}",
	} {
		if !ok {
			t.Errorf("stat %s: %#v", k, final[k])
		}
	}
}

// TestShutdownStats stops a running spider as a cancel does (SIGTERM):
// Scrapy closes it, and the final stats say so.
func TestShutdownStats(t *testing.T) {
	t.Parallel()
	needScrapy(t)
	site := newSite(t)
	project, job := t.TempDir(), t.TempDir()
	writeFiles(t, project, shopProject)
	argv, err := Run{
		Python: python, Mode: ModeCrawl, Spider: "slow", ProjectRoot: project, SettingsModule: "shop.settings",
		Args: []string{"-a", "base=" + site.URL}, LogLevel: "INFO",
		StatsInterval: 50 * time.Millisecond,
	}.Argv()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := command(ctx, argv, job)
	pipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	var last map[string]any
	signalled := false
	sc := bufio.NewScanner(pipe)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		stderr.Write(sc.Bytes())
		stderr.WriteByte('\n')
		if raw, ok := ParseStats(sc.Bytes()); ok {
			last = decodeStats(t, raw)
			if !signalled {
				if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
					t.Fatal(err)
				}
				signalled = true
			}
		}
		if bytes.Contains(sc.Bytes(), []byte("shutting down gracefully")) {
			site.release() // Scrapy waits for the request in progress
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("%v; stderr:\n%s", err, stderr.Bytes())
	}
	if !signalled || last["finish_reason"] != "shutdown" {
		t.Fatalf("final stats %v; stderr:\n%s", last, stderr.Bytes())
	}
}

// TestFeedPinned tries every setting that could take items away from
// stdout or change their format.
func TestFeedPinned(t *testing.T) {
	t.Parallel()
	needScrapy(t)
	site := newSite(t)
	code, job, elsewhere := t.TempDir(), t.TempDir(), t.TempDir()
	writeFiles(t, code, map[string]string{"spider.py": fileSpider})
	uri := func(name string) string { return "file://" + filepath.Join(elsewhere, name) }
	feeds, _ := json.Marshal(map[string]any{uri("feeds.json"): map[string]string{"format": "json"}})
	argv, err := Run{
		Python: python, Mode: ModeRunspider, Spider: filepath.Join(code, "spider.py"),
		Args: []string{"-a", "base=" + site.URL}, LogLevel: "INFO",
		Settings: map[string]json.RawMessage{
			"FEEDS":                        feeds,
			"FEED_URI":                     json.RawMessage(`"` + uri("feed-uri.json") + `"`),
			"FEED_FORMAT":                  json.RawMessage(`"json"`),
			"FEED_STORAGES":                json.RawMessage(`{"stdout": "scrapy.extensions.feedexport.FileFeedStorage"}`),
			"FEED_STORAGES_BASE":           json.RawMessage(`{}`),
			"FEED_EXPORTERS":               json.RawMessage(`{"jsonlines": "scrapy.exporters.XmlItemExporter"}`),
			"FEED_EXPORT_BATCH_ITEM_COUNT": json.RawMessage(`1`),
			"EXTENSIONS":                   json.RawMessage(`{"scrapy.extensions.feedexport.FeedExporter": null, "scrapy.extensions.corestats.CoreStats": null, "scrapethis_runner.Stats": null}`),
			"EXTENSIONS_BASE":              json.RawMessage(`{}`),
		},
	}.Argv()
	if err != nil {
		t.Fatal(err)
	}
	res := execute(t, argv, job)
	if res.err != nil {
		t.Fatalf("%v: %s", res.err, LastError(res.stderr))
	}
	if got := items(t, res.stdout); len(got) != 3 {
		t.Fatalf("items %v, want 3", got)
	}
	checkFinal(t, res, 3)
	for _, dir := range []string{job, elsewhere} {
		for _, f := range tree(t, dir) {
			if strings.HasSuffix(f, ".json") {
				t.Errorf("items went to %s", filepath.Join(dir, f))
			}
		}
	}
}

func TestCrawlFailures(t *testing.T) {
	t.Parallel()
	needScrapy(t)
	project := t.TempDir()
	writeFiles(t, project, shopProject)
	for name, c := range map[string]struct {
		run  Run
		want []string
	}{
		"unknown spider": {
			Run{Python: python, Mode: ModeCrawl, Spider: "nope", ProjectRoot: project},
			[]string{"Spider not found: nope"},
		},
		"settings module does not import": {
			Run{Python: python, Mode: ModeCrawl, Spider: "products", ProjectRoot: project, SettingsModule: "shop.nosuch"},
			[]string{"settings module shop.nosuch cannot be imported", "ModuleNotFoundError"},
		},
	} {
		argv, err := c.run.Argv()
		if err != nil {
			t.Fatal(err)
		}
		res := execute(t, argv, t.TempDir())
		if res.err == nil {
			t.Errorf("%s: exit status 0", name)
			continue
		}
		why := LastError(res.stderr)
		for _, w := range c.want {
			if !strings.Contains(why, w) {
				t.Errorf("%s: LastError %q lacks %q", name, why, w)
			}
		}
	}
}

// list runs a List of the project in dir.
func list(t *testing.T, dir, module string) ([]Spider, string, error) {
	t.Helper()
	res := execute(t, List{Python: python, ProjectRoot: dir, SettingsModule: module}.Argv(), t.TempDir())
	if res.err != nil {
		return nil, LastError(res.stderr), res.err
	}
	spiders, err := ParseList(res.stdout)
	return spiders, "", err
}

func TestList(t *testing.T) {
	t.Parallel()
	needScrapy(t)
	project := t.TempDir()
	writeFiles(t, project, shopProject)
	writeFiles(t, project, map[string]string{
		"shop/spiders/more/__init__.py": "",
		"shop/spiders/more/deep.py": `import scrapy

from shop.spiders.products import ProductsSpider  # imported: not defined here


class Deep(scrapy.Spider):
    name = "deep.one-2"
`,
	})
	for _, module := range []string{"shop.settings", ""} {
		got, why, err := list(t, project, module)
		if err != nil {
			t.Fatalf("module %q: %v: %s", module, err, why)
		}
		want := []Spider{
			{"deep.one-2", "shop/spiders/more/deep.py"},
			{"products", "shop/spiders/products.py"},
			{"slow", "shop/spiders/slow.py"},
		}
		if !slices.Equal(got, want) {
			t.Errorf("module %q: spiders %v, want %v", module, got, want)
		}
	}
}

func TestListEmpty(t *testing.T) {
	t.Parallel()
	needScrapy(t)
	project := t.TempDir()
	writeFiles(t, project, map[string]string{
		"scrapy.cfg":                "[settings]\ndefault = empty.settings\n",
		"empty/__init__.py":         "",
		"empty/settings.py":         "SPIDER_MODULES = ['empty.spiders']\n",
		"empty/spiders/__init__.py": "",
	})
	got, why, err := list(t, project, "")
	if err != nil || got == nil || len(got) != 0 {
		t.Fatalf("spiders %v, %v: %s", got, err, why)
	}
}

func TestListFailures(t *testing.T) {
	t.Parallel()
	needScrapy(t)
	spider := func(class, name string) string {
		return fmt.Sprintf("import scrapy\n\n\nclass %s(scrapy.Spider):\n    name = %q\n", class, name)
	}
	for name, c := range map[string]struct {
		files  map[string]string
		module string
		want   []string
	}{
		"import error": {
			map[string]string{"shop/spiders/broken.py": "import scrapy\nimport not_a_module_here\n"},
			"", []string{"shop.spiders.broken", "ModuleNotFoundError", "not_a_module_here"},
		},
		"syntax error": {
			map[string]string{"shop/spiders/broken.py": "def (\n"},
			"", []string{"shop.spiders.broken", "SyntaxError"},
		},
		"duplicate names": {
			map[string]string{
				"shop/spiders/a.py": spider("FirstSpider", "twin"),
				"shop/spiders/b.py": spider("SecondSpider", "twin"),
			},
			"", []string{"'twin'", "shop.spiders.a.FirstSpider (shop/spiders/a.py)", "shop.spiders.b.SecondSpider (shop/spiders/b.py)"},
		},
		"bad name": {
			map[string]string{"shop/spiders/a.py": spider("Spaced", "has space")},
			"", []string{"'has space'", "shop.spiders.a.Spaced", "not valid"},
		},
		"no settings module": {
			map[string]string{"scrapy.cfg": "[deploy]\nproject = shop\n"},
			"", []string{"no settings module", "scrapy.cfg has no [settings] default"},
		},
		"settings module does not import": {
			nil, "shop.other", []string{"settings module shop.other cannot be imported", "ModuleNotFoundError"},
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			project := t.TempDir()
			writeFiles(t, project, shopProject)
			writeFiles(t, project, c.files)
			got, why, err := list(t, project, c.module)
			if err == nil {
				t.Fatalf("listed %v", got)
			}
			for _, w := range c.want {
				if !strings.Contains(why, w) {
					t.Errorf("LastError %q lacks %q", why, w)
				}
			}
		})
	}
}
