package codecache_test

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/scrapethis/scrapethis/archive"
	"github.com/scrapethis/scrapethis/codecache"
	"github.com/scrapethis/scrapethis/internal/testenv"
)

// source is a Source over archives held in memory, counting its Gets. gate,
// when set, runs in each Get before it answers.
type source struct {
	mu    sync.Mutex
	blobs map[string][]byte
	gets  map[string]int
	gate  func(ctx context.Context, sha string) error
}

func newSource() *source {
	return &source{blobs: map[string][]byte{}, gets: map[string]int{}}
}

func (s *source) Get(ctx context.Context, sha string) ([]byte, error) {
	s.mu.Lock()
	s.gets[sha]++
	b, ok := s.blobs[sha]
	gate := s.gate
	s.mu.Unlock()
	if gate != nil {
		if err := gate(ctx, sha); err != nil {
			return nil, err
		}
	}
	if !ok {
		return nil, fmt.Errorf("no archive %s", sha)
	}
	return b, nil
}

// add stores an archive and returns the Want that names it.
func (s *source) add(body []byte, contentType string) codecache.Want {
	sum := sha256.Sum256(body)
	sha := hex.EncodeToString(sum[:])
	s.mu.Lock()
	defer s.mu.Unlock()
	s.blobs[sha] = body
	return codecache.Want{SHA256: sha, ContentType: contentType}
}

func (s *source) count(sha string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gets[sha]
}

// writeTree writes files (slash paths to contents) under dir.
func writeTree(t testing.TB, dir string, files map[string]string) {
	t.Helper()
	for name, body := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// scrapyProject is a Scrapy project whose one spider, "products", imports
// the modules named in imports.
func scrapyProject(imports ...string) map[string]string {
	spider := "import scrapy\n"
	for _, m := range imports {
		spider += "import " + m + "\n"
	}
	spider += "\nclass Products(scrapy.Spider):\n    name = 'products'\n"
	return map[string]string{
		"scrapy.cfg":                 "[settings]\ndefault = shop.settings\n\n[deploy]\nproject = shop\n",
		"shop/__init__.py":           "",
		"shop/settings.py":           "BOT_NAME = 'shop'\nSPIDER_MODULES = ['shop.spiders']\n",
		"shop/spiders/__init__.py":   "",
		"shop/spiders/products.py":   spider,
		"shop/spiders/data/seed.txt": "a seed\n",
	}
}

// pack packs a project made of files, with wheels (built by testenv.Wheel)
// under wheels/ when given, as `scrapethis deploy` does.
func pack(t testing.TB, files map[string]string, wheels ...func(dir string)) []byte {
	t.Helper()
	dir := t.TempDir()
	writeTree(t, dir, files)
	if len(wheels) > 0 {
		if err := os.Mkdir(filepath.Join(dir, "wheels"), 0o755); err != nil {
			t.Fatal(err)
		}
		for _, w := range wheels {
			w(filepath.Join(dir, "wheels"))
		}
	}
	body, err := archive.Pack(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	return body
}

// helloWheel writes the wheel of distribution "hello", module hello.
func helloWheel(t testing.TB) func(string) {
	return func(dir string) {
		testenv.Wheel(t, dir, "hello", "1.0", map[string]string{"hello/__init__.py": "GREETING = 'hello from a wheel'\n"})
	}
}

type bundle struct {
	src *source
	dir string
	log *slog.Logger
}

// setup returns a cache in a directory of its own, with cfg's other fields.
func setup(t *testing.T, cfg codecache.Config) (*codecache.Cache, *bundle) {
	t.Helper()
	b := &bundle{src: newSource(), dir: t.TempDir(), log: testenv.Log(t, slog.LevelInfo)}
	if cfg.Dir == "" {
		cfg.Dir = filepath.Join(b.dir, "cache")
	}
	if cfg.Environ == nil {
		cfg.Environ = []string{"PATH=/usr/bin:/bin"}
	}
	return open(t, cfg, b), b
}

func open(t *testing.T, cfg codecache.Config, b *bundle) *codecache.Cache {
	t.Helper()
	c, err := codecache.New(cfg, b.src, b.log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func acquire(t *testing.T, c *codecache.Cache, w codecache.Want) *codecache.Entry {
	t.Helper()
	e, err := c.Acquire(context.Background(), w)
	if err != nil {
		t.Fatalf("acquire %s: %v", w.SHA256[:8], err)
	}
	return e
}

// names lists the names in dir.
func names(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, de := range des {
		out = append(out, de.Name())
	}
	return out
}

// assertOnlyLock checks that a cache directory holds nothing but its lock.
func assertOnlyLock(t *testing.T, dir string) {
	t.Helper()
	if got := names(t, dir); !slices.Equal(got, []string{".lock"}) {
		t.Errorf("cache directory holds %v, want only .lock", got)
	}
}

// assertReadable checks that every directory under root is 0755 and every
// file 0644 or 0755.
func assertReadable(t *testing.T, root string) {
	t.Helper()
	n := 0
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		fi, _ := d.Info()
		m := fi.Mode()
		switch {
		case m.IsDir() && m.Perm() != 0o755, m.IsRegular() && m.Perm() != 0o644 && m.Perm() != 0o755:
			t.Errorf("%s has mode %s", p, m)
		case m&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) != 0:
			t.Errorf("%s has mode %s", p, m)
		}
		n++
		return nil
	})
	if n < 3 {
		t.Fatalf("only %d files under %s", n, root)
	}
}

// python runs the interpreter with args in dir and returns its output.
func python(t *testing.T, py, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command(py, args...)
	cmd.Dir = dir
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + t.TempDir()}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", py, args, err, out)
	}
	return strings.TrimSpace(string(out))
}

