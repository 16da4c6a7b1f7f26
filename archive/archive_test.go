package archive_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/scrapethis/scrapethis"
	"github.com/scrapethis/scrapethis/archive"
)

const (
	gz  = "application/gzip"
	zp  = "application/zip"
	cfg = "[settings]\ndefault = shop.settings\n"
)

// scrapyFiles is a minimal valid Scrapy project at the archive's root.
func scrapyFiles(extra ...file) []file {
	return append([]file{reg("scrapy.cfg", cfg), reg("shop/__init__.py", ""), reg("shop/settings.py", "BOT_NAME = 'shop'\n")}, extra...)
}

func TestRefusals(t *testing.T) {
	t.Parallel()
	small := archive.Limits{MaxUnpackedBytes: 1 << 20, MaxEntries: 10}
	zeros := string(make([]byte, 10<<20))
	cases := []struct {
		name string
		body []byte
		ct   string
		lim  archive.Limits
		want string
		code string
	}{
		{name: "wrong content type", body: tgz(t, scrapyFiles()), ct: "text/plain", want: `Content-Type "text/plain" is not accepted`},
		{name: "no content type", body: tgz(t, scrapyFiles()), ct: "", want: `Content-Type "" is not accepted`},
		{name: "zip sent as gzip", body: zipOf(t, "", zipFile{name: "scrapy.cfg"}), ct: gz, want: "Content-Type is application/gzip but the body is a zip archive"},
		{name: "gzip sent as zip", body: tgz(t, scrapyFiles()), ct: zp, want: "Content-Type is application/zip but the body is a tar.gz archive"},
		{name: "garbage", body: []byte("hello, I am not an archive"), ct: gz, want: "neither a tar.gz nor a zip"},
		{name: "empty body", body: nil, ct: zp, want: "the archive is empty"},
		{name: "gzip of no tar", body: gzipOf(t, bytes.Repeat([]byte("not a tar "), 100)), ct: gz, want: "not a valid tar.gz archive"},
		{name: "truncated gzip", body: tgz(t, scrapyFiles())[:60], ct: gz, want: "not a valid tar.gz archive"},
		{name: "garbage zip", body: append([]byte("PK\x03\x04"), bytes.Repeat([]byte{7}, 200)...), ct: zp, want: "not a valid zip archive"},
		{name: "over the upload limit", body: tgz(t, scrapyFiles()), ct: gz, lim: archive.Limits{MaxArchiveBytes: 10}, want: "larger than 10 bytes", code: scrapethis.ETooLarge},

		{name: "absolute path", body: tgz(t, scrapyFiles(reg("/etc/cron.d/x", "boom"))), ct: gz, want: `entry "/etc/cron.d/x": absolute path`},
		{name: "dot dot", body: tgz(t, scrapyFiles(reg("shop/../../x", "boom"))), ct: gz, want: `entry "shop/../../x": path contains ".."`},
		{name: "dot dot inside", body: tgz(t, scrapyFiles(reg("a/../b", "x"))), ct: gz, want: `entry "a/../b": path contains ".."`},
		{name: "zip dot dot", body: zipOf(t, "", zipFile{name: "scrapy.cfg"}, zipFile{name: "../evil.py"}), ct: zp, want: `entry "../evil.py": path contains ".."`},
		{name: "zip absolute", body: zipOf(t, "", zipFile{name: "/tmp/evil.py"}), ct: zp, want: `entry "/tmp/evil.py": absolute path`},
		{name: "backslash", body: zipOf(t, "", zipFile{name: "..\\evil.py"}), ct: zp, want: `entry "..\\evil.py": name contains a backslash`},
		{name: "control character", body: tgz(t, scrapyFiles(reg("a\nb", ""))), ct: gz, want: `entry "a\nb": name contains a control character`},

		{name: "symlink out", body: tgz(t, scrapyFiles(symlink("shop/pw", "../../etc/passwd"))), ct: gz, want: `symlink "shop/pw" points outside the archive (target "../../etc/passwd")`},
		{name: "symlink absolute", body: tgz(t, scrapyFiles(symlink("etc", "/etc"))), ct: gz, want: `symlink "etc" points outside the archive (absolute target "/etc")`},
		{name: "zip symlink out", body: zipOf(t, "", zipFile{name: "scrapy.cfg"}, zipFile{name: "l", body: "../x", mode: fs.ModeSymlink | 0o777}), ct: zp, want: `symlink "l" points outside the archive`},
		{name: "symlink through symlink out", body: tgz(t, scrapyFiles(dir("a/"), symlink("a/b", ".."), symlink("c", "a/b/.."))), ct: gz, want: `symlink "c" points outside the archive (target "a/b/..")`},
		{name: "symlink loop", body: tgz(t, scrapyFiles(symlink("x", "y"), symlink("y", "x"))), ct: gz, want: `symlink "x": too many levels of symlinks`},
		{name: "symlink out of the project folder", body: tgz(t, []file{reg("p/scrapy.cfg", ""), symlink("p/up", "../p/../..")}), ct: gz, want: `symlink "p/up" points outside the archive`},
		{name: "symlink to the folder's parent", body: tgz(t, []file{reg("p/scrapy.cfg", ""), symlink("p/up", "..")}), ct: gz, want: `symlink "p/up" points outside the project folder "p"`},
		{name: "symlink then write through it", body: tgz(t, scrapyFiles(symlink("out", "shop"), reg("out/x.py", "boom"))), ct: gz, want: `entry "out/x.py" is written through symlink "out"`},
		{name: "write then symlink over the directory", body: tgz(t, scrapyFiles(reg("out/x.py", "boom"), symlink("out", "shop"))), ct: gz, want: `symlink "out" replaces a directory that earlier entries are written into`},
		{name: "write through a symlink to the root", body: tgz(t, scrapyFiles(symlink("here", "."), reg("here/here/x", ""))), ct: gz, want: `entry "here/here/x" is written through symlink "here"`},
		{name: "file used as a directory", body: tgz(t, scrapyFiles(reg("f", ""), reg("f/x", ""))), ct: gz, want: `entry "f/x" is inside "f", which is not a directory`},
		{name: "hardlink out", body: tgz(t, scrapyFiles(hardlink("pw", "../../etc/passwd"))), ct: gz, want: `hardlink "pw" points outside the archive (target "../../etc/passwd")`},
		{name: "hardlink absolute", body: tgz(t, scrapyFiles(hardlink("pw", "/etc/passwd"))), ct: gz, want: `hardlink "pw" points outside the archive`},
		{name: "hardlink to nothing", body: tgz(t, scrapyFiles(hardlink("pw", "later.py"), reg("later.py", ""))), ct: gz, want: `hardlink "pw": its target "later.py" is not an earlier regular file`},
		{name: "hardlink to a symlink", body: tgz(t, scrapyFiles(symlink("l", "scrapy.cfg"), hardlink("h", "l"))), ct: gz, want: `hardlink "h": its target "l" is not an earlier regular file`},

		{name: "char device", body: tgz(t, scrapyFiles(file{name: "null", typ: tar.TypeChar})), ct: gz, want: `entry "null" is a device`},
		{name: "block device", body: tgz(t, scrapyFiles(file{name: "sda", typ: tar.TypeBlock})), ct: gz, want: `entry "sda" is a device`},
		{name: "fifo", body: tgz(t, scrapyFiles(file{name: "pipe", typ: tar.TypeFifo})), ct: gz, want: `entry "pipe" is a fifo`},
		{name: "tar socket mode bits", body: tgz(t, scrapyFiles(file{name: "sock", mode: 0o140644})), ct: gz, want: `entry "sock" is a socket`},
		{name: "zip socket", body: zipOf(t, "", zipFile{name: "scrapy.cfg"}, zipFile{name: "sock", mode: fs.ModeSocket | 0o644}), ct: zp, want: `entry "sock" is a socket`},
		{name: "zip fifo", body: zipOf(t, "", zipFile{name: "scrapy.cfg"}, zipFile{name: "pipe", mode: fs.ModeNamedPipe | 0o644}), ct: zp, want: `entry "pipe" is a fifo`},
		{name: "zip device", body: zipOf(t, "", zipFile{name: "scrapy.cfg"}, zipFile{name: "null", mode: fs.ModeDevice | fs.ModeCharDevice | 0o644}), ct: zp, want: `entry "null" is a device`},

		{name: "too many entries", body: tgz(t, scrapyFiles(reg("1", ""), reg("2", ""), reg("3", ""), reg("4", ""), reg("5", ""), reg("6", ""), reg("7", ""), reg("8", ""))), ct: gz, lim: small, want: "the archive has more than 10 entries"},
		{name: "too many zip entries", body: zipOf(t, "", zipFile{name: "a"}, zipFile{name: "b"}, zipFile{name: "c"}), ct: zp, lim: archive.Limits{MaxEntries: 2}, want: "the archive has more than 2 entries"},
		{name: "too many bytes", body: tgz(t, scrapyFiles(reg("big.bin", zeros))), ct: gz, lim: small, want: `the archive unpacks to more than 1 MiB (entry "big.bin")`},
		{name: "gzip bomb after the tar's end", body: tgz(t, scrapyFiles(), make([]byte, 20<<20)), ct: gz, lim: small, want: "the archive unpacks to more than 1 MiB (a gzip bomb?)"},
		{name: "zip too many bytes", body: zipOf(t, "", zipFile{name: "scrapy.cfg"}, zipFile{name: "big.bin", body: zeros}), ct: zp, lim: small, want: `the archive unpacks to more than 1 MiB (entry "big.bin")`},
		{name: "zip bomb with lying sizes", body: lyingZip(t, 10<<20), ct: zp, lim: small, want: `entry "bomb.bin" is corrupt: its data does not match its header`},
		{name: "zip with overlapping entries", body: overlappingZip("scrapy.cfg", "b", "c"), ct: zp, want: `overlap (a zip bomb?)`},

		{name: "duplicate", body: tgz(t, scrapyFiles(reg("a.py", "1"), reg("a.py", "2"))), ct: gz, want: `duplicate entry "a.py"`},
		{name: "duplicate once cleaned", body: tgz(t, scrapyFiles(reg("a.py", "1"), reg("./a.py", "2"))), ct: gz, want: `duplicate entry "./a.py"`},
		{name: "zip duplicate", body: zipOf(t, "", zipFile{name: "scrapy.cfg"}, zipFile{name: "scrapy.cfg"}), ct: zp, want: `duplicate entry "scrapy.cfg"`},

		{name: "no manifest", body: tgz(t, []file{reg("spider.py", "")}), ct: gz, want: "neither scrapy.cfg nor scrapethis.json at the archive's root or inside its one top-level folder"},
		{name: "manifest two folders down", body: tgz(t, []file{reg("a/b/scrapy.cfg", "")}), ct: gz, want: "neither scrapy.cfg nor scrapethis.json"},
		{name: "manifest in one of two folders", body: tgz(t, []file{reg("a/scrapy.cfg", ""), reg("b/x", "")}), ct: gz, want: "neither scrapy.cfg nor scrapethis.json"},
		{name: "manifest is a directory", body: tgz(t, []file{dir("scrapy.cfg/")}), ct: gz, want: "scrapy.cfg is not a regular file"},
		{name: "both manifests", body: tgz(t, []file{reg("scrapy.cfg", ""), reg("scrapethis.json", "")}), ct: gz, want: "both scrapy.cfg and scrapethis.json"},
		{name: "scrapy.cfg settings missing", body: tgz(t, []file{reg("scrapy.cfg", cfg)}), ct: gz, want: "settings module shop.settings: neither shop/settings.py nor shop/settings/__init__.py is in the project"},
		{name: "scrapy.cfg bad module", body: tgz(t, []file{reg("scrapy.cfg", "[settings]\ndefault = shop/settings\n")}), ct: gz, want: `[settings] default "shop/settings" is not a Python module path`},
		{name: "scrapy.cfg not ini", body: tgz(t, []file{reg("scrapy.cfg", "default = x\n")}), ct: gz, want: "scrapy.cfg: line 1 comes before any [section]"},

		{name: "manifest absolute path", body: bundle(t, `{"spiders": {"sh": "/bin/sh"}}`), ct: gz, want: `scrapethis.json: spider "sh": path "/bin/sh" is absolute`},
		{name: "manifest path leaves", body: bundle(t, `{"spiders": {"up": "../run.sh"}}`), ct: gz, want: `scrapethis.json: spider "up": path "../run.sh" leaves the project`},
		{name: "manifest path missing", body: bundle(t, `{"spiders": {"gone": "bin/gone.sh"}}`), ct: gz, want: `scrapethis.json: spider "gone": "bin/gone.sh" is not in the archive`},
		{name: "manifest path a directory", body: bundle(t, `{"spiders": {"d": "bin"}}`), ct: gz, want: `scrapethis.json: spider "d": "bin" is not a regular file`},
		{name: "manifest path a symlink", body: bundle(t, `{"spiders": {"l": "link.sh"}}`), ct: gz, want: `scrapethis.json: spider "l": "link.sh" is not a regular file`},
		{name: "not executable", body: bundle(t, `{"spiders": {"data": "data.txt"}}`), ct: gz, want: `scrapethis.json: spider "data": "data.txt" is not executable`},
		{name: "zip without unix modes", body: zipOf(t, "", zipFile{name: "scrapethis.json", body: `{"spiders": {"run": "run.sh"}}`}, zipFile{name: "run.sh"}), ct: zp, want: `"run.sh" is not executable`},
		{name: "manifest bad name", body: bundle(t, `{"spiders": {"-rf": "bin/run.sh"}}`), ct: gz, want: `scrapethis.json: spider name "-rf" is not valid`},
		{name: "manifest duplicate name", body: bundle(t, `{"spiders": {"a": "bin/run.sh", "a": "bin/run.sh"}}`), ct: gz, want: `scrapethis.json names spider "a" twice`},
		{name: "manifest no spiders", body: bundle(t, `{"spiders": {}}`), ct: gz, want: "scrapethis.json lists no spiders"},
		{name: "manifest spiders missing", body: bundle(t, `{}`), ct: gz, want: `scrapethis.json has no "spiders"`},
		{name: "manifest spiders a list", body: bundle(t, `{"spiders": ["bin/run.sh"]}`), ct: gz, want: `"spiders" must be an object of spider name to path`},
		{name: "manifest path not a string", body: bundle(t, `{"spiders": {"a": 1}}`), ct: gz, want: `spider "a": the path must be a string`},
		{name: "manifest unknown field", body: bundle(t, `{"spiderz": {}}`), ct: gz, want: `scrapethis.json is not valid: json: unknown field "spiderz"`},
		{name: "manifest not json", body: bundle(t, `spiders: x`), ct: gz, want: "scrapethis.json is not valid"},
		{name: "manifest trailing data", body: bundle(t, `{"spiders": {"a": "bin/run.sh"}} {}`), ct: gz, want: "scrapethis.json has more after its object"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := archive.Check(context.Background(), bytes.NewReader(tc.body), int64(len(tc.body)), tc.ct, tc.lim)
			assertRefused(t, err, tc.code, tc.want)
			// Extract refuses alike and leaves nothing behind.
			parent := t.TempDir()
			dest := filepath.Join(parent, "dest")
			_, err = archive.Extract(context.Background(), bytes.NewReader(tc.body), int64(len(tc.body)), tc.ct, tc.lim, dest)
			assertRefused(t, err, tc.code, tc.want)
			if names := list(t, parent); len(names) != 0 {
				t.Fatalf("a refused Extract left %v", names)
			}
		})
	}
}

