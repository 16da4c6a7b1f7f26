package archive_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/scrapethis/scrapethis/archive"
)

// writeTree makes files under dir; a body "-> target" makes a symlink.
func writeTree(t *testing.T, dir string, files map[string]string, order []string) {
	t.Helper()
	for _, name := range order {
		body := files[name]
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		switch {
		case strings.HasSuffix(name, "/"):
			err = os.MkdirAll(p, 0o755)
		case strings.HasPrefix(body, "-> "):
			err = os.Symlink(strings.TrimPrefix(body, "-> "), p)
		case strings.HasPrefix(name, "bin/"):
			err = os.WriteFile(p, []byte(body), 0o750)
		default:
			err = os.WriteFile(p, []byte(body), 0o600)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

var projectTree = map[string]string{
	"scrapy.cfg":                      "[settings]\ndefault = shop.settings\n[deploy]\nproject = shop\n",
	"requirements.txt":                "price-parser\n",
	"shop/__init__.py":                "",
	"shop/settings.py":                "BOT_NAME = 'shop'\n",
	"shop/spiders/products.py":        "import scrapy\n",
	"shop/spiders/empty/":             "",
	"shop/__pycache__/settings.pyc":   "bytecode",
	"shop/items.pyc":                  "bytecode",
	"wheels/dep-1.0-py3-none-any.whl": "PK",
	"bin/run.sh":                      "#!/bin/sh\n",
	"latest.py":                       "-> shop/spiders/products.py",
	"shop/spiders/settings.py":        "-> ../settings.py",
	".git/HEAD":                       "ref: refs/heads/main\n",
	"venv/bin/python":                 "elf",
	".venv/bin/python":                "elf",
	"myenv/pyvenv.cfg":                "home = /usr/bin\n",
	"myenv/lib/site.py":               "",
	".scrapy/httpcache/x":             "cached",
	"docs/.git":                       "gitdir: ../.git/modules/docs\n", // a submodule's .git file
	"docs/.#index.md":                 "-> user@host.1234:1700000000",   // an editor's lock, dangling
}

func treeOrder(reverse bool) []string {
	var names []string
	for name := range projectTree {
		names = append(names, name)
	}
	sort.Strings(names)
	if reverse {
		for i, j := 0, len(names)-1; i < j; i, j = i+1, j-1 {
			names[i], names[j] = names[j], names[i]
		}
	}
	return names
}

func TestPack(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a := filepath.Join(t.TempDir(), "shop")
	writeTree(t, a, projectTree, treeOrder(false))
	first, err := archive.Pack(ctx, a)
	if err != nil {
		t.Fatal(err)
	}

	// The same tree elsewhere, made in another order at another time with
	// other mtimes, packs to the same bytes.
	b := filepath.Join(t.TempDir(), "elsewhere")
	writeTree(t, b, projectTree, treeOrder(true))
	old := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	if err := os.Chtimes(filepath.Join(b, "shop/settings.py"), old, old); err != nil {
		t.Fatal(err)
	}
	second, err := archive.Pack(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first, second) {
		t.Fatal("the same tree packed to other bytes")
	}
	again, err := archive.Pack(ctx, a)
	if err != nil || !bytes.Equal(first, again) {
		t.Fatalf("packing twice differs (%v)", err)
	}

	// A changed file changes the bytes.
	if err := os.WriteFile(filepath.Join(b, "shop/settings.py"), []byte("BOT_NAME = 'shop2'\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	changed, err := archive.Pack(ctx, b)
	if err != nil || bytes.Equal(first, changed) {
		t.Fatalf("a changed tree packed to the same bytes (%v)", err)
	}

	type row struct {
		typ  byte
		mode int64
		link string
	}
	got := map[string]row{}
	var names []string
	gzr, err := gzip.NewReader(bytes.NewReader(first))
	if err != nil {
		t.Fatal(err)
	}
	if !gzr.ModTime.IsZero() || gzr.Name != "" {
		t.Fatalf("gzip header %+v", gzr.Header)
	}
	tr := tar.NewReader(gzr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.ModTime.Unix() != 0 || h.Uid != 0 || h.Gid != 0 || h.Uname != "" || h.Gname != "" {
			t.Fatalf("%s: header %+v", h.Name, h)
		}
		names = append(names, h.Name)
		got[h.Name] = row{h.Typeflag, h.Mode, h.Linkname}
	}
	want := map[string]row{
		"bin/":                            {tar.TypeDir, 0o755, ""},
		"bin/run.sh":                      {tar.TypeReg, 0o755, ""},
		"docs/":                           {tar.TypeDir, 0o755, ""},
		"docs/.#index.md":                 {tar.TypeSymlink, 0o777, "user@host.1234:1700000000"},
		"latest.py":                       {tar.TypeSymlink, 0o777, "shop/spiders/products.py"},
		"requirements.txt":                {tar.TypeReg, 0o644, ""},
		"scrapy.cfg":                      {tar.TypeReg, 0o644, ""},
		"shop/":                           {tar.TypeDir, 0o755, ""},
		"shop/__init__.py":                {tar.TypeReg, 0o644, ""},
		"shop/settings.py":                {tar.TypeReg, 0o644, ""},
		"shop/spiders/":                   {tar.TypeDir, 0o755, ""},
		"shop/spiders/empty/":             {tar.TypeDir, 0o755, ""},
		"shop/spiders/products.py":        {tar.TypeReg, 0o644, ""},
		"shop/spiders/settings.py":        {tar.TypeSymlink, 0o777, "../settings.py"},
		"wheels/":                         {tar.TypeDir, 0o755, ""},
		"wheels/dep-1.0-py3-none-any.whl": {tar.TypeReg, 0o644, ""},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("entries\n got %v\nwant %v", got, want)
	}
	sorted := append([]string(nil), names...)
	sort.Strings(sorted)
	if !reflect.DeepEqual(names, sorted) {
		t.Fatalf("entries not sorted: %v", names)
	}

	p, err := archive.Check(ctx, bytes.NewReader(first), int64(len(first)), archive.FormatTarGz.ContentType(), archive.Limits{})
	if err != nil {
		t.Fatalf("Check of a packed project: %v", err)
	}
	if p.Kind != archive.KindScrapy || p.ScrapyProject != "shop" || !p.Requirements || !p.Wheels || p.Root != "" {
		t.Fatalf("project %+v", p)
	}
}

func TestPackRefuses(t *testing.T) {
	t.Parallel()
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("s"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		files map[string]string
		want  string
	}{
		{"absolute link out", map[string]string{"scrapy.cfg": "", "pw": "-> " + filepath.Join(outside, "secret")}, "symlink pw points outside"},
		{"relative link out", map[string]string{"scrapy.cfg": "", "a/up": "-> ../../" + filepath.Base(outside) + "/secret"}, "symlink a/up points outside"},
		{"dangling link out", map[string]string{"scrapy.cfg": "", "gone": "-> ../nowhere"}, "symlink gone:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := filepath.Join(filepath.Dir(outside), "proj-"+strings.ReplaceAll(tc.name, " ", "-"))
			t.Cleanup(func() { os.RemoveAll(dir) })
			var order []string
			for name := range tc.files {
				order = append(order, name)
			}
			writeTree(t, dir, tc.files, order)
			_, err := archive.Pack(context.Background(), dir)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Pack: %v; want %q", err, tc.want)
			}
		})
	}
	t.Run("fifo", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		if err := syscall.Mkfifo(filepath.Join(dir, "pipe"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := archive.Pack(context.Background(), dir)
		if err == nil || !strings.Contains(err.Error(), "pipe is not a regular file, directory or symlink") {
			t.Fatalf("Pack: %v", err)
		}
	})
	t.Run("not a directory", func(t *testing.T) {
		t.Parallel()
		_, err := archive.Pack(context.Background(), filepath.Join(outside, "secret"))
		if err == nil || !strings.Contains(err.Error(), "not a directory") {
			t.Fatalf("Pack: %v", err)
		}
	})
}
