package archive_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/scrapethis/scrapethis"
	"github.com/scrapethis/scrapethis/archive"
)

// Fuzz inputs: kind 0 is a raw tar stream the fuzzer mutates and the test
// gzips (so mutations reach the tar layer), 1 a body sent as tar.gz, 2 a
// body sent as zip.
const (
	fuzzTar = iota
	fuzzGzip
	fuzzZip
)

func gunzip(t testing.TB, b []byte) []byte {
	t.Helper()
	r, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func FuzzCheck(f *testing.F) {
	tars := [][]file{
		scrapyFiles(),
		append([]file{dir("./")}, scrapyFiles()...),
		{reg("p/scrapy.cfg", cfg), reg("p/shop/settings.py", ""), symlink("p/l", "shop"), hardlink("p/h", "p/scrapy.cfg")},
		{reg("scrapethis.json", `{"spiders": {"run": "bin/run.sh"}}`), exe("bin/run.sh", "#!/bin/sh\n"), symlink("bin/up", "..")},
		scrapyFiles(symlink("out", "shop"), reg("out/x.py", "boom")),
		scrapyFiles(dir("a/"), symlink("a/b", ".."), symlink("c", "a/b/..")),
		scrapyFiles(symlink("pw", "../../etc/passwd"), hardlink("h", "../x")),
	}
	for _, files := range tars {
		body := tgz(f, files)
		f.Add(gunzip(f, body), uint8(fuzzTar))
		f.Add(body, uint8(fuzzGzip))
	}
	f.Add(zipOf(f, "", zipFile{name: "scrapethis.json", body: `{"spiders": {"run": "run"}}`}, zipFile{name: "run", mode: 0o755},
		zipFile{name: "l", body: "run", mode: fs.ModeSymlink | 0o777}), uint8(fuzzZip))
	f.Add(zipOf(f, "", zipFile{name: "shop/", mode: fs.ModeDir | 0o755}, zipFile{name: "shop/scrapy.cfg"}, zipFile{name: "shop/l", body: "../..", mode: fs.ModeSymlink | 0o777}), uint8(fuzzZip))
	f.Add(overlappingZip("scrapy.cfg", "b"), uint8(fuzzZip))

	lim := archive.Limits{MaxUnpackedBytes: 1 << 20, MaxEntries: 64}
	f.Fuzz(func(t *testing.T, data []byte, kind uint8) {
		ct := "application/gzip"
		switch kind % 3 {
		case fuzzTar:
			data = gzipOf(t, data)
		case fuzzZip:
			ct = "application/zip"
		}
		ctx := context.Background()
		p, err := archive.Check(ctx, bytes.NewReader(data), int64(len(data)), ct, lim)
		if err != nil {
			if code := scrapethis.ErrorCode(err); code != scrapethis.EInvalid {
				t.Fatalf("refused with code %s: %v", code, err)
			}
			return
		}
		parent := t.TempDir()
		dest := filepath.Join(parent, "dest")
		q, err := archive.Extract(ctx, bytes.NewReader(data), int64(len(data)), ct, lim, dest)
		if err != nil {
			t.Fatalf("Check accepted what Extract refuses: %v", err)
		}
		if q.Root != p.Root || q.Kind != p.Kind || q.Entries != p.Entries {
			t.Fatalf("Check saw %+v, Extract %+v", p, q)
		}
		if names := list(t, parent); len(names) != 1 || names[0] != "dest" {
			t.Fatalf("Extract wrote beside dest: %v", names)
		}
		assertContained(t, dest)
	})
}

// assertContained fails if a path under dest has a mode Extract never
// gives, or is a symlink that the kernel would follow out of dest.
func assertContained(t *testing.T, dest string) {
	t.Helper()
	err := filepath.WalkDir(dest, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		switch m := fi.Mode(); {
		case m&fs.ModeSymlink != 0:
			rel, _ := filepath.Rel(dest, p)
			if escapes(t, dest, strings.Split(filepath.ToSlash(rel), "/")) {
				target, _ := os.Readlink(p)
				t.Fatalf("symlink %s -> %s escapes dest", rel, target)
			}
		case m.IsDir() && m.Perm() != 0o755, m.IsDir() && m&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) != 0:
			t.Fatalf("directory %s has mode %v", p, m)
		case !m.IsDir() && m != 0o644 && m != 0o755:
			t.Fatalf("%s has mode %v", p, m)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// escapes walks path (components under dest) on the real file system as
// the kernel would, following every symlink, and reports whether it climbs
// above dest.
func escapes(t *testing.T, dest string, path []string) bool {
	var cur []string
	queue := append([]string(nil), path...)
	for hops := 0; len(queue) > 0; {
		c := queue[0]
		queue = queue[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(cur) == 0 {
				return true
			}
			cur = cur[:len(cur)-1]
			continue
		}
		cur = append(cur, c)
		p := filepath.Join(append([]string{dest}, cur...)...)
		fi, err := os.Lstat(p)
		if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
			continue
		}
		if hops++; hops > 40 {
			return false // ELOOP: the kernel gives up too
		}
		target, err := os.Readlink(p)
		if err != nil {
			t.Fatal(err)
		}
		if filepath.IsAbs(target) {
			return true
		}
		cur = cur[:len(cur)-1]
		queue = append(strings.Split(target, "/"), queue...)
	}
	return false
}