func assertRefused(t *testing.T, err error, code, want string) {
	t.Helper()
	if code == "" {
		code = scrapethis.EInvalid
	}
	if err == nil {
		t.Fatalf("accepted; want %q", want)
	}
	if got := scrapethis.ErrorCode(err); got != code {
		t.Fatalf("code %q, want %q (%v)", got, code, err)
	}
	if msg := scrapethis.ErrorMessage(err); !strings.Contains(msg, want) {
		t.Fatalf("message %q does not say %q", msg, want)
	}
}

// bundle is a bundle archive with the given manifest.
func bundle(t testing.TB, manifest string) []byte {
	return tgz(t, []file{
		reg("scrapethis.json", manifest), dir("bin/"), exe("bin/run.sh", "#!/bin/sh\necho '{}'\n"),
		reg("data.txt", "x"), symlink("link.sh", "bin/run.sh"),
	})
}

func list(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func TestDefaultLimitGzipBomb(t *testing.T) {
	t.Parallel()
	// 21 entries of 10 MiB of zeros in under 1 MiB: the first 20 fill the
	// default 200 MiB, the 21st is one too many. Built cheaply as a
	// multistream gzip: one compressed MiB of zeros, repeated.
	header := func(name string, size int64) []byte {
		var b bytes.Buffer
		tar.NewWriter(&b).WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: size})
		return gzipOf(t, b.Bytes())
	}
	mib := gzipOf(t, make([]byte, 1<<20))
	body := header("scrapy.cfg", 0)
	for i := range 21 {
		body = append(body, header(fmt.Sprintf("bomb%02d", i), 10<<20)...)
		body = append(body, bytes.Repeat(mib, 10)...)
	}
	body = append(body, gzipOf(t, make([]byte, 1024))...)
	if len(body) > 1<<20 {
		t.Fatalf("bomb of %d bytes", len(body))
	}
	_, err := archive.Check(context.Background(), bytes.NewReader(body), int64(len(body)), gz, archive.Limits{})
	assertRefused(t, err, "", `the archive unpacks to more than 200 MiB (entry "bomb20")`)
}

