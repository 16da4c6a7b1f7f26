package api

import (
	"bytes"
	"encoding/json"
	"net/http"
	"time"

	"github.com/julienschmidt/httprouter"

	"github.com/scrapethis/scrapethis"
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
	Priority       int             `json:"priority"`
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
		Priority:       priorityOf(sc.Priority),
		NextRunAt:      optTime(sc.NextRunAt),
		LastRunAt:      optTime(sc.LastRunAt),
		CreatedAt:      apiTime(sc.CreatedAt),
		UpdatedAt:      apiTime(sc.UpdatedAt),
		Spider:         spiderRef{ID: sp.ID, Name: sp.Name, RepoPath: sp.RepoPath},
	}
}

// priorityOf is a stored priority as the API shows it.
func priorityOf(p *int) int {
	if p == nil {
		return scrapethis.PriorityDefault
	}
	return *p
}

var errScheduleNotFound = scrapethis.Errorf(scrapethis.ENotFound, "Schedule not found")

type createScheduleRequest struct {
	SpiderID   optional `json:"spider_id"`
	SpiderName optional `json:"spider_name"`
	patchScheduleRequest
}

func (s *Server) createSchedule(w http.ResponseWriter, r *http.Request) error {
	var req createScheduleRequest
	if err := decodeBody(w, r, &req); err != nil {
		return err
	}
	ctx := r.Context()
	uid := userID(ctx)
	spiderID, spiderName, err := spiderFields(req.SpiderID, req.SpiderName)
	if err != nil {
		return err
	}
	sc := scrapethis.Schedule{UserID: uid, Arguments: req.Arguments.raw}
	if sc.Cron, err = req.Cron.str("cron"); err != nil {
		return err
	}
	if sc.Timezone, err = req.Timezone.str("timezone"); err != nil {
		return err
	}
	if req.Timezone.null() {
		sc.Timezone = "UTC"
	}
	if sc.TimeoutSeconds, err = req.TimeoutSeconds.timeout(); err != nil {
		return err
	}
	if sc.Enabled, err = req.Enabled.boolean("enabled", true); err != nil {
		return err
	}
	if sc.NoOverlap, err = req.NoOverlap.boolean("no_overlap", false); err != nil {
		return err
	}
	if sc.Priority, err = req.Priority.priority(); err != nil {
		return err
	}
	if err := sc.Validate(); err != nil {
		return err
	}
	if sc.NextRunAt, err = sc.NextRun(time.Now()); err != nil {
		return err
	}
	sp, err := s.spiderByIDOrName(ctx, uid, spiderID, spiderName)
	if err != nil {
		return err
	}
	sc.SpiderID = sp.ID
	if sc, err = s.db.CreateSchedule(ctx, sc); err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, toScheduleJSON(sc, sp))
	return nil
}

