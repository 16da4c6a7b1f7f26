package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

// writeTree writes files (slash-separated names relative to dir) into dir.
func writeTree(t *testing.T, dir string, files map[string]string) {
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

func scrapyTree(cfg string) map[string]string {
	return map[string]string{
		"scrapy.cfg":               cfg,
		"shop/__init__.py":         "",
		"shop/settings.py":         "BOT_NAME = 'shop'\nSPIDER_MODULES = ['shop.spiders']\n",
		"shop/spiders/__init__.py": "",
	}
}

func TestDeployProjectName(t *testing.T) {
	t.Parallel()
	withDeploy := "[settings]\ndefault = shop.settings\n\n[deploy]\nproject = storefront\n"
	noDeploy := "[settings]\ndefault = shop.settings\n"
	named := "[settings]\ndefault = shop.settings\n\n[deploy:prod]\nurl = http://x\nproject = named-target\n"
	badDeploy := "[settings]\ndefault = shop.settings\n\n[deploy]\nproject = not valid!\n"
	for _, tc := range []struct {
		name, dirName, cfg, flag string
		want, wantErr            string
	}{
		{name: "scrapy.cfg's [deploy] project", dirName: "checkout", cfg: withDeploy, want: "storefront"},
		{name: "a [deploy:target] project", dirName: "checkout", cfg: named, want: "named-target"},
		{name: "--project wins over scrapy.cfg", dirName: "checkout", cfg: withDeploy, flag: "mine", want: "mine"},
		{name: "the directory's name without [deploy]", dirName: "checkout.v2", cfg: noDeploy, want: "checkout.v2"},
		{name: "a directory name that is no project name", dirName: "my shop", cfg: noDeploy, wantErr: "pass --project NAME"},
		{name: "an invalid [deploy] project", dirName: "checkout", cfg: badDeploy, wantErr: `scrapy.cfg's [deploy] project "not valid!" is not a valid project name`},
		{name: "an invalid --project", dirName: "checkout", cfg: withDeploy, flag: "-x", wantErr: `project name "-x" is not valid`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := filepath.Join(t.TempDir(), tc.dirName)
			writeTree(t, dir, scrapyTree(tc.cfg))
			data, got, err := packProject(context.Background(), dir, tc.flag)
			switch {
			case tc.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want one saying %q", err, tc.wantErr)
				}
			case err != nil:
				t.Fatal(err)
			case got != tc.want:
				t.Fatalf("project name %q, want %q", got, tc.want)
			case len(data) == 0:
				t.Fatal("no archive")
			}
		})
	}
}

// TestDeployRefusedLocally: a directory the API would refuse fails before
// anything is sent, with the message the API would answer.
func TestDeployRefusedLocally(t *testing.T) {
	t.Parallel()
	var requests atomic.Int32
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		http.Error(w, `{"error":"should not be called"}`, http.StatusTeapot)
	}))
	defer hs.Close()
	env := map[string]string{"SCRAPETHIS_URL": hs.URL, "SCRAPETHIS_API_KEY": "st_test"}
	getenv := func(k string) string { return env[k] }

	for _, tc := range []struct {
		name  string
		files map[string]string
		want  string
	}{
		{"no scrapy.cfg", map[string]string{"spiders/shop.py": "import scrapy\n", "README": "hi\n"},
			"neither scrapy.cfg nor scrapethis.json at the archive's root or inside its one top-level folder"},
		{"a settings module that is not there", map[string]string{"scrapy.cfg": "[settings]\ndefault = gone.settings\n"},
			"scrapy.cfg: settings module gone.settings: neither gone/settings.py nor gone/settings/__init__.py is in the project"},
		{"both markers", map[string]string{"scrapy.cfg": "", "scrapethis.json": `{"spiders":{}}`},
			"the archive has both scrapy.cfg and scrapethis.json"},
	} {
		dir := filepath.Join(t.TempDir(), "proj")
		writeTree(t, dir, tc.files)
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), []string{"deploy", dir}, getenv, &stdout, &stderr)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), dir+" cannot be deployed: ") {
			t.Errorf("%s: err %v, want %q", tc.name, err, tc.want)
		}
		if stdout.Len() != 0 {
			t.Errorf("%s: stdout %q", tc.name, stdout.String())
		}
	}
	if n := requests.Load(); n != 0 {
		t.Fatalf("%d requests reached the server", n)
	}
}