func TestContentTypes(t *testing.T) {
	t.Parallel()
	tg := tgz(t, scrapyFiles())
	zb := zipOf(t, "", zipFile{name: "scrapy.cfg"})
	for _, tc := range []struct {
		ct   string
		body []byte
		want archive.Format
	}{
		{"application/gzip", tg, archive.FormatTarGz},
		{"application/x-gzip", tg, archive.FormatTarGz},
		{"application/x-tar+gzip", tg, archive.FormatTarGz},
		{"Application/GZIP; charset=binary", tg, archive.FormatTarGz},
		{"application/zip", zb, archive.FormatZip},
		{"application/x-zip-compressed", zb, archive.FormatZip},
	} {
		p, err := archive.Check(context.Background(), bytes.NewReader(tc.body), int64(len(tc.body)), tc.ct, archive.Limits{})
		if err != nil {
			t.Fatalf("%s: %v", tc.ct, err)
		}
		if p.Format != tc.want {
			t.Fatalf("%s: format %s", tc.ct, p.Format)
		}
	}
}

func TestGoodProjects(t *testing.T) {
	t.Parallel()
	scrapyCfg := "# made by scrapy startproject\n[settings]\ndefault = shop.settings\n\n[deploy]\n#url = http://localhost:6800/\nproject = shop\n"
	project := func(prefix string) []file {
		return []file{
			dir(prefix), reg(prefix+"scrapy.cfg", scrapyCfg), reg(prefix+"requirements.txt", "price-parser\n"),
			dir(prefix + "wheels/"), reg(prefix+"wheels/price_parser-0.3.4-py3-none-any.whl", "PK"),
			reg(prefix+"shop/__init__.py", ""), reg(prefix+"shop/settings.py", "BOT_NAME = 'shop'\n"),
			reg(prefix+"shop/spiders/__init__.py", ""), reg(prefix+"shop/spiders/products.py", "import scrapy\n"),
		}
	}
	bundleFiles := []file{
		reg("scrapethis.json", `{"spiders": {"hello": "bin/hello.sh", "v1.world_2": "./world"}}`),
		exe("bin/hello.sh", "#!/bin/sh\n"), file{name: "world", body: "#!/bin/sh\n", mode: 0o700},
	}
	cases := []struct {
		name string
		body []byte
		ct   string
		want archive.Project
	}{
		{name: "scrapy at the root", body: tgz(t, project("")[1:]), ct: gz, want: archive.Project{
			Format: archive.FormatTarGz, Kind: archive.KindScrapy, SettingsModule: "shop.settings", ScrapyProject: "shop",
			Requirements: true, Wheels: true, Entries: 8, UnpackedBytes: int64(len(scrapyCfg) + 13 + 2 + 18 + 14)}},
		{name: "scrapy in one folder with ./", body: tgz(t, append([]file{dir("./")}, project("./shop-main/")...)), ct: gz, want: archive.Project{
			Format: archive.FormatTarGz, Kind: archive.KindScrapy, Root: "shop-main", SettingsModule: "shop.settings", ScrapyProject: "shop",
			Requirements: true, Wheels: true, Entries: 9, UnpackedBytes: int64(len(scrapyCfg) + 13 + 2 + 18 + 14)}},
		{name: "scrapy zip in one folder from Finder", body: zipOf(t, "",
			zipFile{name: "shop/", mode: fs.ModeDir | 0o755}, zipFile{name: "shop/scrapy.cfg", body: "[settings]\ndefault=shop.settings\n[deploy:prod]\nproject: shop-prod\n"},
			zipFile{name: "shop/shop/settings/__init__.py"}, zipFile{name: "__MACOSX/shop/._scrapy.cfg", body: "junk"},
		), ct: zp, want: archive.Project{
			Format: archive.FormatZip, Kind: archive.KindScrapy, Root: "shop", SettingsModule: "shop.settings", ScrapyProject: "shop-prod",
			Entries: 4, UnpackedBytes: 70}},
		{name: "bundle", body: tgz(t, bundleFiles), ct: gz, want: archive.Project{
			Format: archive.FormatTarGz, Kind: archive.KindBundle, Spiders: map[string]string{"hello": "bin/hello.sh", "v1.world_2": "world"},
			Entries: 3, UnpackedBytes: int64(len(bundleFiles[0].body) + 20)}},
		{name: "bundle zip", body: zipOf(t, "", zipFile{name: "b/scrapethis.json", body: `{"spiders": {"run": "run"}}`}, zipFile{name: "b/run", mode: 0o755}), ct: zp, want: archive.Project{
			Format: archive.FormatZip, Kind: archive.KindBundle, Root: "b", Spiders: map[string]string{"run": "run"}, Entries: 2, UnpackedBytes: 27}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p, err := archive.Check(context.Background(), bytes.NewReader(tc.body), int64(len(tc.body)), tc.ct, archive.Limits{})
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(p, tc.want) {
				t.Fatalf("project\n got %+v\nwant %+v", p, tc.want)
			}
		})
	}
}

