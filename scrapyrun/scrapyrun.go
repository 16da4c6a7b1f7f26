// Package scrapyrun is the Python side of running Scrapy spiders: it owns
// an embedded runner script (runner.py), run as
//
//	PYTHON -B -c <script> --mode crawl|runspider|list [runner options] -- <scrapy argv>
//
// so that nothing needs to be on disk besides Python, Scrapy and the
// spider's code. Run builds the argv of a job (a project's spider with
// `scrapy crawl NAME`, or a single file with `scrapy runspider FILE`); List
// builds the argv that inspects a project, and ParseList reads its answer.
//
// Settings, from weakest to strongest: Scrapy's defaults, the project's
// settings.py, the spider's custom_settings, ours (LOG_LEVEL, LOG_FILE,
// TELNETCONSOLE_ENABLED, MEMUSAGE_*), the job's Settings. The feed is
// pinned above all of them by the runner: items always go to stdout as
// JSON lines, and stdout carries nothing else (what the spider prints goes
// to stderr, the log).
//
// Stats: every run (crawl and runspider) gets an extension, added to
// EXTENSIONS_BASE so a project's own EXTENSIONS still apply, that writes
// Scrapy's stats (crawler.stats.get_stats(), under Scrapy's own names) as
// one stderr line StatsPrefix+JSON every StatsInterval while the spider
// runs, and a final one once the engine stopped, carrying finish_reason and
// elapsed_time_seconds. ParseStats recognises such a line. A spider writes
// to the same stderr, so it can print such a line too: it can fake only
// the stats of its own job, and the last line wins.
//
// Errors: the runner ends a failure it understands (a settings module or
// spider module that does not import, a duplicate or bad spider name, no
// settings module) with exit status 1 and one last stderr line; LastError
// extracts it for a version's or a job's error field.
package scrapyrun

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

//go:embed runner.py
var runnerScript string

// StatsPrefix starts a stats line on a run's stderr: a record separator
// (which no Scrapy log line starts with) and a tag, then a JSON object.
const StatsPrefix = "\x1escrapethis-stats "

// MaxStatsBytes bounds the JSON object of one stats line.
const MaxStatsBytes = 64 << 10

// DefaultStatsInterval is how often a run reports its stats when
// Run.StatsInterval is zero.
const DefaultStatsInterval = 5 * time.Second

// errorPrefix starts the runner's last stderr line when it fails.
const errorPrefix = "scrapethis: error: "

// maxErrorBytes bounds what LastError returns.
const maxErrorBytes = 500

// Modes of Run.
const (
	ModeCrawl     = "crawl"
	ModeRunspider = "runspider"
)

