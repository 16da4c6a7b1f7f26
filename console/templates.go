package console

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"html/template"
	"io/fs"
	"path"
	"strings"
	"time"

	"github.com/scrapethis/scrapethis"
)

// parseTemplates parses each page with the layout and the shared parts:
// templates/layout.html and templates/_*.html go with every page.
func (c *Console) parseTemplates() (map[string]*template.Template, error) {
	files, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return nil, fmt.Errorf("console templates: %w", err)
	}
	var shared, pages []string
	for _, f := range files {
		base := path.Base(f)
		if base == "layout.html" || strings.HasPrefix(base, "_") {
			shared = append(shared, f)
		} else {
			pages = append(pages, f)
		}
	}
	out := map[string]*template.Template{}
	for _, f := range pages {
		name := strings.TrimSuffix(path.Base(f), ".html")
		t, err := template.New(name).Funcs(funcs).ParseFS(templateFS, append([]string{f}, shared...)...)
		if err != nil {
			return nil, fmt.Errorf("console template %s: %w", name, err)
		}
		out[name] = t
	}
	return out, nil
}

// assetPaths names each static file by its content hash, so that a new
// build's files are never served from an old cache.
func assetPaths() (map[string]string, error) {
	entries, err := fs.ReadDir(staticFS, "static")
	if err != nil {
		return nil, fmt.Errorf("console assets: %w", err)
	}
	out := map[string]string{}
	for _, e := range entries {
		data, err := fs.ReadFile(staticFS, "static/"+e.Name())
		if err != nil {
			return nil, fmt.Errorf("console assets: %w", err)
		}
		sum := sha256.Sum256(data)
		ext := path.Ext(e.Name())
		out[e.Name()] = "/static/" + strings.TrimSuffix(e.Name(), ext) + ".v" + hex.EncodeToString(sum[:6]) + ext
	}
	return out, nil
}

func randomToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random token: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

var funcs = template.FuncMap{
	"when":     when,
	"iso":      func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
	"short":    shortID,
	"duration": duration,
	"final":    func(s scrapethis.Status) bool { return s.Final() },
	"pretty":   pretty,
	"deref":    func(s *string) string { return derefString(s) },
	"hasValue": func(s *string) bool { return s != nil && *s != "" },
	"eq2":      func(a, b any) bool { return fmt.Sprint(a) == fmt.Sprint(b) },
	"join":     strings.Join,
	"bytes":    humanBytes,
	"cell":     cell,
	"inc":      func(i int) int { return i + 1 },
	"keyStats": keyStats,
}

// keyStat is one of the Scrapy stats a person looks at first.
type keyStat struct{ Label, Value string }

// keyStats picks the stats worth a glance out of Scrapy's stats, under
// Scrapy's own names; the whole set is shown below them.
func keyStats(raw json.RawMessage) []keyStat {
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil {
		return nil
	}
	var out []keyStat
	for _, k := range []struct{ key, label string }{
		{"item_scraped_count", "Items scraped"},
		{"downloader/request_count", "Requests"},
		{"response_received_count", "Responses"},
		{"log_count/ERROR", "Errors logged"},
		{"finish_reason", "Finish reason"},
		{"elapsed_time_seconds", "Elapsed (s)"},
	} {
		if v, ok := m[k.key]; ok {
			out = append(out, keyStat{k.label, cell(v)})
		}
	}
	return out
}

// shortID is the last 8 characters of an id: ids are UUIDv7, whose first
// characters are a timestamp that jobs of the same minute share.
func shortID(id string) string { return id[max(0, len(id)-8):] }

func derefString(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// when shows a time in UTC to the second.
func when(t any) string {
	switch v := t.(type) {
	case time.Time:
		return v.UTC().Format("2006-01-02 15:04:05") + " UTC"
	case *time.Time:
		if v == nil {
			return "—"
		}
		return v.UTC().Format("2006-01-02 15:04:05") + " UTC"
	}
	return ""
}

// duration is how long a job ran (so far, for a running one).
func duration(j scrapethis.Job) string {
	if j.StartedAt == nil {
		return "—"
	}
	end := time.Now()
	if j.FinishedAt != nil {
		end = *j.FinishedAt
	}
	d := end.Sub(*j.StartedAt)
	switch {
	case d < time.Second:
		return fmt.Sprintf("%d ms", d.Milliseconds())
	case d < time.Minute:
		return fmt.Sprintf("%.1f s", d.Seconds())
	}
	return d.Round(time.Second).String()
}

// pretty indents JSON for reading; empty or null shows as "—".
func pretty(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return "—"
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, raw, "", "  "); err != nil {
		return string(raw)
	}
	return buf.String()
}

// cell shows an item's value in a table cell: strings as they are, other
// values as JSON.
func cell(v json.RawMessage) string {
	if len(v) == 0 {
		return ""
	}
	var s string
	if v[0] == '"' && json.Unmarshal(v, &s) == nil {
		return s
	}
	return string(v)
}

func humanBytes(n int64) string {
	switch {
	case n < 1<<10:
		return fmt.Sprintf("%d B", n)
	case n < 1<<20:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}
