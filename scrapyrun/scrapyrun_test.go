package scrapyrun

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestArgvSettings(t *testing.T) {
	t.Parallel()
	r := Run{
		Python: "/usr/bin/python3", Mode: ModeCrawl, Spider: "products",
		ProjectRoot: "/code", SettingsModule: "shop.settings",
		Args:     []string{"-a", "category=books"},
		LogLevel: "INFO", MemoryLimitMB: 512,
		Settings: map[string]json.RawMessage{
			"DOWNLOAD_DELAY":    json.RawMessage(`0.5`),
			"LOG_LEVEL":         json.RawMessage(`"DEBUG"`),
			"SHOP_TAGS":         json.RawMessage(`{"a": [1, 2]}`),
			"USER_AGENT":        json.RawMessage(`"bot/1.0 (+x=y)"`),
			"AUTOTHROTTLE_ON":   json.RawMessage(`true`),
			"MEMUSAGE_LIMIT_MB": json.RawMessage(`100`),
		},
	}
	argv, err := r.Argv()
	if err != nil {
		t.Fatal(err)
	}
	if argv[0] != "/usr/bin/python3" || argv[1] != "-B" || argv[2] != "-c" || argv[3] != runnerScript {
		t.Fatalf("argv starts %q", argv[:3])
	}
	sep := slices.Index(argv, "--")
	if sep < 0 {
		t.Fatalf("no -- in %q", argv[4:])
	}
	wantOpts := []string{"--mode", "crawl", "--project-root", "/code", "--settings-module", "shop.settings", "--stats-interval", "5"}
	if got := argv[4:sep]; !slices.Equal(got, wantOpts) {
		t.Fatalf("runner options %q, want %q", got, wantOpts)
	}
	want := []string{"crawl", "products", "-a", "category=books",
		"-s", "AUTOTHROTTLE_ON=true",
		"-s", "DOWNLOAD_DELAY=0.5",
		"-s", "LOG_FILE=",
		"-s", "LOG_LEVEL=DEBUG", // the job's, over ours
		"-s", "MEMUSAGE_ENABLED=True",
		"-s", "MEMUSAGE_LIMIT_MB=100", // the job's, over ours (461)
		"-s", `SHOP_TAGS={"a":[1,2]}`,
		"-s", "TELNETCONSOLE_ENABLED=False",
		"-s", "USER_AGENT=bot/1.0 (+x=y)",
	}
	if got := argv[sep+1:]; !slices.Equal(got, want) {
		t.Fatalf("scrapy argv\n%q\nwant\n%q", got, want)
	}

	r.Settings = nil
	r.StatsInterval = 250 * time.Millisecond
	argv, err = r.Argv()
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(argv[4:], " ")
	for _, s := range []string{"--stats-interval 0.25 --", "-s LOG_LEVEL=INFO", "-s MEMUSAGE_LIMIT_MB=461"} {
		if !strings.Contains(joined, s) {
			t.Errorf("argv %q lacks %q", joined, s)
		}
	}
}

func TestArgvRefuses(t *testing.T) {
	t.Parallel()
	good := func() Run {
		return Run{Python: "python3", Mode: ModeRunspider, Spider: "/code/s.py"}
	}
	if _, err := good().Argv(); err != nil {
		t.Fatalf("good run: %v", err)
	}
	cases := map[string]func(r *Run){
		"lower-case key":     func(r *Run) { r.Settings = map[string]json.RawMessage{"log_level": json.RawMessage(`"INFO"`)} },
		"key with a dash":    func(r *Run) { r.Settings = map[string]json.RawMessage{"LOG-LEVEL": json.RawMessage(`"INFO"`)} },
		"key with a digit":   func(r *Run) { r.Settings = map[string]json.RawMessage{"1LOG": json.RawMessage(`1`)} },
		"empty key":          func(r *Run) { r.Settings = map[string]json.RawMessage{"": json.RawMessage(`1`)} },
		"key with =":         func(r *Run) { r.Settings = map[string]json.RawMessage{"A=B": json.RawMessage(`1`)} },
		"bad JSON value":     func(r *Run) { r.Settings = map[string]json.RawMessage{"A": json.RawMessage(`{`)} },
		"NUL in a value":     func(r *Run) { r.Settings = map[string]json.RawMessage{"A": json.RawMessage(`"a\u0000b"`)} },
		"no python":          func(r *Run) { r.Python = "" },
		"bad mode":           func(r *Run) { r.Mode = "list" },
		"option-like file":   func(r *Run) { r.Spider = "-s.py" },
		"odd arguments":      func(r *Run) { r.Args = []string{"-a"} },
		"not -a":             func(r *Run) { r.Args = []string{"-s", "A=1"} },
		"argument without =": func(r *Run) { r.Args = []string{"-a", "x"} },
		"negative memory":    func(r *Run) { r.MemoryLimitMB = -1 },
		"crawl bad name":     func(r *Run) { r.Mode, r.Spider, r.ProjectRoot = ModeCrawl, "-products", "/code" },
		"crawl relative root": func(r *Run) {
			r.Mode, r.Spider, r.ProjectRoot = ModeCrawl, "products", "code"
		},
		"crawl bad module": func(r *Run) {
			r.Mode, r.Spider, r.ProjectRoot, r.SettingsModule = ModeCrawl, "products", "/code", "shop/settings"
		},
	}
	for name, change := range cases {
		r := good()
		change(&r)
		if argv, err := r.Argv(); err == nil {
			t.Errorf("%s: accepted: %q", name, argv[4:])
		}
	}
}

