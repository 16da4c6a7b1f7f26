package cronspec_test

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/scrapethis/scrapethis/cronspec"
)

func mustTime(t *testing.T, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestParseAccepts(t *testing.T) {
	t.Parallel()
	for _, spec := range []string{
		"* * * * *", "*/5 * * * *", "0 9 * * MON-FRI", "0 0 1 JAN *", "15,45 8-18 * * 1-5", "0 0 ? * SUN",
		"@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly", "@annually",
		"@every 1s", "@every 90s", "@every 1h30m", "  @daily  ",
	} {
		if _, err := cronspec.Parse(spec, "UTC"); err != nil {
			t.Errorf("Parse(%q): %v", spec, err)
		}
	}
	for _, zone := range []string{"UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata", "Etc/GMT+5"} {
		if _, err := cronspec.Parse("@daily", zone); err != nil {
			t.Errorf("zone %q: %v", zone, err)
		}
	}
}

func TestParseRejects(t *testing.T) {
	t.Parallel()
	specs := map[string]string{
		"":                                      "Missing cron",
		"* * * *":                               "5 fields",
		"* * * * * *":                           "5 fields",
		"61 * * * *":                            "61",
		"* 24 * * *":                            "24",
		"*/0 * * * *":                           "*/0",
		"@every 500ms":                          "at least 1s",
		"@every 0s":                             "at least 1s",
		"@every -5s":                            "at least 1s",
		"@every 1.5s":                           "whole number of seconds",
		"@every often":                          "duration",
		"@every":                                "@every",
		"@sometimes":                            "@sometimes",
		"@DAILY":                                "@DAILY",
		"TZ=UTC":                                "timezone field",
		"TZ=UTC * * * * *":                      "timezone field",
		"CRON_TZ=Europe/Paris 0 0 * * *":        "timezone field",
		"0 0 30 2 *":                            "never fires",
		"bad":                                   `"bad"`,
		strings.Repeat("1,", 150) + "1 * * * *": "longer than",
	}
	for spec, want := range specs {
		_, err := cronspec.Parse(spec, "UTC")
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q) = %v, want an invalid error containing %q", spec, err, want)
		}
		if spec != "" && len(spec) < 100 && !strings.Contains(err.Error(), strings.TrimSpace(spec)) {
			t.Errorf("Parse(%q): the message %q does not name the spec", spec, err.Error())
		}
	}
	for _, zone := range []string{"", "Local", "Mars/Olympus", "utc ", "../../etc/passwd", "/etc/localtime", "Europe/Paris\x00", strings.Repeat("A", 100)} {
		_, err := cronspec.Parse("@daily", zone)
		if err == nil || !strings.Contains(err.Error(), "Invalid timezone") {
			t.Errorf("zone %q: %v", zone, err)
		}
		if len(zone) < 64 && !strings.Contains(err.Error(), strings.Trim(zone, "\x00")) {
			t.Errorf("zone %q: the message %q does not name it", zone, err.Error())
		}
	}
}

// TestParseNeverPanics feeds the cron parser odd input: a spec is client
// input, and a panic would be a 500.
func TestParseNeverPanics(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(1, 2))
	alphabet := []byte("0123456789*/,-?@ LWJANMONSUNevryTZ=CRON_")
	for range 20000 {
		b := make([]byte, r.IntN(20))
		for i := range b {
			b[i] = alphabet[r.IntN(len(alphabet))]
		}
		cronspec.Parse(string(b), "UTC") // must not panic
	}
}

func TestNextInZone(t *testing.T) {
	t.Parallel()
	cases := []struct {
		spec, zone, from, want string
	}{
		{"0 9 * * *", "UTC", "2025-01-15T10:30:00Z", "2025-01-16T09:00:00Z"},
		{"0 9 * * *", "Europe/Paris", "2025-01-15T00:00:00Z", "2025-01-15T08:00:00Z"}, // CET, UTC+1
		{"0 9 * * *", "Europe/Paris", "2025-07-15T00:00:00Z", "2025-07-15T07:00:00Z"}, // CEST, UTC+2
		{"0 9 * * *", "Asia/Kolkata", "2025-01-15T00:00:00Z", "2025-01-15T03:30:00Z"},
		{"@daily", "America/New_York", "2025-01-15T12:00:00Z", "2025-01-16T05:00:00Z"},
		{"*/15 * * * *", "UTC", "2025-01-15T10:07:31.5Z", "2025-01-15T10:15:00Z"},
		{"@every 90s", "UTC", "2025-01-15T10:00:00.7Z", "2025-01-15T10:01:30Z"},
		{"@hourly", "Asia/Kolkata", "2025-01-15T10:07:00Z", "2025-01-15T10:30:00Z"}, // zone offset +05:30
	}
	for _, c := range cases {
		spec, err := cronspec.Parse(c.spec, c.zone)
		if err != nil {
			t.Fatal(err)
		}
		got := spec.Next(mustTime(t, c.from))
		if want := mustTime(t, c.want); !got.Equal(want) || got.Location() != time.UTC {
			t.Errorf("%q in %s after %s = %s, want %s", c.spec, c.zone, c.from, got, want)
		}
	}
}