func TestDeployFlags(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args    []string
		wantErr string
	}{
		{[]string{"a", "b"}, "deploy takes one directory, got 2 arguments"},
		{[]string{"--timeout", "0s", "."}, "--timeout must be positive"},
		{[]string{"--nope"}, "flag provided but not defined: -nope"},
		{[]string{filepath.Join(t.TempDir(), "missing")}, "no such file or directory"},
	} {
		var out, errOut bytes.Buffer
		err := run(context.Background(), append([]string{"deploy"}, tc.args...), func(string) string { return "" }, &out, &errOut)
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("deploy %q: err %v, want %q", tc.args, err, tc.wantErr)
		}
	}
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"deploy", "-h"}, func(string) string { return "" }, &out, &errOut); err != nil {
		t.Fatalf("deploy -h: %v", err)
	}
	if !strings.Contains(errOut.String(), "usage: scrapethis deploy [DIR]") || !strings.Contains(errOut.String(), "-label") {
		t.Fatalf("deploy -h printed %q", errOut.String())
	}
}

func TestParseInterleaved(t *testing.T) {
	t.Parallel()
	var d deployment
	for _, tc := range []struct {
		args         []string
		pos          string
		project, lab string
	}{
		{[]string{"dir", "--label", "x", "--project=p"}, "dir", "p", "x"},
		{[]string{"--label", "x", "dir"}, "dir", "", "x"},
		{[]string{"--project", "p", "--", "--label"}, "--label", "p", ""},
	} {
		d = deployment{}
		fs := newDeployFlags(&d, &bytes.Buffer{})
		pos, err := parseInterleaved(fs, tc.args)
		if err != nil || strings.Join(pos, " ") != tc.pos || d.project != tc.project || d.label != tc.lab {
			t.Errorf("%q: pos %q project %q label %q err %v", tc.args, pos, d.project, d.label, err)
		}
	}
}

func TestClientFromEnv(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		env     map[string]string
		base    string
		wantErr string
	}{
		{map[string]string{"SCRAPETHIS_API_KEY": "k"}, "http://127.0.0.1:8080", ""},
		{map[string]string{"SCRAPETHIS_API_KEY": "k", "SCRAPETHIS_URL": "https://st.example.com/"}, "https://st.example.com", ""},
		{map[string]string{}, "", "SCRAPETHIS_API_KEY is not set"},
		{map[string]string{"SCRAPETHIS_API_KEY": "k", "SCRAPETHIS_URL": "st.example.com"}, "", "is not an http(s) URL"},
	} {
		c, err := clientFromEnv(func(k string) string { return tc.env[k] })
		switch {
		case tc.wantErr != "":
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%v: err %v, want %q", tc.env, err, tc.wantErr)
			}
		case err != nil:
			t.Errorf("%v: %v", tc.env, err)
		case c.base != tc.base || c.key != "k":
			t.Errorf("%v: base %q key %q", tc.env, c.base, c.key)
		}
	}
}

// TestDemoProjectPacks: the demo project `make run` deploys passes the
// API's checks and deploys as "quotes".
func TestDemoProjectPacks(t *testing.T) {
	t.Parallel()
	_, name, err := packProject(context.Background(), filepath.Join("..", "..", demoProjectDir), "")
	if err != nil || name != "quotes" {
		t.Fatalf("demo project: name %q, err %v", name, err)
	}
}
