package scrapethis

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"time"
	"unicode"

	"github.com/scrapethis/scrapethis/cronspec"
)

// The rules below are the only definition of what a valid job, spider or
// schedule is. The API, the schedules file and the scheduler all call them,
// so a value one of them accepts is one that every other part (Postgres
// included) accepts too.

// MaxTimeoutSeconds is the longest per-job timeout accepted (30 days).
const MaxTimeoutSeconds = 30 * 24 * 3600

// MaxArgumentDepth bounds how deeply argument values may nest.
const MaxArgumentDepth = 32

// MaxSpiderNameLen bounds a spider's name, in bytes.
const MaxSpiderNameLen = 200

// ErrTimeout is the error of a timeout_seconds outside 1 … MaxTimeoutSeconds.
var ErrTimeout = Errorf(EInvalid, "timeout_seconds must be a whole number from 1 to %d", MaxTimeoutSeconds)

// Validate checks a new job and normalises its arguments (see
// NormalizeArguments). A job without a spider is refused.
func (nj *NewJob) Validate() error {
	if nj.SpiderID == "" {
		return Errorf(EInvalid, "Missing spider_id or spider_name")
	}
	args, err := NormalizeArguments(nj.Arguments)
	if err != nil {
		return err
	}
	nj.Arguments = args
	if nj.Settings, err = NormalizeSettings(nj.Settings); err != nil {
		return err
	}
	if len(nj.Version) > 200 || strings.IndexByte(nj.Version, 0) >= 0 {
		return Errorf(EInvalid, "version must be a version id or label")
	}
	if err := ValidatePriority(nj.Priority); err != nil {
		return err
	}
	return ValidateTimeout(nj.TimeoutSeconds)
}

// Validate checks a schedule's spec, zone, arguments and timeout, and
// normalises them: the spec trimmed, the arguments re-encoded. The zone must
// be named (callers default it to UTC where a client may leave it out).
func (s *Schedule) Validate() error {
	s.Cron = strings.TrimSpace(s.Cron)
	if _, err := cronspec.Parse(s.Cron, s.Timezone); err != nil {
		return Errorf(EInvalid, "%s", err.Error())
	}
	args, err := NormalizeArguments(s.Arguments)
	if err != nil {
		return err
	}
	s.Arguments = args
	if err := ValidatePriority(s.Priority); err != nil {
		return err
	}
	return ValidateTimeout(s.TimeoutSeconds)
}

// NextRun returns when a valid schedule fires next after t: nil while it is
// disabled.
func (s Schedule) NextRun(t time.Time) (*time.Time, error) {
	if !s.Enabled {
		return nil, nil
	}
	spec, err := cronspec.Parse(s.Cron, s.Timezone)
	if err != nil {
		return nil, Errorf(EInvalid, "%s", err.Error())
	}
	next := spec.Next(t)
	return &next, nil
}

// ValidateTimeout accepts no timeout or one from 1 to MaxTimeoutSeconds.
func ValidateTimeout(t *int) error {
	if t != nil && (*t < 1 || *t > MaxTimeoutSeconds) {
		return ErrTimeout
	}
	return nil
}

// NormalizeArguments checks that raw is absent, null or a JSON object whose
// keys are identifiers, and returns it re-encoded, so that what is stored is
// plain UTF-8 JSON that Postgres accepts: no NUL characters, no lone
// surrogates, nesting at most MaxArgumentDepth deep. Absent and null are {}.
func NormalizeArguments(raw json.RawMessage) (json.RawMessage, error) {
	return normalizeObject("arguments", raw, ValidArgumentKey, "an identifier (letters, digits and _, not starting with a digit)")
}

// NormalizeSettings checks a job's Scrapy settings as NormalizeArguments
// checks arguments; keys are setting names (^[A-Z][A-Z0-9_]*$).
func NormalizeSettings(raw json.RawMessage) (json.RawMessage, error) {
	return normalizeObject("settings", raw, ValidSettingKey, "a Scrapy setting name (upper-case letters, digits and _, starting with a letter)")
}