func TestAcquireUnpacks(t *testing.T) {
	t.Parallel()
	c, b := setup(t, codecache.Config{})
	w := b.src.add(pack(t, scrapyProject()), "application/gzip")

	e := acquire(t, c, w)
	if e.Prepared.Cached || e.Prepared.Env != 0 {
		t.Errorf("first acquire: %+v", e.Prepared)
	}
	if e.Dir != filepath.Join(b.dir, "cache", w.SHA256) || e.ProjectDir() != filepath.Join(e.Dir, "project") {
		t.Errorf("Dir %s, ProjectDir %s", e.Dir, e.ProjectDir())
	}
	if e.VenvDir() != "" || e.Python() != "" || e.Project.Kind != archive.KindScrapy || e.Project.SettingsModule != "shop.settings" {
		t.Errorf("VenvDir %q, Python %q, Project %+v", e.VenvDir(), e.Python(), e.Project)
	}
	if got, err := os.ReadFile(filepath.Join(e.ProjectDir(), "shop", "spiders", "data", "seed.txt")); err != nil || string(got) != "a seed\n" {
		t.Errorf("seed.txt: %q, %v", got, err)
	}
	assertReadable(t, e.Dir)
	if n, bytes := c.Stats(); n != 1 || bytes <= 0 {
		t.Errorf("Stats = %d, %d", n, bytes)
	}

	again := acquire(t, c, w)
	if !again.Prepared.Cached || again.Dir != e.Dir || b.src.count(w.SHA256) != 1 {
		t.Errorf("second acquire: %+v, %d fetches", again.Prepared, b.src.count(w.SHA256))
	}
	t.Logf("uncached %+v; cached %+v", e.Prepared, again.Prepared)
	e.Release()
	e.Release() // idempotent
	again.Release()
}

// A zip with the project in one top-level folder: the folder is stripped.
func TestAcquireZip(t *testing.T) {
	t.Parallel()
	c, b := setup(t, codecache.Config{})
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for name, body := range map[string]string{
		"shop-main/scrapethis.json": `{"spiders": {"hello": "bin/hello"}}`,
		"shop-main/bin/hello":       "#!/bin/sh\necho hello\n",
	} {
		h := &zip.FileHeader{Name: name, Method: zip.Deflate}
		h.SetMode(0o755)
		f, err := zw.CreateHeader(h)
		if err != nil {
			t.Fatal(err)
		}
		f.Write([]byte(body))
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	w := b.src.add(buf.Bytes(), "application/zip")

	e := acquire(t, c, w)
	defer e.Release()
	if e.Project.Kind != archive.KindBundle || e.Project.Root != "shop-main" || e.Project.Spiders["hello"] != "bin/hello" {
		t.Errorf("Project %+v", e.Project)
	}
	fi, err := os.Stat(filepath.Join(e.ProjectDir(), "bin", "hello"))
	if err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("bin/hello: %v, %v", fi, err)
	}
}

func TestHashMismatch(t *testing.T) {
	t.Parallel()
	c, b := setup(t, codecache.Config{})
	w := b.src.add(pack(t, scrapyProject()), "application/gzip")
	b.src.blobs[w.SHA256] = pack(t, map[string]string{"scrapy.cfg": "[settings]\ndefault = other.settings\n"})

	for i := 1; i <= 2; i++ {
		_, err := c.Acquire(context.Background(), w)
		if !errors.Is(err, codecache.ErrMismatch) || !strings.Contains(err.Error(), w.SHA256) {
			t.Fatalf("acquire %d: %v, want ErrMismatch", i, err)
		}
		if n, _ := c.Stats(); n != 0 || b.src.count(w.SHA256) != i {
			t.Errorf("acquire %d: %d entries, %d fetches", i, n, b.src.count(w.SHA256))
		}
	}
	assertOnlyLock(t, filepath.Join(b.dir, "cache"))

	if _, err := c.Acquire(context.Background(), codecache.Want{SHA256: "../" + w.SHA256[3:]}); err == nil {
		t.Error("a name that is not a sha256 was accepted")
	}
}