func (s *Server) listSchedules(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	uid := userID(ctx)
	list, err := s.db.Schedules(ctx, uid)
	if err != nil {
		return err
	}
	spiders, err := s.db.Spiders(ctx, uid)
	if err != nil {
		return err
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
	return nil
}

func (s *Server) getSchedule(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	sc, err := s.db.Schedule(ctx, userID(ctx), scheduleParam(r))
	if err != nil {
		return err
	}
	return s.writeSchedule(w, r, http.StatusOK, sc)
}

// writeSchedule answers a schedule with its spider.
func (s *Server) writeSchedule(w http.ResponseWriter, r *http.Request, status int, sc scrapethis.Schedule) error {
	sp, err := s.db.Spider(r.Context(), sc.UserID, sc.SpiderID)
	if scrapethis.ErrorCode(err) == scrapethis.ENotFound {
		return errScheduleNotFound // deleted with its spider just now
	}
	if err != nil {
		return err
	}
	writeJSON(w, status, toScheduleJSON(sc, sp))
	return nil
}

// patchScheduleRequest is the fields PATCH may change; POST takes them too.
type patchScheduleRequest struct {
	Cron           optional `json:"cron"`
	Timezone       optional `json:"timezone"`
	Arguments      optional `json:"arguments"`
	Enabled        optional `json:"enabled"`
	TimeoutSeconds optional `json:"timeout_seconds"`
	NoOverlap      optional `json:"no_overlap"`
	Priority       optional `json:"priority"`
}

// apply sets on sc the fields present in the request, checking the type of
// each; the caller validates the result as a whole. It reports whether the
// timing changed (cron or timezone).
func (p patchScheduleRequest) apply(sc *scrapethis.Schedule) (retime bool, err error) {
	for _, f := range []struct {
		o          optional
		name, want string
	}{{p.Cron, "cron", "a string"}, {p.Timezone, "timezone", "a string"}, {p.Enabled, "enabled", "true or false"}, {p.NoOverlap, "no_overlap", "true or false"},
		{p.Priority, "priority", "a whole number from 0 to 4"}} {
		if err := f.o.notNull(f.name, f.want); err != nil {
			return false, err
		}
	}
	if p.Cron.set {
		cron, err := p.Cron.str("cron")
		if err != nil {
			return false, err
		}
		retime = cron != sc.Cron
		sc.Cron = cron
	}
	if p.Timezone.set {
		zone, err := p.Timezone.str("timezone")
		if err != nil {
			return false, err
		}
		retime = retime || zone != sc.Timezone
		sc.Timezone = zone
	}
	if p.Arguments.set {
		sc.Arguments = p.Arguments.raw
	}
	if p.TimeoutSeconds.set {
		if sc.TimeoutSeconds, err = p.TimeoutSeconds.timeout(); err != nil {
			return false, err
		}
	}
	if sc.Enabled, err = p.Enabled.boolean("enabled", sc.Enabled); err != nil {
		return false, err
	}
	if sc.NoOverlap, err = p.NoOverlap.boolean("no_overlap", sc.NoOverlap); err != nil {
		return false, err
	}
	if p.Priority.set {
		if sc.Priority, err = p.Priority.priority(); err != nil {
			return false, err
		}
	}
	return retime, nil
}

// updateSchedule changes the fields present in the body. When the timing
// changes (cron, timezone, or enabled turned on), next_run_at is
// recomputed from now at once; disabling clears it. Other fields leave it
// alone, so a fire that is due is not lost to an unrelated edit.
func (s *Server) updateSchedule(w http.ResponseWriter, r *http.Request) error {
	var req patchScheduleRequest
	if err := decodeBody(w, r, &req); err != nil {
		return err
	}
	// The body alone is checked first, so that a bad one is a 400 even for
	// a schedule that does not exist; its arguments are normalised here.
	probe := scrapethis.Schedule{Cron: "@daily", Timezone: "UTC"}
	if _, err := req.apply(&probe); err != nil {
		return err
	}
	if err := probe.Validate(); err != nil {
		return err
	}
	ctx := r.Context()
	sc, err := s.db.UpdateSchedule(ctx, userID(ctx), scheduleParam(r), func(sc *scrapethis.Schedule) error {
		stopped := sc.NextRunAt == nil // stopped, or disabled: recompute if it is to run
		retime, err := req.apply(sc)
		if err != nil {
			return err
		}
		if req.Arguments.set {
			sc.Arguments = probe.Arguments
		}
		if !sc.Enabled || retime || stopped {
			sc.NextRunAt, err = sc.NextRun(time.Now())
		}
		return err
	})
	if err != nil {
		return err
	}
	return s.writeSchedule(w, r, http.StatusOK, sc)
}

func (s *Server) deleteSchedule(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	if err := s.db.DeleteSchedule(ctx, userID(ctx), scheduleParam(r)); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"ok": true, "message": "Schedule deleted"})
	return nil
}

func scheduleParam(r *http.Request) string {
	return httprouter.ParamsFromContext(r.Context()).ByName("id")
}