// TestDueFiresOnceForLatestMissed is the missed-fire policy: however many
// fire times passed since next_run_at, one fire, for the latest of them,
// then the first fire time after now.
func TestDueFiresOnceForLatestMissed(t *testing.T) {
	t.Parallel()
	cases := []struct {
		spec, zone, next, now, fire, following string
	}{
		// On time: the fire is next_run_at itself.
		{"*/5 * * * *", "UTC", "2025-01-15T10:00:00Z", "2025-01-15T10:00:00.3Z", "2025-01-15T10:00:00Z", "2025-01-15T10:05:00Z"},
		{"@every 1s", "UTC", "2025-01-15T10:00:00Z", "2025-01-15T10:00:00.3Z", "2025-01-15T10:00:00Z", "2025-01-15T10:00:01Z"},
		// Down for two hours: one fire, the latest.
		{"*/5 * * * *", "UTC", "2025-01-15T10:00:00Z", "2025-01-15T12:03:20Z", "2025-01-15T12:00:00Z", "2025-01-15T12:05:00Z"},
		// @every keeps its phase: fire times stay next_run_at + k*interval.
		{"@every 1s", "UTC", "2025-01-15T10:00:00Z", "2025-01-15T10:00:07.5Z", "2025-01-15T10:00:07Z", "2025-01-15T10:00:08Z"},
		{"@every 7s", "UTC", "2025-01-15T10:00:03Z", "2025-01-16T10:00:00Z", "2025-01-16T09:59:57Z", "2025-01-16T10:00:04Z"},
		{"@every 1s", "UTC", "2024-01-15T10:00:00Z", "2025-01-15T10:00:00.5Z", "2025-01-15T10:00:00Z", "2025-01-15T10:00:01Z"},
		// Down for years on a yearly cronspec.
		{"@yearly", "UTC", "2020-01-01T00:00:00Z", "2025-06-01T00:00:00Z", "2025-01-01T00:00:00Z", "2026-01-01T00:00:00Z"},
		// A minutely schedule missed for a year costs a short walk, not 500k steps.
		{"* * * * *", "UTC", "2024-01-01T00:00:00Z", "2025-01-15T10:00:42Z", "2025-01-15T10:00:00Z", "2025-01-15T10:01:00Z"},
		{"0 9 * * MON", "Europe/Paris", "2025-01-06T08:00:00Z", "2025-03-05T12:00:00Z", "2025-03-03T08:00:00Z", "2025-03-10T08:00:00Z"},
	}
	for _, c := range cases {
		spec, err := cronspec.Parse(c.spec, c.zone)
		if err != nil {
			t.Fatal(err)
		}
		fire, following := spec.Due(mustTime(t, c.next), mustTime(t, c.now))
		if !fire.Equal(mustTime(t, c.fire)) || !following.Equal(mustTime(t, c.following)) {
			t.Errorf("%q due %s at %s: fire %s then %s, want %s then %s", c.spec, c.next, c.now, fire, following, c.fire, c.following)
		}
	}
}

// TestDueProperties checks the policy on random specs and gaps: the fire
// is a fire time in [next, now] with no fire time after it up to now, and
// the following one is after now.
func TestDueProperties(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(3, 4))
	specs := []string{"* * * * *", "*/7 * * * *", "30 2 * * *", "0 */3 * * 1-5", "0 0 29 2 *", "@hourly", "@weekly", "@every 13s", "@every 1h1m1s", "5 4 * * SUN"}
	zones := []string{"UTC", "America/New_York", "Europe/London", "Australia/Lord_Howe", "Asia/Kathmandu"}
	base := mustTime(t, "2024-03-01T00:00:00Z")
	for range 2000 {
		spec, err := cronspec.Parse(specs[r.IntN(len(specs))], zones[r.IntN(len(zones))])
		if err != nil {
			t.Fatal(err)
		}
		next := spec.Next(base.Add(time.Duration(r.Int64N(int64(400 * 24 * time.Hour)))))
		now := next.Add(time.Duration(r.Int64N(int64([]time.Duration{time.Second, time.Hour, 30 * 24 * time.Hour, 3 * 365 * 24 * time.Hour}[r.IntN(4)]))))
		fire, following := spec.Due(next, now)
		if fire.Before(next) || fire.After(now) || !following.After(now) {
			t.Fatalf("%v due %s at %s: fire %s then %s", spec, next, now, fire, following)
		}
		if n := spec.Next(fire); !n.Equal(following) {
			t.Fatalf("%v: following %s is not the fire time after %s (%s)", spec, following, fire, n)
		}
	}
}