func TestInvalidArchive(t *testing.T) {
	t.Parallel()
	c, b := setup(t, codecache.Config{})
	w := b.src.add(pack(t, map[string]string{"README": "neither scrapy.cfg nor a manifest"}), "application/gzip")
	if _, err := c.Acquire(context.Background(), w); err == nil || !strings.Contains(err.Error(), "scrapy.cfg") {
		t.Fatalf("acquire: %v", err)
	}
	assertOnlyLock(t, filepath.Join(b.dir, "cache"))
}

func TestRequirementsFromWheel(t *testing.T) {
	t.Parallel()
	c, b := setup(t, codecache.Config{})
	files := scrapyProject("hello")
	files["requirements.txt"] = "# the project's own wheel\nhello==1.0\n"
	w := b.src.add(pack(t, files, helloWheel(t)), "application/gzip")

	e := acquire(t, c, w)
	t.Logf("fetch %s, verify+unpack %s, env %s", e.Prepared.Fetch, e.Prepared.Unpack, e.Prepared.Env)
	if e.VenvDir() != filepath.Join(e.Dir, "venv") || e.Python() != filepath.Join(e.Dir, "venv", "bin", "python") || e.Prepared.Env <= 0 {
		t.Fatalf("VenvDir %q, Python %q, %+v", e.VenvDir(), e.Python(), e.Prepared)
	}
	assertReadable(t, e.Dir)
	check := "import sys, hello, scrapy; print(hello.GREETING); print(scrapy.__file__); print(sys.prefix)"
	out := python(t, e.Python(), e.ProjectDir(), "-c", check)
	lines := strings.Split(out, "\n")
	if len(lines) != 3 || lines[0] != "hello from a wheel" || !strings.HasPrefix(lines[1], "/usr/") || lines[2] != e.VenvDir() {
		t.Fatalf("venv python says %q", out)
	}
	if out := python(t, e.Python(), e.ProjectDir(), "-m", "scrapy", "list"); out != "products" {
		t.Errorf("scrapy list in the venv: %q", out)
	}

	// The worker binds the entry at another path: the venv must not care.
	moved := filepath.Join(b.dir, "elsewhere", "spider")
	os.MkdirAll(filepath.Dir(moved), 0o755)
	if out, err := exec.Command("cp", "-a", e.Dir, moved).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	link := filepath.Join(b.dir, "link")
	if err := os.Symlink(moved, link); err != nil {
		t.Fatal(err)
	}
	for _, root := range []string{moved, link} {
		out := python(t, filepath.Join(root, "venv", "bin", "python"), filepath.Join(root, "project"), "-c", check)
		if lines := strings.Split(out, "\n"); len(lines) != 3 || lines[0] != "hello from a wheel" || lines[2] != filepath.Join(root, "venv") {
			t.Errorf("python at %s says %q", root, out)
		}
	}
	e.Release()

	again := acquire(t, c, w)
	defer again.Release()
	if !again.Prepared.Cached || b.src.count(w.SHA256) != 1 {
		t.Errorf("second acquire %+v, %d fetches", again.Prepared, b.src.count(w.SHA256))
	}
}

func TestFailedInstall(t *testing.T) {
	t.Parallel()
	c, b := setup(t, codecache.Config{})
	files := scrapyProject()
	files["requirements.txt"] = "hello==1.0\nnothere>=2\n"
	w := b.src.add(pack(t, files, helloWheel(t)), "application/gzip")

	for i := 1; i <= 2; i++ {
		_, err := c.Acquire(context.Background(), w)
		var be *codecache.BuildError
		if !errors.As(err, &be) {
			t.Fatalf("acquire %d: %v, want a BuildError", i, err)
		}
		if !strings.HasPrefix(be.Error(), "Could not find a version that satisfies the requirement nothere>=2 (from versions: none)\nNo matching distribution found for nothere>=2") ||
			strings.Count(be.Error(), "\n") > 3 || be.SHA256 != w.SHA256 || !strings.Contains(be.Output, "Looking in links") {
			t.Errorf("BuildError %q, output %q", be.Error(), be.Output)
		}
		if n, _ := c.Stats(); n != 0 || b.src.count(w.SHA256) != i {
			t.Errorf("after %d: %d entries, %d fetches", i, n, b.src.count(w.SHA256))
		}
	}
	assertOnlyLock(t, filepath.Join(b.dir, "cache"))
}