func TestValidSettingKey(t *testing.T) {
	t.Parallel()
	for _, k := range []string{"A", "LOG_LEVEL", "X1_2", "FEEDS"} {
		if !ValidSettingKey(k) {
			t.Errorf("%q refused", k)
		}
	}
	for _, k := range []string{"", "a", "_A", "1A", "A-B", "A.B", "Ä", "A B"} {
		if ValidSettingKey(k) {
			t.Errorf("%q accepted", k)
		}
	}
}

func TestRunnerFitsOneArgument(t *testing.T) {
	t.Parallel()
	// Linux refuses a single argv string over 128 KiB (MAX_ARG_STRLEN).
	if len(runnerScript) > 100<<10 {
		t.Fatalf("runner.py is %d bytes; -c takes it as one argument", len(runnerScript))
	}
}

func TestParseStats(t *testing.T) {
	t.Parallel()
	ok := map[string]string{
		StatsPrefix + `{"item_scraped_count": 3, "finish_reason": "finished"}`: `{"finish_reason":"finished","item_scraped_count":3}`,
		StatsPrefix + "{\"a\":1}\r\n":                                          `{"a":1}`,
		StatsPrefix + `{"big": 123456789012345678901234567890, "f": 1.50}`:     `{"big":123456789012345678901234567890,"f":1.50}`,
		StatsPrefix + `{"k\u0000": "a\u0000<b>", "n": [{"x": "\u0000"}]}`:      `{"k�":"a�<b>","n":[{"x":"�"}]}`,
		StatsPrefix + `{"lone": "\udc80"}`:                                     `{"lone":"�"}`,
		StatsPrefix + `{}`:                                                     `{}`,
		StatsPrefix + ` {"start_time": "2026-01-02T03:04:05.123456Z"} ` + "\n": `{"start_time":"2026-01-02T03:04:05.123456Z"}`,
	}
	for line, want := range ok {
		got, found := ParseStats([]byte(line))
		if !found || string(got) != want {
			t.Errorf("ParseStats(%q) = %s, %v; want %s", line, got, found, want)
		}
	}
	big := StatsPrefix + `{"a":"` + strings.Repeat("x", MaxStatsBytes) + `"}`
	refused := []string{
		`{"a":1}`,
		"2026-01-02 03:04:05 [scrapy.statscollectors] INFO: Dumping Scrapy stats:",
		" " + StatsPrefix + `{"a":1}`,
		StatsPrefix,
		StatsPrefix + `[1,2]`,
		StatsPrefix + `null`,
		StatsPrefix + `"a"`,
		StatsPrefix + `{"a":1`,
		StatsPrefix + `{"a":1}{"b":2}`,
		StatsPrefix + `{"a":NaN}`,
		StatsPrefix + "{\"a\":\"\xff\"}",
		big,
	}
	for _, line := range refused {
		if got, found := ParseStats([]byte(line)); found {
			t.Errorf("ParseStats(%.80q) = %.80s, true", line, got)
		}
	}
}

func TestLastError(t *testing.T) {
	t.Parallel()
	cases := map[string]string{
		"":           "",
		"\n \n":      "",
		"one\ntwo\n": "two",
		"Traceback (most recent call last):\n  File \"x\", line 1\nKeyError: 'Spider not found: nope'\n" +
			StatsPrefix + `{"a":1}` + "\n": "KeyError: 'Spider not found: nope'",
		"scrapethis: error: spider module shop.spiders.broken (ModuleNotFoundError: No module named 'x') fails to import\n": "spider module shop.spiders.broken (ModuleNotFoundError: No module named 'x') fails to import",
		"scrapethis: error: first\nlater noise\nscrapethis: error: second\nmore noise\n":                                    "second",
		"bad \xff byte\x07\n": "bad \uFFFD byte",
	}
	for stderr, want := range cases {
		if got := LastError([]byte(stderr)); got != want {
			t.Errorf("LastError(%q) = %q, want %q", stderr, got, want)
		}
	}
	long := LastError([]byte("x" + strings.Repeat("é", 1000)))
	if len(long) > maxErrorBytes+len("…") || !strings.HasSuffix(long, "…") || !strings.HasPrefix(long, "xé") {
		t.Errorf("long reason: %d bytes: %.20q...", len(long), long)
	}
}

func TestParseList(t *testing.T) {
	t.Parallel()
	got, err := ParseList([]byte(`{"name": "b", "file": "shop/spiders/b.py"}` + "\n\n" + `{"name": "a", "file": "a.py"}` + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := []Spider{{"a", "a.py"}, {"b", "shop/spiders/b.py"}}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	if got, err := ParseList(nil); err != nil || got == nil || len(got) != 0 {
		t.Fatalf("empty: %#v, %v", got, err)
	}
	for _, bad := range []string{
		"hello\n",
		`{"name": "a", "file": "a.py", "x": 1}`,
		`{"name": "a b", "file": "a.py"}`,
		`{"name": "a", "file": ""}`,
		`{"name": "a", "file": "/abs/a.py"}`,
		`{"name": "a", "file": "../a.py"}`,
		`{"name": "a", "file": "x/./a.py"}`,
		`{"name": "a", "file": "x\\a.py"}`,
		`{"name": "a", "file": "a.py"}` + "\n" + `{"name": "a", "file": "b.py"}`,
	} {
		if got, err := ParseList([]byte(bad)); err == nil {
			t.Errorf("ParseList(%q) = %v, nil", bad, got)
		}
	}
}