var settingKey = regexp.MustCompile(`^[A-Z][A-Z0-9_]*$`)

// ValidSettingKey reports whether k may name a Scrapy setting of a job.
func ValidSettingKey(k string) bool { return len(k) <= 200 && settingKey.MatchString(k) }

func normalizeObject(field string, raw json.RawMessage, validKey func(string) bool, keyRule string) (json.RawMessage, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return json.RawMessage(`{}`), nil
	}
	if raw[0] != '{' {
		return nil, Errorf(EInvalid, "%s must be a JSON object", field)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil || dec.More() {
		return nil, Errorf(EInvalid, "%s must be a JSON object", field)
	}
	for k, v := range m {
		if !validKey(k) {
			return nil, Errorf(EInvalid, "%s key %q is not %s", field, k, keyRule)
		}
		if err := checkValue(v, 1); err != nil {
			return nil, Errorf(EInvalid, "%s.%s: %s", field, k, err.Error())
		}
	}
	out, err := json.Marshal(m)
	if err != nil {
		return nil, Errorf(EInvalid, "%s must be a JSON object", field)
	}
	return out, nil
}

// ValidateMemory accepts no memory limit or one from 1 to max MiB.
func ValidateMemory(mb *int, max int) error {
	if mb != nil && (*mb < 1 || *mb > max) {
		return Errorf(EInvalid, "memory_mb must be a whole number from 1 to %d", max)
	}
	return nil
}

var projectName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// ValidProjectName reports whether s may name a project (and a version's
// label, and a bundle's spider).
func ValidProjectName(s string) bool { return projectName.MatchString(s) }

func checkValue(v any, depth int) error {
	if depth > MaxArgumentDepth {
		return fmt.Errorf("nested more than %d deep", MaxArgumentDepth)
	}
	switch x := v.(type) {
	case string:
		if strings.IndexByte(x, 0) >= 0 {
			return fmt.Errorf("NUL characters are not allowed")
		}
	case []any:
		for _, e := range x {
			if err := checkValue(e, depth+1); err != nil {
				return err
			}
		}
	case map[string]any:
		for k, e := range x {
			if strings.IndexByte(k, 0) >= 0 {
				return fmt.Errorf("NUL characters are not allowed")
			}
			if err := checkValue(e, depth+1); err != nil {
				return err
			}
		}
	}
	return nil
}

// ValidSpiderName checks a spider's name and returns it trimmed.
func ValidSpiderName(name string) (string, error) {
	name = strings.TrimSpace(name)
	if name == "" {
		return "", Errorf(EInvalid, "Missing name")
	}
	if len(name) > MaxSpiderNameLen {
		return "", Errorf(EInvalid, "name is longer than %d bytes", MaxSpiderNameLen)
	}
	for _, c := range name {
		if unicode.IsControl(c) {
			return "", Errorf(EInvalid, "name may not contain control characters")
		}
	}
	return name, nil
}

// ValidRepoPath checks that a spider's path is relative to the spiders
// directory and cannot leave it, and returns it cleaned.
func ValidRepoPath(path string) (string, error) {
	if path == "" {
		return "", Errorf(EInvalid, "Missing repo_path")
	}
	if len(path) > 1024 || strings.ContainsRune(path, 0) || strings.Contains(path, `\`) {
		return "", Errorf(EInvalid, "repo_path is not a valid path")
	}
	if filepath.IsAbs(path) || !filepath.IsLocal(path) {
		return "", Errorf(EInvalid, "repo_path must be relative to the spiders directory and stay inside it")
	}
	clean := filepath.ToSlash(filepath.Clean(path))
	if clean == "." {
		return "", Errorf(EInvalid, "repo_path must name a file")
	}
	return clean, nil
}