// sdist is a source distribution whose setup.py, were it ever run, would
// write the file proof.
func sdist(t *testing.T, proof string) func(string) {
	return func(dir string) {
		src := filepath.Join(t.TempDir(), "evil-1.0")
		writeTree(t, src, map[string]string{
			"setup.py": fmt.Sprintf("open(%q, 'w').write('ran')\nfrom setuptools import setup\nsetup(name='evil', version='1.0')\n", proof),
			"PKG-INFO": "Metadata-Version: 2.1\nName: evil\nVersion: 1.0\n",
		})
		if out, err := exec.Command("tar", "-C", filepath.Dir(src), "-czf", filepath.Join(dir, "evil-1.0.tar.gz"), "evil-1.0").CombinedOutput(); err != nil {
			t.Fatalf("tar: %v %s", err, out)
		}
	}
}

// No code of a dependency runs at install time: an sdist is refused, and so
// is every way of asking pip to build one.
func TestNoCodeRunsAtInstall(t *testing.T) {
	t.Parallel()
	c, b := setup(t, codecache.Config{})
	proof := filepath.Join(b.dir, "setup-py-ran")
	for req, want := range map[string]string{
		"evil==1.0":                  "source distribution",
		"-e ./evil":                  "line 1: option -e",
		"./evil":                     "line 1",
		"wheels/evil-1.0.tar.gz":     "names an archive file",
		"--no-binary :all:\nevil":    "line 1: option --no-binary",
		"scrapy\nevil @ file:///tmp": "line 2",
	} {
		files := scrapyProject()
		files["requirements.txt"] = req + "\n"
		files["evil/setup.py"] = fmt.Sprintf("open(%q, 'w').write('ran')\nfrom setuptools import setup\nsetup(name='evil', version='1.0')\n", proof)
		w := b.src.add(pack(t, files, sdist(t, proof)), "application/gzip")
		_, err := c.Acquire(context.Background(), w)
		var be *codecache.BuildError
		if !errors.As(err, &be) || !strings.Contains(be.Error(), want) {
			t.Errorf("%q: %v, want a BuildError saying %q", req, err, want)
		}
		if _, err := os.Stat(proof); err == nil {
			t.Fatalf("%q: setup.py ran", req)
		}
	}
	assertOnlyLock(t, filepath.Join(b.dir, "cache"))
}

// Without wheels/, pip uses the operator's configuration (PIP_*); with
// wheels/, only the project's wheels.
func TestOperatorPipSettings(t *testing.T) {
	t.Parallel()
	index := t.TempDir()
	helloWheel(t)(index)
	environ := []string{"PATH=/usr/bin:/bin", "PIP_NO_INDEX=1", "PIP_FIND_LINKS=" + index, "SECRET=worker's"}
	c, b := setup(t, codecache.Config{Environ: environ})

	files := scrapyProject("hello")
	files["requirements.txt"] = "hello\n"
	e := acquire(t, c, b.src.add(pack(t, files), "application/gzip"))
	defer e.Release()
	if out := python(t, e.Python(), e.ProjectDir(), "-c", "import hello; print(hello.GREETING)"); out != "hello from a wheel" {
		t.Errorf("hello from the operator's find-links: %q", out)
	}

	other := func(dir string) { testenv.Wheel(t, dir, "other", "1.0", map[string]string{"other.py": ""}) }
	_, err := c.Acquire(context.Background(), b.src.add(pack(t, files, other), "application/gzip"))
	var be *codecache.BuildError
	if !errors.As(err, &be) || !strings.Contains(be.Error(), "No matching distribution found for hello") {
		t.Errorf("with wheels/, the operator's find-links were used: %v", err)
	}
}

func TestPipTimeout(t *testing.T) {
	t.Parallel()
	// An index that accepts connections and never answers.
	stall := stallingServer(t)
	environ := []string{"PATH=/usr/bin:/bin", "PIP_INDEX_URL=http://" + stall + "/simple/", "PIP_TIMEOUT=600", "PIP_RETRIES=0"}
	c, b := setup(t, codecache.Config{Environ: environ, PipTimeout: 3 * time.Second})
	files := scrapyProject()
	files["requirements.txt"] = "hello\n"
	_, err := c.Acquire(context.Background(), b.src.add(pack(t, files), "application/gzip"))
	var be *codecache.BuildError
	if !errors.As(err, &be) || be.Error() != "installing requirements.txt took longer than 3s" {
		t.Fatalf("acquire: %v", err)
	}
	assertOnlyLock(t, filepath.Join(b.dir, "cache"))
}

// stallingServer accepts connections and never answers until the test
// ends; it returns its address.
func stallingServer(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, conn)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}
