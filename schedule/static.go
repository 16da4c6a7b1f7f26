package schedule

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/scrapethis/scrapethis"
	"github.com/scrapethis/scrapethis/db"
)

// File is a static schedules file (SCRAPETHIS_SCHEDULES_FILE): JSON of the
// form {"schedules": [Static, ...]}.
type File struct {
	Schedules []Static `json:"schedules"`
}

// Static is one schedule declared in a file. It is keyed by (user, name):
// loading the file again updates it in place.
type Static struct {
	Name           string          `json:"name"`
	UserEmail      string          `json:"user_email"`
	SpiderName     string          `json:"spider_name"`
	Cron           string          `json:"cron"`
	Timezone       string          `json:"timezone"`  // default UTC
	Arguments      json.RawMessage `json:"arguments"` // default {}
	Enabled        *bool           `json:"enabled"`   // default true
	TimeoutSeconds *int            `json:"timeout_seconds"`
	NoOverlap      bool            `json:"no_overlap"`
}

// ReadFile reads and checks a schedules file without touching the
// database: unknown fields, a bad spec or zone, a missing name, email or
// spider, or a name used twice for one user make it an error.
func ReadFile(path string) ([]Static, error) {
	body, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("schedules file: %w", err)
	}
	list, err := parseFile(body)
	if err != nil {
		return nil, fmt.Errorf("schedules file %s: %w", path, err)
	}
	return list, nil
}

func parseFile(body []byte) ([]Static, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var f File
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("not a valid schedules file ({\"schedules\": [...]}): %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("trailing data after the JSON object")
	}
	seen := map[string]int{}
	for i := range f.Schedules {
		st := &f.Schedules[i]
		if err := st.check(); err != nil {
			return nil, fmt.Errorf("schedule %d (%q): %s", i+1, st.Name, scrapethis.ErrorMessage(err))
		}
		key := st.UserEmail + "\x00" + st.Name
		if j, dup := seen[key]; dup {
			return nil, fmt.Errorf("schedule %d (%q): the name is already used by schedule %d of %s", i+1, st.Name, j, st.UserEmail)
		}
		seen[key] = i + 1
	}
	return f.Schedules, nil
}

// check validates one entry and fills in its defaults.
func (st *Static) check() error {
	st.Name = strings.TrimSpace(st.Name)
	st.UserEmail = strings.TrimSpace(st.UserEmail)
	st.SpiderName = strings.TrimSpace(st.SpiderName)
	st.Cron = strings.TrimSpace(st.Cron)
	switch {
	case st.Name == "":
		return scrapethis.Errorf(scrapethis.EInvalid, "missing name")
	case len(st.Name) > 200:
		return scrapethis.Errorf(scrapethis.EInvalid, "name is longer than 200 bytes")
	case st.UserEmail == "":
		return scrapethis.Errorf(scrapethis.EInvalid, "missing user_email")
	case st.SpiderName == "":
		return scrapethis.Errorf(scrapethis.EInvalid, "missing spider_name")
	}
	if st.Timezone == "" {
		st.Timezone = "UTC"
	}
	sc := st.schedule()
	if err := sc.Validate(); err != nil {
		return err
	}
	st.Cron, st.Timezone, st.Arguments = sc.Cron, sc.Timezone, sc.Arguments
	return nil
}

// schedule is the entry as a domain schedule, without its user and spider.
func (st *Static) schedule() scrapethis.Schedule {
	name := st.Name
	return scrapethis.Schedule{
		Name:           &name,
		Cron:           st.Cron,
		Timezone:       st.Timezone,
		Arguments:      st.Arguments,
		Enabled:        st.Enabled == nil || *st.Enabled,
		TimeoutSeconds: st.TimeoutSeconds,
		NoOverlap:      st.NoOverlap,
	}
}

// LoadFile reads the schedules file at path and upserts its schedules, all
// or none, keyed by (user, name). Every user and spider named must exist.
// Schedules in the database but no longer in the file are left alone:
// delete them through the API. It returns the schedules as stored.
func LoadFile(ctx context.Context, store *db.DB, path string) ([]scrapethis.Schedule, error) {
	list, err := ReadFile(path)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	rows := make([]scrapethis.Schedule, 0, len(list))
	for i, st := range list {
		where := fmt.Sprintf("schedules file %s: schedule %d (%q)", path, i+1, st.Name)
		user, err := store.UserByEmail(ctx, st.UserEmail)
		if scrapethis.ErrorCode(err) == scrapethis.ENotFound {
			return nil, fmt.Errorf("%s: no user with email %q (create one with `scrapethis apikey create --email %s`)", where, st.UserEmail, st.UserEmail)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		sp, err := store.SpiderByName(ctx, user.ID, st.SpiderName)
		if scrapethis.ErrorCode(err) == scrapethis.ENotFound {
			return nil, fmt.Errorf("%s: user %s has no spider named %q", where, st.UserEmail, st.SpiderName)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		sc := st.schedule()
		sc.UserID, sc.SpiderID = user.ID, sp.ID
		if sc.NextRunAt, err = sc.NextRun(now); err != nil {
			return nil, fmt.Errorf("%s: %s", where, scrapethis.ErrorMessage(err))
		}
		rows = append(rows, sc)
	}
	stored, err := store.UpsertNamedSchedules(ctx, rows)
	if err != nil {
		return nil, fmt.Errorf("schedules file %s: %w", path, err)
	}
	return stored, nil
}
