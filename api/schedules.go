package api

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/julienschmidt/httprouter"

	"github.com/scrapethis/scrapethis"
	"github.com/scrapethis/scrapethis/schedule"
)

// scheduleJSON is a schedule as the API shows it, the same in lists and
// alone. A field with no value is null, never omitted. name is set only on
// schedules declared in a schedules file.
type scheduleJSON struct {
	ID             string          `json:"id"`
	Name           *string         `json:"name"`
	SpiderID       string          `json:"spider_id"`
	UserID         string          `json:"user_id"`
	Cron           string          `json:"cron"`
	Timezone       string          `json:"timezone"`
	Arguments      json.RawMessage `json:"arguments"`
	Enabled        bool            `json:"enabled"`
	TimeoutSeconds *int            `json:"timeout_seconds"`
	NoOverlap      bool            `json:"no_overlap"`
	NextRunAt      *apiTime        `json:"next_run_at"`
	LastRunAt      *apiTime        `json:"last_run_at"`
	CreatedAt      apiTime         `json:"created_at"`
	UpdatedAt      apiTime         `json:"updated_at"`
	Spider         spiderRef       `json:"spider"`
}

func toScheduleJSON(sc scrapethis.Schedule, sp scrapethis.Spider) scheduleJSON {
	args := sc.Arguments
	if len(bytes.TrimSpace(args)) == 0 {
		args = json.RawMessage(`{}`)
	}
	return scheduleJSON{
		ID:             sc.ID,
		Name:           sc.Name,
		SpiderID:       sc.SpiderID,
		UserID:         sc.UserID,
		Cron:           sc.Cron,
		Timezone:       sc.Timezone,
		Arguments:      args,
		Enabled:        sc.Enabled,
		TimeoutSeconds: sc.TimeoutSeconds,
		NoOverlap:      sc.NoOverlap,
		NextRunAt:      optTime(sc.NextRunAt),
		LastRunAt:      optTime(sc.LastRunAt),
		CreatedAt:      apiTime(sc.CreatedAt),
		UpdatedAt:      apiTime(sc.UpdatedAt),
		Spider:         spiderRef{ID: sp.ID, Name: sp.Name, RepoPath: sp.RepoPath},
	}
}

var errScheduleNotFound = scrapethis.Errorf(scrapethis.ENotFound, "Schedule not found")

type createScheduleRequest struct {
	SpiderID   json.RawMessage `json:"spider_id"`
	SpiderName json.RawMessage `json:"spider_name"`
	patchScheduleRequest
}

func (s *Server) createSchedule(w http.ResponseWriter, r *http.Request) {
	var req createScheduleRequest
	if err := decodeBody(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	ctx := r.Context()
	uid := userID(ctx)
	spiderID, spiderName, err := spiderFields(req.SpiderID, req.SpiderName)
	if err != nil {
		writeError(w, err)
		return
	}
	cronSpec, err := optString(req.Cron, "cron")
	if err != nil {
		writeError(w, err)
		return
	}
	zone, err := zoneField(req.Timezone)
	if err != nil {
		writeError(w, err)
		return
	}
	spec, err := schedule.Parse(cronSpec, zone)
	if err != nil {
		writeError(w, err)
		return
	}
	args, err := ValidArguments(req.Arguments)
	if err != nil {
		writeError(w, err)
		return
	}
	timeout, err := ValidTimeout(req.TimeoutSeconds)
	if err != nil {
		writeError(w, err)
		return
	}
	enabled, err := boolField(req.Enabled, "enabled", true)
	if err != nil {
		writeError(w, err)
		return
	}
	noOverlap, err := boolField(req.NoOverlap, "no_overlap", false)
	if err != nil {
		writeError(w, err)
		return
	}
	sp, err := s.spiderByIDOrName(ctx, uid, spiderID, spiderName)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	sc := scrapethis.Schedule{
		UserID:         uid,
		SpiderID:       sp.ID,
		Cron:           cronSpec,
		Timezone:       zone,
		Arguments:      args,
		Enabled:        enabled,
		TimeoutSeconds: timeout,
		NoOverlap:      noOverlap,
	}
	if enabled {
		next := spec.Next(time.Now())
		sc.NextRunAt = &next
	}
	sc, err = s.db.CreateSchedule(ctx, sc)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, toScheduleJSON(sc, sp))
}