func TestExtract(t *testing.T) {
	t.Parallel()
	body := tgz(t, []file{
		dir("proj/"), reg("proj/scrapethis.json", `{"spiders": {"run": "bin/run.sh"}}`),
		{name: "proj/bin/run.sh", body: "#!/bin/sh\n", mode: 0o4775}, // setuid, group-writable
		{name: "proj/secret.txt", body: "s", mode: 0o600},
		{name: "proj/shared/", typ: tar.TypeDir, mode: 0o1777}, // sticky, world-writable
		{name: "proj/shared/notes.txt", body: "n", mode: 0o666},
		{name: "proj/deep/a/b/c.txt", body: "c"}, // parents not in the archive
		symlink("proj/latest", "bin/run.sh"),
		symlink("proj/shared/up", "../bin"),
		hardlink("proj/bin/run2.sh", "proj/bin/run.sh"),
	})
	parent := t.TempDir()
	dest := filepath.Join(parent, "v1")
	p, err := archive.Extract(context.Background(), bytes.NewReader(body), int64(len(body)), gz, archive.Limits{}, dest)
	if err != nil {
		t.Fatal(err)
	}
	if p.Root != "proj" || p.Kind != archive.KindBundle {
		t.Fatalf("project %+v", p)
	}
	if names := list(t, parent); !reflect.DeepEqual(names, []string{"v1"}) {
		t.Fatalf("parent holds %v", names)
	}
	want := map[string]fs.FileMode{
		".":                fs.ModeDir | 0o755,
		"scrapethis.json":  0o644,
		"bin":              fs.ModeDir | 0o755,
		"bin/run.sh":       0o755,
		"bin/run2.sh":      0o755,
		"secret.txt":       0o644,
		"shared":           fs.ModeDir | 0o755,
		"shared/notes.txt": 0o644,
		"shared/up":        fs.ModeSymlink,
		"deep":             fs.ModeDir | 0o755,
		"deep/a":           fs.ModeDir | 0o755,
		"deep/a/b":         fs.ModeDir | 0o755,
		"deep/a/b/c.txt":   0o644,
		"latest":           fs.ModeSymlink,
	}
	got := map[string]fs.FileMode{}
	err = filepath.WalkDir(dest, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dest, path)
		m := fi.Mode()
		if m&fs.ModeSymlink != 0 {
			m = fs.ModeSymlink
		}
		got[filepath.ToSlash(rel)] = m
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("tree\n got %v\nwant %v", got, want)
	}
	assertContained(t, dest)
	if b, err := os.ReadFile(filepath.Join(dest, "latest")); err != nil || string(b) != "#!/bin/sh\n" {
		t.Fatalf("latest reads %q, %v", b, err)
	}
	if target, _ := os.Readlink(filepath.Join(dest, "shared/up")); target != "../bin" {
		t.Fatalf("shared/up -> %q", target)
	}
	a, _ := os.Stat(filepath.Join(dest, "bin/run.sh"))
	b, _ := os.Stat(filepath.Join(dest, "bin/run2.sh"))
	if !os.SameFile(a, b) {
		t.Fatal("the hardlink is not a hardlink")
	}
}

