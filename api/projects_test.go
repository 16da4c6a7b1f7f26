package api_test

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/scrapethis/scrapethis/archive"
)

// project writes a small Scrapy project and returns its packed tar.gz.
func project(t *testing.T, name, marker string) []byte {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{
		"scrapy.cfg":                  "[settings]\ndefault = " + name + ".settings\n\n[deploy]\nproject = " + name + "\n",
		name + "/__init__.py":         "",
		name + "/settings.py":         "BOT_NAME = '" + name + "'\nSPIDER_MODULES = ['" + name + ".spiders']\n# " + marker + "\n",
		name + "/spiders/__init__.py": "",
		name + "/spiders/one.py":      "import scrapy\nclass One(scrapy.Spider):\n    name = 'one'\n",
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
	data, err := archive.Pack(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func (b *bundle) upload(key, path, contentType string, body []byte) response {
	b.t.Helper()
	req, err := http.NewRequest("POST", b.url+path, bytes.NewReader(body))
	if err != nil {
		b.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", contentType)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer res.Body.Close()
	data, _ := io.ReadAll(res.Body)
	return response{status: res.StatusCode, header: res.Header, body: data}
}

type versionBody struct {
	ID, Project, Label, SHA256, Status, Kind string
	SizeBytes                                int64 `json:"size_bytes"`
	Error                                    *string
	Spiders                                  []string
	ReadyAt                                  *string `json:"ready_at"`
}

func TestUploadVersions(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, key := b.user("deployer@example.com")
	_, other := b.user("other@example.com")
	v1Bytes := project(t, "shop", "one")

	var v1 versionBody
	b.mustStatus(b.upload(key, "/api/v1/projects/shop/versions", "application/gzip", v1Bytes), http.StatusCreated).json(t, &v1)
	if v1.Label != "v1" || v1.Status != "building" || v1.Project != "shop" || v1.Kind != "scrapy" ||
		v1.SizeBytes != int64(len(v1Bytes)) || len(v1.SHA256) != 64 || v1.Spiders != nil || v1.ReadyAt != nil {
		t.Fatalf("first version: %+v", v1)
	}
	// The same bytes again: the same version, 200.
	var again versionBody
	b.mustStatus(b.upload(key, "/api/v1/projects/shop/versions", "application/gzip", v1Bytes), http.StatusOK).json(t, &again)
	if again.ID != v1.ID {
		t.Fatalf("same bytes gave version %s, want %s", again.ID, v1.ID)
	}
	// An inspection task is queued for it, once.
	if _, err := b.queuer.Inspector().GetTaskInfo("versions", "inspect:"+v1.ID); err != nil {
		t.Fatalf("inspection task: %v", err)
	}
	var v2, named versionBody
	b.mustStatus(b.upload(key, "/api/v1/projects/shop/versions", "application/gzip", project(t, "shop", "two")), http.StatusCreated).json(t, &v2)
	b.mustStatus(b.upload(key, "/api/v1/projects/shop/versions?label=release-3", "application/gzip", project(t, "shop", "three")), http.StatusCreated).json(t, &named)
	if v2.Label != "v2" || named.Label != "release-3" {
		t.Fatalf("labels %q %q", v2.Label, named.Label)
	}
	msg := b.mustStatus(b.upload(key, "/api/v1/projects/shop/versions?label=v2", "application/gzip", project(t, "shop", "four")), http.StatusConflict).errorMessage(t)
	if !strings.Contains(msg, "v2") {
		t.Fatalf("label conflict message %q", msg)
	}

	var list []versionBody
	b.mustStatus(b.do("GET", "/api/v1/projects/shop/versions", key, ""), http.StatusOK).json(t, &list)
	if len(list) != 3 || list[0].ID != named.ID || list[2].ID != v1.ID {
		t.Fatalf("versions newest first: %+v", list)
	}
	var byLabel versionBody
	b.mustStatus(b.do("GET", "/api/v1/projects/shop/versions/v2", key, ""), http.StatusOK).json(t, &byLabel)
	b.mustStatus(b.do("GET", "/api/v1/projects/shop/versions/"+v2.ID, key, ""), http.StatusOK)
	if byLabel.ID != v2.ID {
		t.Fatalf("version by label: %+v", byLabel)
	}
	var proj struct {
		Name          string
		LatestVersion *versionBody `json:"latest_version"`
	}
	b.mustStatus(b.do("GET", "/api/v1/projects/shop", key, ""), http.StatusOK).json(t, &proj)
	if proj.Name != "shop" || proj.LatestVersion != nil {
		t.Fatalf("project before any version is ready: %+v", proj)
	}

	// Another user sees none of it, and their own upload of the same name
	// is a project of their own.
	b.mustStatus(b.do("GET", "/api/v1/projects/shop", other, ""), http.StatusNotFound)
	b.mustStatus(b.do("GET", "/api/v1/projects/shop/versions", other, ""), http.StatusNotFound)
	b.mustStatus(b.do("GET", "/api/v1/projects/shop/versions/"+v1.ID, other, ""), http.StatusNotFound)
	b.mustStatus(b.do("DELETE", "/api/v1/projects/shop", other, ""), http.StatusNotFound)
	var theirs versionBody
	b.mustStatus(b.upload(other, "/api/v1/projects/shop/versions", "application/gzip", v1Bytes), http.StatusCreated).json(t, &theirs)
	if theirs.ID == v1.ID || theirs.Label != "v1" {
		t.Fatalf("other user's upload: %+v", theirs)
	}
	var projects []struct{ Name string }
	b.mustStatus(b.do("GET", "/api/v1/projects", key, ""), http.StatusOK).json(t, &projects)
	if len(projects) != 1 || projects[0].Name != "shop" {
		t.Fatalf("projects: %+v", projects)
	}
}

func TestUploadRefusals(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, key := b.user("refused@example.com")

	var zbuf bytes.Buffer
	zw := zip.NewWriter(&zbuf)
	f, _ := zw.Create("README.md")
	f.Write([]byte("no project here"))
	zw.Close()

	for _, tc := range []struct {
		name, path, contentType string
		body                    []byte
		status                  int
		want                    string
	}{
		{"not an archive", "/api/v1/projects/p/versions", "application/gzip", []byte("hello"), 400, "tar.gz"},
		{"empty", "/api/v1/projects/p/versions", "application/gzip", nil, 400, "Empty body"},
		{"no project file", "/api/v1/projects/p/versions", "application/zip", zbuf.Bytes(), 400, "scrapy.cfg"},
		{"bad project name", "/api/v1/projects/-bad/versions", "application/gzip", project(t, "shop", "x"), 400, "project name"},
		{"bad label", "/api/v1/projects/p/versions?label=a%20b", "application/gzip", project(t, "shop", "x"), 400, "label"},
		{"too large", "/api/v1/projects/p/versions", "application/gzip", bytes.Repeat([]byte{0}, 50<<20+1), 413, "upload limit"},
	} {
		r := b.upload(key, tc.path, tc.contentType, tc.body)
		if r.status != tc.status {
			t.Errorf("%s: status %d, want %d: %s", tc.name, r.status, tc.status, r.body)
			continue
		}
		if msg := r.errorMessage(t); !strings.Contains(strings.ToLower(msg), strings.ToLower(tc.want)) {
			t.Errorf("%s: message %q does not mention %q", tc.name, msg, tc.want)
		}
	}
	// Nothing was stored for any of them.
	var n int
	if err := b.sql.Get(&n, `SELECT (SELECT count(*) FROM projects) + (SELECT count(*) FROM versions) + (SELECT count(*) FROM archives)`); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("%d rows stored by refused uploads", n)
	}
}

func TestDeployedSpiderJobs(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	uid, key := b.user("runner@example.com")
	_, other := b.user("stranger@example.com")
	var v1, v2 versionBody
	b.mustStatus(b.upload(key, "/api/v1/projects/shop/versions", "application/gzip", project(t, "shop", "1")), http.StatusCreated).json(t, &v1)

	// No ready version yet: no job.
	plain := b.spider(key, "plain", "plain.sh")
	r := b.do("POST", "/api/v1/jobs", key, `{"spider_name": "one"}`)
	b.mustStatus(r, http.StatusNotFound)

	// The worker's inspection finds spiders one and two.
	if _, err := b.db.ReadyVersion(ctx, v1.ID, map[string]string{"one": "shop/spiders/one.py", "two": "shop/spiders/two.py"}); err != nil {
		t.Fatal(err)
	}
	var spiders []struct {
		ID, Name string
		RepoPath string  `json:"repo_path"`
		Project  *string `json:"project"`
	}
	b.mustStatus(b.do("GET", "/api/v1/spiders", key, ""), http.StatusOK).json(t, &spiders)
	found := map[string]string{}
	for _, s := range spiders {
		p := ""
		if s.Project != nil {
			p = *s.Project
		}
		found[s.Name] = p + ":" + s.RepoPath
	}
	if found["one"] != "shop:shop/spiders/one.py" || found["two"] != "shop:shop/spiders/two.py" || found["plain"] != ":plain.sh" {
		t.Fatalf("spiders: %v", found)
	}
	var got versionBody
	b.mustStatus(b.do("GET", "/api/v1/projects/shop/versions/v1", key, ""), http.StatusOK).json(t, &got)
	if got.Status != "ready" || strings.Join(got.Spiders, ",") != "one,two" || got.ReadyAt == nil {
		t.Fatalf("ready version: %+v", got)
	}

	// v2 drops spider two and is ready too.
	b.mustStatus(b.upload(key, "/api/v1/projects/shop/versions", "application/gzip", project(t, "shop", "2")), http.StatusCreated).json(t, &v2)
	if _, err := b.db.ReadyVersion(ctx, v2.ID, map[string]string{"one": "shop/spiders/one.py"}); err != nil {
		t.Fatal(err)
	}

	type jobBody struct {
		ID       string
		Project  *string
		Version  *struct{ ID, Label string }
		Settings map[string]any
		MemoryMB *int `json:"memory_mb"`
		Stats    json.RawMessage
	}
	getJob := func(id string) jobBody {
		var j jobBody
		b.mustStatus(b.do("GET", "/api/v1/jobs/"+id, key, ""), http.StatusOK).json(t, &j)
		return j
	}
	latest := getJob(b.job(key, `{"spider_name": "one", "settings": {"DOWNLOAD_DELAY": 0.5, "USER_AGENT": "x"}, "memory_mb": 300}`))
	if latest.Project == nil || *latest.Project != "shop" || latest.Version == nil || latest.Version.Label != "v2" ||
		latest.Settings["USER_AGENT"] != "x" || latest.MemoryMB == nil || *latest.MemoryMB != 300 || string(latest.Stats) != "null" {
		t.Fatalf("job of the latest version: %+v", latest)
	}
	pinned := getJob(b.job(key, `{"spider_name": "one", "version": "v1"}`))
	if pinned.Version == nil || pinned.Version.ID != v1.ID {
		t.Fatalf("job pinned to v1: %+v", pinned)
	}
	byID := getJob(b.job(key, `{"spider_name": "one", "version": "`+v1.ID+`"}`))
	if byID.Version == nil || byID.Version.Label != "v1" {
		t.Fatalf("job pinned by id: %+v", byID)
	}
	plainJob := getJob(b.job(key, `{"spider_id": "`+plain+`"}`))
	if plainJob.Project != nil || plainJob.Version != nil || len(plainJob.Settings) != 0 {
		t.Fatalf("spiders-dir job: %+v", plainJob)
	}

	for _, tc := range []struct {
		body   string
		status int
		want   string
	}{
		{`{"spider_name": "one", "version": "v9"}`, 404, "v9"},
		{`{"spider_name": "one", "settings": {"lower": 1}}`, 400, "setting"},
		{`{"spider_name": "one", "settings": [1]}`, 400, "settings"},
		{`{"spider_name": "one", "memory_mb": 0}`, 400, "memory_mb"},
		{`{"spider_name": "one", "memory_mb": 999999}`, 400, "memory_mb"},
		{`{"spider_id": "` + plain + `", "settings": {"A": 1}}`, 400, "Scrapy"},
		{`{"spider_id": "` + plain + `", "version": "v1"}`, 400, "not deployed"},
		{`{"spider_name": "two"}`, 404, "Spider not found"}, // gone with v2
	} {
		r := b.do("POST", "/api/v1/jobs", key, tc.body)
		if r.status != tc.status || !strings.Contains(r.errorMessage(t), tc.want) {
			t.Errorf("%s: %d %s, want %d mentioning %q", tc.body, r.status, r.body, tc.status, tc.want)
		}
	}
	// Another user can neither start nor see them.
	b.mustStatus(b.do("POST", "/api/v1/jobs", other, `{"spider_name": "one"}`), http.StatusNotFound)

	// A project with unfinished jobs cannot be deleted; cancelled, it can.
	b.mustStatus(b.do("DELETE", "/api/v1/projects/shop", key, ""), http.StatusConflict)
	if _, err := b.sql.Exec(`UPDATE jobs SET status = 'cancelled' WHERE user_id = $1`, uid); err != nil {
		t.Fatal(err)
	}
	b.mustStatus(b.do("DELETE", "/api/v1/projects/shop", key, ""), http.StatusOK)
	b.mustStatus(b.do("GET", "/api/v1/projects/shop", key, ""), http.StatusNotFound)
	b.mustStatus(b.do("POST", "/api/v1/jobs", key, `{"spider_name": "one"}`), http.StatusNotFound)
	var archives int
	if err := b.sql.Get(&archives, `SELECT count(*) FROM archives`); err != nil {
		t.Fatal(err)
	}
	if archives != 0 {
		t.Fatalf("%d archives left after the project was deleted", archives)
	}
	// Old jobs still show what they ran.
	if j := getJob(pinned.ID); j.Version == nil || j.Version.Label != "v1" {
		t.Fatalf("old job after delete: %+v", j)
	}
}

func TestSpiderNameClash(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	_, key := b.user("clash@example.com")
	b.spider(key, "one", "one.py")
	var v versionBody
	b.mustStatus(b.upload(key, "/api/v1/projects/shop/versions", "application/gzip", project(t, "shop", "1")), http.StatusCreated).json(t, &v)
	got, err := b.db.ReadyVersion(ctx, v.ID, map[string]string{"one": "shop/spiders/one.py"})
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != "failed" || got.Error == nil || !strings.Contains(*got.Error, `"one"`) || !strings.Contains(*got.Error, "spiders directory") {
		t.Fatalf("clashing version: %+v", got)
	}
	// Uploading the same bytes again retries it.
	var again versionBody
	b.mustStatus(b.upload(key, "/api/v1/projects/shop/versions", "application/gzip", project(t, "shop", "1")), http.StatusOK).json(t, &again)
	if again.ID != v.ID || again.Status != "building" || again.Error != nil {
		t.Fatalf("re-upload of a failed version: %+v", again)
	}
}

// hostileTarGz builds a tar.gz of the entries, each with a scrapy.cfg
// beside it so that only the entry itself is wrong.
func hostileTarGz(t *testing.T, entries ...*tar.Header) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	all := append([]*tar.Header{{Name: "scrapy.cfg", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len("[settings]\n"))}}, entries...)
	for _, h := range all {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Name == "scrapy.cfg" {
			tw.Write([]byte("[settings]\n"))
		} else if h.Typeflag == tar.TypeReg && h.Size > 0 {
			tw.Write(bytes.Repeat([]byte("x"), int(h.Size)))
		}
	}
	tw.Close()
	gz.Close()
	return buf.Bytes()
}

// TestHostileArchives: every refusal of C1 answers 400 naming the problem,
// and stores nothing.
func TestHostileArchives(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, key := b.user("hostile@example.com")
	many := make([]*tar.Header, 10001)
	for i := range many {
		many[i] = &tar.Header{Name: fmt.Sprintf("f/%d", i), Typeflag: tar.TypeReg, Mode: 0o644}
	}
	var bomb bytes.Buffer
	zw := zip.NewWriter(&bomb)
	f, _ := zw.Create("scrapy.cfg")
	f.Write([]byte("[settings]\n"))
	f, _ = zw.Create("zeros.bin")
	zeros := make([]byte, 1<<20)
	for i := 0; i < 201; i++ {
		f.Write(zeros)
	}
	zw.Close()
	for _, tc := range []struct {
		name        string
		contentType string
		body        []byte
		want        string
	}{
		{"absolute path", "application/gzip", hostileTarGz(t, &tar.Header{Name: "/etc/cron.d/x", Typeflag: tar.TypeReg, Mode: 0o644, Size: 1}), "absolute"},
		{"dot-dot", "application/gzip", hostileTarGz(t, &tar.Header{Name: "a/../../x", Typeflag: tar.TypeReg, Mode: 0o644, Size: 1}), ".."},
		{"link out", "application/gzip", hostileTarGz(t, &tar.Header{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "../../etc/passwd"}), "outside"},
		{"absolute link", "application/gzip", hostileTarGz(t, &tar.Header{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "/etc/passwd"}), "outside"},
		{"hard link out", "application/gzip", hostileTarGz(t, &tar.Header{Name: "h", Typeflag: tar.TypeLink, Linkname: "../x"}), "link"},
		{"device", "application/gzip", hostileTarGz(t, &tar.Header{Name: "dev", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3}), "device"},
		{"fifo", "application/gzip", hostileTarGz(t, &tar.Header{Name: "pipe", Typeflag: tar.TypeFifo}), "fifo"},
		{"too many entries", "application/gzip", hostileTarGz(t, many...), "10000 entries"},
		{"zip bomb", "application/zip", bomb.Bytes(), "200 MiB"},
	} {
		r := b.upload(key, "/api/v1/projects/hostile/versions", tc.contentType, tc.body)
		if r.status != http.StatusBadRequest {
			t.Errorf("%s: status %d: %s", tc.name, r.status, r.body)
			continue
		}
		if msg := r.errorMessage(t); !strings.Contains(msg, tc.want) {
			t.Errorf("%s: message %q does not mention %q", tc.name, msg, tc.want)
		}
	}
	var n int
	if err := b.sql.Get(&n, `SELECT (SELECT count(*) FROM projects) + (SELECT count(*) FROM versions) + (SELECT count(*) FROM archives)`); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("%d rows stored by hostile uploads", n)
	}
}
