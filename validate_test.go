package scrapethis_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/scrapethis/scrapethis"
)

func TestNewJobValidate(t *testing.T) {
	t.Parallel()
	big := scrapethis.MaxTimeoutSeconds + 1
	zero, ok := 0, 60
	deep := strings.Repeat(`[`, scrapethis.MaxArgumentDepth+1) + strings.Repeat(`]`, scrapethis.MaxArgumentDepth+1)
	for _, tc := range []struct {
		args    string
		timeout *int
		want    string // "" = valid
		norm    string
	}{
		{``, nil, "", `{}`},
		{`null`, nil, "", `{}`},
		{` {"b": 2, "a": "x"} `, &ok, "", `{"a":"x","b":2}`},
		{`{"n": 1.50}`, nil, "", `{"n":1.50}`},
		{`[]`, nil, "arguments must be a JSON object", ""},
		{`{"1a": 1}`, nil, "not an identifier", ""},
		{`{"a": "x\u0000y"}`, nil, "NUL characters", ""},
		{`{"a": {"k\u0000": 1}}`, nil, "NUL characters", ""},
		{`{"a": ` + deep + `}`, nil, "nested more than", ""},
		{`{"a": "\ud800"}`, nil, "", "{\"a\":\"\ufffd\"}"},
		{`{}`, &zero, "timeout_seconds", ""},
		{`{}`, &big, "timeout_seconds", ""},
	} {
		nj := scrapethis.NewJob{SpiderID: "s", Arguments: json.RawMessage(tc.args), TimeoutSeconds: tc.timeout}
		err := nj.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.args, err)
		case tc.want != "" && (scrapethis.ErrorCode(err) != scrapethis.EInvalid || !strings.Contains(scrapethis.ErrorMessage(err), tc.want)):
			t.Errorf("%s: %v, want invalid %q", tc.args, err, tc.want)
		case tc.want == "" && string(nj.Arguments) != tc.norm:
			t.Errorf("%s: normalised to %s, want %s", tc.args, nj.Arguments, tc.norm)
		}
	}
	if err := (&scrapethis.NewJob{}).Validate(); scrapethis.ErrorCode(err) != scrapethis.EInvalid {
		t.Errorf("a job without a spider: %v", err)
	}
}

func TestScheduleValidate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		sc   scrapethis.Schedule
		want string
	}{
		{scrapethis.Schedule{Cron: " @daily ", Timezone: "Europe/Paris"}, ""},
		{scrapethis.Schedule{Cron: "61 * * * *", Timezone: "UTC"}, `Invalid cron "61 * * * *"`},
		{scrapethis.Schedule{Cron: "@daily", Timezone: ""}, "Invalid timezone"},
		{scrapethis.Schedule{Cron: "@daily", Timezone: "Mars/Base"}, `Invalid timezone "Mars/Base"`},
		{scrapethis.Schedule{Cron: "@daily", Timezone: "UTC", Arguments: json.RawMessage(`{"a":"x\u0000"}`)}, "NUL"},
	} {
		err := tc.sc.Validate()
		if tc.want == "" && err != nil || tc.want != "" && !strings.Contains(scrapethis.ErrorMessage(err), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.sc, err, tc.want)
		}
		if tc.want == "" && tc.sc.Cron != "@daily" {
			t.Errorf("spec not trimmed: %q", tc.sc.Cron)
		}
	}
}

func TestValidRepoPath(t *testing.T) {
	t.Parallel()
	for path, ok := range map[string]bool{
		"a.py": true, "dir/./a.py": true, "": false, "/etc/passwd": false, "../x.py": false,
		"a/../../x": false, ".": false, "a\\b": false, "a\x00b": false,
	} {
		if _, err := scrapethis.ValidRepoPath(path); (err == nil) != ok {
			t.Errorf("%q: %v", path, err)
		}
	}
}