func TestExtractDest(t *testing.T) {
	t.Parallel()
	body := tgz(t, scrapyFiles())
	ctx := context.Background()
	parent := t.TempDir()

	empty := filepath.Join(parent, "empty")
	if err := os.Mkdir(empty, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := archive.Extract(ctx, bytes.NewReader(body), int64(len(body)), gz, archive.Limits{}, empty); err != nil {
		t.Fatalf("into an empty directory: %v", err)
	}
	if _, err := os.Stat(filepath.Join(empty, "shop/settings.py")); err != nil {
		t.Fatal(err)
	}
	// A second unpack of the same version finds it there.
	_, err := archive.Extract(ctx, bytes.NewReader(body), int64(len(body)), gz, archive.Limits{}, empty)
	if !errors.Is(err, fs.ErrExist) {
		t.Fatalf("into a full directory: %v", err)
	}
	if names := list(t, parent); !reflect.DeepEqual(names, []string{"empty"}) {
		t.Fatalf("parent holds %v", names)
	}
	ctxDone, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := archive.Extract(ctxDone, bytes.NewReader(body), int64(len(body)), gz, archive.Limits{}, filepath.Join(parent, "x")); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
	if names := list(t, parent); !reflect.DeepEqual(names, []string{"empty"}) {
		t.Fatalf("parent holds %v", names)
	}
}

// swapReader serves one archive to Open and, once swapped, another of the
// same size to Extract.
type swapReader struct{ cur []byte }

func (s *swapReader) ReadAt(p []byte, off int64) (int, error) {
	return bytes.NewReader(s.cur).ReadAt(p, off)
}

// sameSize pads the shorter zip's comment so that both have one size.
func sameSize(t *testing.T, a, b []zipFile) ([]byte, []byte) {
	za, zb := zipOf(t, "", a...), zipOf(t, "", b...)
	if d := len(zb) - len(za); d > 0 {
		za = zipOf(t, strings.Repeat(" ", d), a...)
	} else {
		zb = zipOf(t, strings.Repeat(" ", -d), b...)
	}
	if len(za) != len(zb) {
		t.Fatalf("sizes %d and %d", len(za), len(zb))
	}
	return za, zb
}

func TestExtractRevalidates(t *testing.T) {
	t.Parallel()
	good := []zipFile{{name: "scrapethis.json", body: `{"spiders": {"run": "run"}}`}, {name: "run", body: "#!/bin/sh\n", mode: 0o755}}
	for _, tc := range []struct {
		name    string
		changed []zipFile
		want    string
	}{
		{"now hostile", append(good[:2:2], zipFile{name: "l", body: "../../..", mode: fs.ModeSymlink | 0o777}), `symlink "l" points outside`},
		{"now another project", []zipFile{good[0], {name: "run", body: "#!/bin/sh\nexit 1\n", mode: 0o755}}, "the archive changed since it was opened"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			before, after := sameSize(t, good, tc.changed)
			r := &swapReader{cur: before}
			a, err := archive.Open(context.Background(), r, int64(len(before)), zp, archive.Limits{})
			if err != nil {
				t.Fatal(err)
			}
			r.cur = after
			parent := t.TempDir()
			err = a.Extract(context.Background(), filepath.Join(parent, "v"))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Extract of a changed archive: %v; want %q", err, tc.want)
			}
			if names := list(t, parent); len(names) != 0 {
				t.Fatalf("parent holds %v", names)
			}
		})
	}
}

