package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/scrapethis/scrapethis/api"
	"github.com/scrapethis/scrapethis/archive"
	"github.com/scrapethis/scrapethis/config"
	"github.com/scrapethis/scrapethis/internal/testenv"
)

func copyTree(t *testing.T, src, name string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), name)
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), data, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

var demoPath = filepath.Join("..", "..", demoProjectDir)

// TestDeployEndToEnd deploys the demo project and others with the CLI
// against the real API on a real database.
func TestDeployEndToEnd(t *testing.T) {
	t.Parallel()
	p := setupPlatform(t, nil)
	ctx := context.Background()

	// The demo project, named by its scrapy.cfg, deployed from its own
	// directory with its .git-like clutter left out.
	dir := copyTree(t, demoPath, "checkout")
	writeTree(t, dir, map[string]string{
		".git/HEAD": "ref: refs/heads/main\n", "quotes/__pycache__/settings.cpython-311.pyc": "junk",
		".venv/pyvenv.cfg": "home = /usr/bin\n",
	})
	packed, err := archive.Pack(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(packed)
	out := p.mustCLI("deploy", dir)
	var id string
	if lines := strings.Split(out, "\n"); len(lines) > 1 && len(strings.Fields(lines[1])) == 2 {
		id = strings.Fields(lines[1])[1]
	}
	if want := fmt.Sprintf("deployed quotes v1\n  id       %s\n  sha256   %x\n  spiders  demo_quotes\n", id, sum); id == "" || out != want {
		t.Fatalf("deploy printed %q, want %q", out, want)
	}
	v, err := p.db.Version(ctx, p.userID, "quotes", "v1")
	if err != nil || v.ID != id || string(v.Status) != versionReady || v.Spiders["demo_quotes"] != "quotes/spiders/quotes.py" {
		t.Fatalf("stored version %+v, %v", v, err)
	}
	sp, err := p.db.SpiderByName(ctx, p.userID, "demo_quotes")
	if err != nil || sp.Project == nil || *sp.Project != "quotes" {
		t.Fatalf("the deployed spider %+v, %v", sp, err)
	}

	// The same bytes again: the same version, nothing new.
	if out := p.mustCLI("deploy", dir, "--label", "ignored"); !strings.HasPrefix(out, "quotes v1 is already deployed (same sha256)") || !strings.Contains(out, id) {
		t.Fatalf("second deploy printed %q", out)
	}
	// Changed code, a label of our own, flags before DIR.
	writeTree(t, dir, map[string]string{"quotes/settings.py": "BOT_NAME = 'quotes'\nSPIDER_MODULES = ['quotes.spiders']\nQUOTES_SOURCE = 'v2'\n"})
	if out := p.mustCLI("deploy", "--label", "release-2", dir); !strings.HasPrefix(out, "deployed quotes release-2\n") {
		t.Fatalf("deploy of changed code printed %q", out)
	}
	// A bundle, named by --project.
	bundle := filepath.Join(t.TempDir(), "bundle-dir")
	writeTree(t, bundle, map[string]string{"scrapethis.json": `{"spiders": {"hello": "bin/hello"}}`})
	writeTree(t, bundle, map[string]string{"bin/hello": "#!/bin/sh\necho '{}'\n"})
	if err := os.Chmod(filepath.Join(bundle, "bin", "hello"), 0o755); err != nil {
		t.Fatal(err)
	}
	if out := p.mustCLI("deploy", bundle, "--project", "tools"); !strings.HasPrefix(out, "deployed tools v1\n") || !strings.HasSuffix(out, "  spiders  hello\n") {
		t.Fatalf("bundle deploy printed %q", out)
	}

	// Failures: the API's reason, and no output on stdout.
	broken := copyTree(t, demoPath, "broken")
	writeTree(t, broken, map[string]string{
		"scrapy.cfg":                 "[settings]\ndefault = quotes.settings\n",
		"quotes/spiders/quotes.py":   "import scrapy\nimport no_such_module\n",
		"quotes/spiders/__init__.py": "",
	})
	clash := copyTree(t, demoPath, "clash")
	writeTree(t, clash, map[string]string{"scrapy.cfg": "[settings]\ndefault = quotes.settings\n"})
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"deploy", broken}, "version v1 of broken failed: scrapy list failed: spider module quotes.spiders.quotes (ModuleNotFoundError: No module named 'no_such_module') fails to import"},
		{[]string{"deploy", clash}, `version v1 of clash failed: spider name "demo_quotes" is taken by project quotes`},
		{[]string{"deploy", "--label", "not a label", demoPath}, `400 Bad Request: Invalid label "not a label"`},
		{[]string{"deploy", "--project", "slow-one", "--timeout", "1ns", demoPath}, "version v1 of slow-one is still building: not ready after --timeout 1ns"},
	} {
		out, err := p.cli(tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) || out != "" {
			t.Errorf("%v: err %v, stdout %q; want an error saying %q", tc.args, err, out, tc.want)
		}
	}
	// The same failed bytes again fail again, saying so.
	if _, err := p.cli("deploy", broken); err == nil || !strings.Contains(err.Error(), "version v1 of broken (deployed before with the same sha256) failed") {
		t.Errorf("failed again: %v", err)
	}
}

// TestDevDeploysDemo: `scrapethis dev` deploys the demo project once, the
// first time the user has no project of its name.
func TestDevDeploysDemo(t *testing.T) {
	t.Parallel()
	p := setupPlatform(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := newClient(p.url, p.key)
	log := testenv.Log(t, 0)
	var out bytes.Buffer
	deployDemo(ctx, c, demoPath, log, &out)
	if got := out.String(); got != "deployed the demo project quotes v1 from "+demoPath+": spiders demo_quotes\n" {
		t.Fatalf("first start printed %q", got)
	}
	out.Reset()
	deployDemo(ctx, c, demoPath, log, &out)
	deployDemo(ctx, c, filepath.Join(t.TempDir(), "absent"), log, &out)
	if out.Len() != 0 {
		t.Fatalf("later starts printed %q", out.String())
	}
	if vs, err := p.db.Versions(ctx, p.userID, "quotes"); err != nil || len(vs) != 1 {
		t.Fatalf("versions %v, %v", vs, err)
	}
}

// TestDeployOverLimit: the server's configured limits (from the
// environment, as `scrapethis dev` sets them) come back as its messages.
func TestDeployOverLimit(t *testing.T) {
	t.Parallel()
	cfg, err := config.Load(func(k string) string {
		return map[string]string{"SCRAPETHIS_UPLOAD_MAX_MB": "1", "SCRAPETHIS_ARCHIVE_MAX_ENTRIES": "5"}[k]
	})
	if err != nil {
		t.Fatal(err)
	}
	p := setupPlatform(t, func(s *api.Server) { s.ArchiveLimits = archiveLimits(cfg) })
	big := copyTree(t, demoPath, "big")
	noise := make([]byte, 3<<20)
	rand.Read(noise)
	writeTree(t, big, map[string]string{"data/noise.bin": string(noise)})
	for _, tc := range []struct {
		dir, want string
	}{
		{big, "413 Request Entity Too Large: Archive is larger than the upload limit (1 MiB)"},
		{demoPath, "400 Bad Request: the archive has more than 5 entries"},
	} {
		if out, err := p.cli("deploy", tc.dir); err == nil || !strings.Contains(err.Error(), tc.want) || out != "" {
			t.Errorf("deploy %s: err %v, stdout %q; want %q", tc.dir, err, out, tc.want)
		}
	}
}