func (s *Server) listSchedules(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	uid := userID(ctx)
	list, err := s.db.Schedules(ctx, uid)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	spiders, err := s.db.Spiders(ctx, uid)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	byID := make(map[string]scrapethis.Spider, len(spiders))
	for _, sp := range spiders {
		byID[sp.ID] = sp
	}
	out := make([]scheduleJSON, 0, len(list))
	for _, sc := range list {
		sp, ok := byID[sc.SpiderID]
		if !ok {
			continue // its spider was deleted since, and the schedule with it
		}
		out = append(out, toScheduleJSON(sc, sp))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) getSchedule(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	sc, err := s.db.Schedule(ctx, userID(ctx), scheduleParam(r))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.writeSchedule(w, r, http.StatusOK, sc)
}

// writeSchedule answers a schedule with its spider.
func (s *Server) writeSchedule(w http.ResponseWriter, r *http.Request, status int, sc scrapethis.Schedule) {
	sp, err := s.db.Spider(r.Context(), sc.UserID, sc.SpiderID)
	if scrapethis.ErrorCode(err) == scrapethis.ENotFound {
		writeError(w, errScheduleNotFound) // deleted with its spider just now
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, status, toScheduleJSON(sc, sp))
}

// patchScheduleRequest is the fields PATCH may change; POST takes them too.
type patchScheduleRequest struct {
	Cron           json.RawMessage `json:"cron"`
	Timezone       json.RawMessage `json:"timezone"`
	Arguments      json.RawMessage `json:"arguments"`
	Enabled        json.RawMessage `json:"enabled"`
	TimeoutSeconds json.RawMessage `json:"timeout_seconds"`
	NoOverlap      json.RawMessage `json:"no_overlap"`
}

// updateSchedule changes the fields present in the body. When the timing
// changes (cron, timezone, or enabled turned on), next_run_at is
// recomputed from now at once; disabling clears it. Other fields leave it
// alone, so a fire that is due is not lost to an unrelated edit.
func (s *Server) updateSchedule(w http.ResponseWriter, r *http.Request) {
	var req patchScheduleRequest
	if err := decodeBody(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	// p holds the new values of the fields present, each checked alone.
	var p scrapethis.Schedule
	cronSpec, zone, args, timeout := present(req.Cron), present(req.Timezone), present(req.Arguments), present(req.TimeoutSeconds)
	enabled, noOverlap := present(req.Enabled), present(req.NoOverlap)
	var err error
	if cronSpec {
		if p.Cron, err = reqString(req.Cron, "cron"); err == nil {
			_, err = schedule.ParseIn(p.Cron, time.UTC) // checked with its zone again below
		}
	}
	if zone && err == nil {
		if p.Timezone, err = zoneField(req.Timezone); err == nil {
			_, err = schedule.LoadZone(p.Timezone)
		}
	}
	if args && err == nil {
		p.Arguments, err = ValidArguments(req.Arguments)
	}
	if timeout && err == nil {
		p.TimeoutSeconds, err = ValidTimeout(req.TimeoutSeconds)
	}
	if enabled && err == nil {
		p.Enabled, err = reqBool(req.Enabled, "enabled")
	}
	if noOverlap && err == nil {
		p.NoOverlap, err = reqBool(req.NoOverlap, "no_overlap")
	}
	if err != nil {
		writeError(w, err)
		return
	}
	ctx := r.Context()
	sc, err := s.db.UpdateSchedule(ctx, userID(ctx), scheduleParam(r), func(sc *scrapethis.Schedule) error {
		retime := sc.NextRunAt == nil // stopped, or disabled: recompute if it is to run
		if cronSpec && p.Cron != sc.Cron {
			sc.Cron, retime = p.Cron, true
		}
		if zone && p.Timezone != sc.Timezone {
			sc.Timezone, retime = p.Timezone, true
		}
		if args {
			sc.Arguments = p.Arguments
		}
		if timeout {
			sc.TimeoutSeconds = p.TimeoutSeconds
		}
		if enabled {
			sc.Enabled = p.Enabled
		}
		if noOverlap {
			sc.NoOverlap = p.NoOverlap
		}
		if !sc.Enabled {
			sc.NextRunAt = nil
			return nil
		}
		if !retime {
			return nil
		}
		spec, err := schedule.Parse(sc.Cron, sc.Timezone)
		if err != nil {
			return err
		}
		next := spec.Next(time.Now())
		sc.NextRunAt = &next
		return nil
	})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.writeSchedule(w, r, http.StatusOK, sc)
}

func (s *Server) deleteSchedule(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if err := s.db.DeleteSchedule(ctx, userID(ctx), scheduleParam(r)); err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"ok": true, "message": "Schedule deleted"})
}

func scheduleParam(r *http.Request) string {
	return httprouter.ParamsFromContext(r.Context()).ByName("id")
}

// present reports whether a field was in the body at all (null included).
func present(raw json.RawMessage) bool { return len(raw) > 0 }

// reqString reads a field that, when present, must be a string.
func reqString(raw json.RawMessage, field string) (string, error) {
	var v string
	if string(raw) == "null" || json.Unmarshal(raw, &v) != nil {
		return "", scrapethis.Errorf(scrapethis.EInvalid, "%s must be a string", field)
	}
	return strings.TrimSpace(v), nil
}

// reqBool reads a field that, when present, must be true or false.
func reqBool(raw json.RawMessage, field string) (bool, error) {
	var v bool
	if string(raw) == "null" || json.Unmarshal(raw, &v) != nil {
		return false, scrapethis.Errorf(scrapethis.EInvalid, "%s must be true or false", field)
	}
	return v, nil
}

// zoneField reads an optional timezone: absent or null is UTC.
func zoneField(raw json.RawMessage) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "UTC", nil
	}
	return reqString(raw, "timezone")
}

// boolField reads an optional boolean: absent or null is def.
func boolField(raw json.RawMessage, field string, def bool) (bool, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return def, nil
	}
	return reqBool(raw, field)
}