var (
	settingKey  = regexp.MustCompile(`^[A-Z][A-Z0-9_]*$`)
	spiderName  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	moduleName  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$`)
	argumentKey = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// ValidSettingKey reports whether k may name a job's Scrapy setting.
func ValidSettingKey(k string) bool { return settingKey.MatchString(k) }

// ValidSpiderName reports whether name may name a project's spider.
func ValidSpiderName(name string) bool { return spiderName.MatchString(name) }

// Run is one spider run.
type Run struct {
	// Python is the interpreter, argv[0].
	Python string
	// Mode is ModeCrawl (a project's spider) or ModeRunspider (one file).
	Mode string
	// Spider is the spider's name (crawl) or the path of its file as the
	// process sees it (runspider).
	Spider string
	// ProjectRoot (crawl) is the project's root directory as the process
	// sees it: the directory of scrapy.cfg, put on sys.path. The process's
	// working directory is not the project but an empty, writable job
	// directory, where the runner writes a scrapy.cfg naming the settings
	// module (unless one is there), so that Scrapy's .scrapy/ lands there.
	ProjectRoot string
	// SettingsModule (crawl) is the project's settings module, such as
	// "shop.settings"; empty: the [settings] default of ProjectRoot's
	// scrapy.cfg.
	SettingsModule string
	// Args are the spider's arguments, already "-a", "key=value" pairs.
	Args []string
	// Settings are the job's Scrapy settings, applied on top of the
	// project's and ours: a string as it is, any other JSON value as its
	// compact JSON text.
	Settings map[string]json.RawMessage
	// LogLevel is Scrapy's LOG_LEVEL; empty: Scrapy's default.
	LogLevel string
	// MemoryLimitMB is the job's hard memory limit; 0: none. Otherwise
	// Scrapy gets MEMUSAGE_LIMIT_MB a little below it, so it can close the
	// spider on its own first.
	MemoryLimitMB int
	// StatsInterval is how often stats are reported while the spider runs;
	// 0: DefaultStatsInterval.
	StatsInterval time.Duration
}

// Argv returns the run's whole argv, argv[0] being Python, or an error
// naming what is wrong with the run (a bad setting key among them).
func (r Run) Argv() ([]string, error) {
	if r.Python == "" {
		return nil, errors.New("scrapyrun: no Python interpreter")
	}
	interval := r.StatsInterval
	if interval == 0 {
		interval = DefaultStatsInterval
	}
	if interval < time.Millisecond {
		return nil, fmt.Errorf("scrapyrun: stats interval %v is too short", interval)
	}
	argv := []string{r.Python, "-B", "-c", runnerScript, "--mode", r.Mode}
	switch r.Mode {
	case ModeCrawl:
		if !spiderName.MatchString(r.Spider) {
			return nil, fmt.Errorf("scrapyrun: spider name %q is not valid", r.Spider)
		}
		if !strings.HasPrefix(r.ProjectRoot, "/") {
			return nil, fmt.Errorf("scrapyrun: project root %q is not an absolute path", r.ProjectRoot)
		}
		if r.SettingsModule != "" && !moduleName.MatchString(r.SettingsModule) {
			return nil, fmt.Errorf("scrapyrun: settings module %q is not a Python module name", r.SettingsModule)
		}
		argv = append(argv, "--project-root", r.ProjectRoot, "--settings-module", r.SettingsModule)
	case ModeRunspider:
		if r.Spider == "" || strings.HasPrefix(r.Spider, "-") {
			return nil, fmt.Errorf("scrapyrun: spider file %q is not a usable path", r.Spider)
		}
	default:
		return nil, fmt.Errorf("scrapyrun: mode %q is neither %q nor %q", r.Mode, ModeCrawl, ModeRunspider)
	}
	argv = append(argv, "--stats-interval", strconv.FormatFloat(interval.Seconds(), 'f', -1, 64), "--", r.Mode, r.Spider)

	if len(r.Args)%2 != 0 {
		return nil, errors.New("scrapyrun: spider arguments are not -a key=value pairs")
	}
	for i := 0; i < len(r.Args); i += 2 {
		k, _, ok := strings.Cut(r.Args[i+1], "=")
		if r.Args[i] != "-a" || !ok || !argumentKey.MatchString(k) {
			return nil, fmt.Errorf("scrapyrun: spider argument %q is not -a key=value", r.Args[i+1])
		}
		if strings.IndexByte(r.Args[i+1], 0) >= 0 {
			return nil, fmt.Errorf("scrapyrun: spider argument %q holds a NUL byte", k)
		}
	}
	argv = append(argv, r.Args...)

	settings, err := r.settings()
	if err != nil {
		return nil, err
	}
	keys := make([]string, 0, len(settings))
	for k := range settings {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		argv = append(argv, "-s", k+"="+settings[k])
	}
	return argv, nil
}

// settings merges ours and the job's, the job's winning.
func (r Run) settings() (map[string]string, error) {
	s := map[string]string{"TELNETCONSOLE_ENABLED": "False", "LOG_FILE": ""}
	if r.LogLevel != "" {
		s["LOG_LEVEL"] = r.LogLevel
	}
	if r.MemoryLimitMB < 0 {
		return nil, fmt.Errorf("scrapyrun: memory limit %d MiB is negative", r.MemoryLimitMB)
	}
	if r.MemoryLimitMB > 0 {
		s["MEMUSAGE_ENABLED"] = "True"
		s["MEMUSAGE_LIMIT_MB"] = strconv.Itoa(scrapyMemoryMB(r.MemoryLimitMB))
	}
	for k, raw := range r.Settings {
		if !settingKey.MatchString(k) {
			return nil, fmt.Errorf("scrapyrun: setting key %q is not an upper-case Scrapy setting name", k)
		}
		v, err := settingValue(raw)
		if err != nil {
			return nil, fmt.Errorf("scrapyrun: setting %s: %w", k, err)
		}
		s[k] = v
	}
	return s, nil
}

// settingValue is a string as it is, any other JSON value compacted.
func settingValue(raw json.RawMessage) (string, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		var buf bytes.Buffer
		if err := json.Compact(&buf, raw); err != nil {
			return "", err
		}
		s = buf.String()
	}
	if strings.IndexByte(s, 0) >= 0 {
		return "", errors.New("holds a NUL character")
	}
	return s, nil
}

// scrapyMemoryMB is Scrapy's own memory limit under a hard limit: 10%
// (at least 32 MiB) below it, for the interpreter's peaks between checks.
func scrapyMemoryMB(hard int) int {
	return max(hard-max(hard/10, 32), hard/2, 1)
}

// List inspects a Scrapy project: what spiders it holds and where.
type List struct {
	// Python is the interpreter, argv[0].
	Python string
	// ProjectRoot is the project's root directory as the process sees it.
	ProjectRoot string
	// SettingsModule is the project's settings module; empty: the
	// [settings] default of ProjectRoot's scrapy.cfg.
	SettingsModule string
}

// Argv returns the inspection's argv, argv[0] being Python. The process
// prints one JSON line per spider on stdout (read them with ParseList) and
// exits 0, or exits non-zero with its reason as the last stderr line (read
// it with LastError): a spider module that fails to import, two spiders
// with one name, a spider name that is not valid, no settings module.
func (l List) Argv() []string {
	return []string{l.Python, "-B", "-c", runnerScript, "--mode", "list",
		"--project-root", l.ProjectRoot, "--settings-module", l.SettingsModule, "--"}
}

// Spider is one spider of a project.
type Spider struct {
	// Name is the spider's name.
	Name string `json:"name"`
	// File is the .py file that defines it, relative to the project's
	// root, slash-separated, such as "shop/spiders/products.py".
	File string `json:"file"`
}

// ParseList reads the stdout of a List run: its spiders, sorted by name
// (none is an empty, non-nil slice).
func ParseList(stdout []byte) ([]Spider, error) {
	spiders := []Spider{}
	seen := map[string]bool{}
	for n, line := range bytes.Split(stdout, []byte("\n")) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		var s Spider
		dec := json.NewDecoder(bytes.NewReader(line))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&s); err != nil {
			return nil, fmt.Errorf("scrapyrun: spider list line %d: %w", n+1, err)
		}
		if !spiderName.MatchString(s.Name) {
			return nil, fmt.Errorf("scrapyrun: spider list line %d: spider name %q is not valid", n+1, s.Name)
		}
		if !localSlashPath(s.File) {
			return nil, fmt.Errorf("scrapyrun: spider list line %d: file %q of spider %s is not a path inside the project", n+1, s.File, s.Name)
		}
		if seen[s.Name] {
			return nil, fmt.Errorf("scrapyrun: spider list: spider %s twice", s.Name)
		}
		seen[s.Name] = true
		spiders = append(spiders, s)
	}
	slices.SortFunc(spiders, func(a, b Spider) int { return strings.Compare(a.Name, b.Name) })
	return spiders, nil
}

// localSlashPath reports whether p is a clean, relative, slash-separated
// path that stays inside its root.
func localSlashPath(p string) bool {
	if p == "" || strings.HasPrefix(p, "/") || strings.ContainsAny(p, "\\\x00") || !utf8.ValidString(p) {
		return false
	}
	for _, part := range strings.Split(p, "/") {
		if part == "" || part == "." || part == ".." {
			return false
		}
	}
	return true
}

// ParseStats recognises a stats line of a run's stderr (with or without
// its line ending) and returns its JSON object, compact, valid UTF-8
// without NUL characters (what Postgres's jsonb takes). It refuses a line
// whose JSON is over MaxStatsBytes or not an object.
func ParseStats(line []byte) (json.RawMessage, bool) {
	rest, ok := bytes.CutPrefix(line, []byte(StatsPrefix))
	if !ok {
		return nil, false
	}
	rest = bytes.TrimRight(rest, "\r\n")
	if len(rest) > MaxStatsBytes || !utf8.Valid(rest) {
		return nil, false
	}
	dec := json.NewDecoder(bytes.NewReader(rest))
	dec.UseNumber()
	var obj map[string]any
	if err := dec.Decode(&obj); err != nil || obj == nil || dec.More() {
		return nil, false
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(withoutNUL(obj)); err != nil {
		return nil, false
	}
	return json.RawMessage(bytes.TrimRight(buf.Bytes(), "\n")), true
}

// withoutNUL replaces NUL characters in v's strings and keys.
func withoutNUL(v any) any {
	clean := func(s string) string { return strings.ReplaceAll(s, "\x00", "\uFFFD") }
	switch x := v.(type) {
	case string:
		return clean(x)
	case []any:
		for i, e := range x {
			x[i] = withoutNUL(e)
		}
		return x
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[clean(k)] = withoutNUL(e)
		}
		return out
	}
	return v
}

// LastError extracts a one-line reason from a failed run's stderr: the
// runner's own error line if there is one, else the last line that is
// neither blank nor a stats line (a Python exception's, typically). It is
// valid UTF-8, at most about 500 bytes.
func LastError(stderr []byte) string {
	var last, runner string
	for line := range strings.Lines(strings.ToValidUTF8(string(stderr), "\uFFFD")) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, strings.TrimSpace(StatsPrefix)) {
			continue
		}
		if reason, ok := strings.CutPrefix(line, errorPrefix); ok {
			runner = reason
		}
		last = line
	}
	if runner != "" {
		return bound(runner)
	}
	return bound(last)
}

// bound cuts s to maxErrorBytes at a character boundary, without control
// characters.
func bound(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	s = strings.TrimSpace(s)
	if len(s) <= maxErrorBytes {
		return s
	}
	cut := maxErrorBytes
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