func TestLimitsAreInclusive(t *testing.T) {
	t.Parallel()
	// 10 entries and exactly 1 MiB unpacked pass limits of 10 and 1 MiB.
	files := scrapyFiles()
	used := len(cfg) + len("BOT_NAME = 'shop'\n")
	files = append(files, reg("fill.bin", string(make([]byte, 1<<20-used))))
	for i := len(files); i < 10; i++ {
		files = append(files, dir(strings.Repeat("d", i)+"/"))
	}
	body := tgz(t, files)
	lim := archive.Limits{MaxUnpackedBytes: 1 << 20, MaxEntries: 10}
	p, err := archive.Check(context.Background(), bytes.NewReader(body), int64(len(body)), gz, lim)
	if err != nil {
		t.Fatal(err)
	}
	if p.Entries != 10 || p.UnpackedBytes != 1<<20 {
		t.Fatalf("entries %d, bytes %d", p.Entries, p.UnpackedBytes)
	}
	lim.MaxEntries, lim.MaxUnpackedBytes = 9, 1<<20
	if _, err := archive.Check(context.Background(), bytes.NewReader(body), int64(len(body)), gz, lim); err == nil {
		t.Fatal("10 entries passed a limit of 9")
	}
	lim.MaxEntries, lim.MaxUnpackedBytes = 10, 1<<20-1
	if _, err := archive.Check(context.Background(), bytes.NewReader(body), int64(len(body)), gz, lim); err == nil {
		t.Fatal("1 MiB passed a limit of 1 MiB - 1")
	}
	lim.MaxUnpackedBytes, lim.MaxArchiveBytes = 1<<20, int64(len(body))
	if _, err := archive.Check(context.Background(), bytes.NewReader(body), int64(len(body)), gz, lim); err != nil {
		t.Fatalf("an archive of exactly the upload limit: %v", err)
	}
}
