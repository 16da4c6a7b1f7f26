package api

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/julienschmidt/httprouter"

	"github.com/scrapethis/scrapethis"
	"github.com/scrapethis/scrapethis/db"
)

// MaxTimeoutSeconds is the longest per-job timeout accepted (30 days).
const MaxTimeoutSeconds = 30 * 24 * 3600

func (s *Server) listJobs(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := scrapethis.JobFilter{UserID: userID(r.Context()), Limit: 50}
	if v := q.Get("status"); v != "" || q.Has("status") {
		if !scrapethis.Status(v).Valid() {
			writeError(w, scrapethis.Errorf(scrapethis.EInvalid, "Invalid status: must be one of pending, running, finished, cancelled, error"))
			return
		}
		f.Status = scrapethis.Status(v)
	}
	if v := q.Get("spider_id"); v != "" || q.Has("spider_id") {
		if _, err := uuid.Parse(v); err != nil {
			writeError(w, scrapethis.Errorf(scrapethis.EInvalid, "Invalid spider_id: must be a UUID"))
			return
		}
		f.SpiderID = strings.ToLower(v)
	}
	if v := q.Get("limit"); v != "" || q.Has("limit") {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			writeError(w, scrapethis.Errorf(scrapethis.EInvalid, "Invalid limit: must be a whole number from 1 to %d", db.MaxListLimit))
			return
		}
		f.Limit = min(n, db.MaxListLimit)
	}
	if v := q.Get("before"); v != "" || q.Has("before") {
		c, err := parseCursor(v)
		if err != nil {
			writeError(w, scrapethis.Errorf(scrapethis.EInvalid, "Invalid before: not a cursor from a Link header"))
			return
		}
		f.Before = &c
	}
	jobs, err := s.db.Jobs(r.Context(), f)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := make([]jobJSON, len(jobs))
	for i, j := range jobs {
		out[i] = toJobJSON(j)
	}
	if len(jobs) == f.Limit {
		last := jobs[len(jobs)-1]
		next := url.Values{}
		for k, v := range q {
			next[k] = v
		}
		next.Set("limit", strconv.Itoa(f.Limit))
		next.Set("before", formatCursor(scrapethis.JobCursor{CreatedAt: last.CreatedAt, ID: last.ID}))
		w.Header().Set("Link", fmt.Sprintf(`<%s?%s>; rel="next"`, r.URL.Path, next.Encode()))
	}
	writeJSON(w, http.StatusOK, out)
}

// A cursor is the last job's created_at (Unix microseconds) and id.
func formatCursor(c scrapethis.JobCursor) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(c.CreatedAt.UnixMicro(), 10) + "/" + c.ID))
}

func parseCursor(s string) (scrapethis.JobCursor, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return scrapethis.JobCursor{}, err
	}
	ts, id, ok := strings.Cut(string(b), "/")
	if !ok {
		return scrapethis.JobCursor{}, fmt.Errorf("no separator")
	}
	us, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return scrapethis.JobCursor{}, err
	}
	if _, err := uuid.Parse(id); err != nil {
		return scrapethis.JobCursor{}, err
	}
	return scrapethis.JobCursor{CreatedAt: time.UnixMicro(us), ID: id}, nil
}

type createJobRequest struct {
	SpiderID       json.RawMessage `json:"spider_id"`
	SpiderName     json.RawMessage `json:"spider_name"`
	Arguments      json.RawMessage `json:"arguments"`
	TimeoutSeconds json.RawMessage `json:"timeout_seconds"`
}

func (s *Server) createJob(w http.ResponseWriter, r *http.Request) {
	var req createJobRequest
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
	if spiderID == "" {
		sp, err := s.spiderByIDOrName(ctx, uid, "", spiderName)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		spiderID = sp.ID
	}
	job, err := s.creates.Do(ctx, scrapethis.NewJob{UserID: uid, SpiderID: spiderID, Arguments: args, TimeoutSeconds: timeout})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.metrics().JobCreated()
	s.log.Debug("job created", "job_id", job.ID, "spider", job.SpiderName, "user_id", uid)
	s.enqueue(ctx, job)
	writeJSON(w, http.StatusOK, map[string]string{"jobId": job.ID, "status": string(job.Status)})
}

// enqueue hands the committed job to Redis. A failure loses nothing: the
// row is committed and the reconciler enqueues pending jobs missing from
// Redis, so the client still gets its job.
func (s *Server) enqueue(ctx context.Context, job scrapethis.Job) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Second)
	defer cancel()
	if err := s.queuer.Enqueue(ctx, job); err != nil {
		s.log.Warn("enqueue failed; the reconciler will retry", "job_id", job.ID, "spider", job.SpiderName, "user_id", job.UserID, "err", err)
	}
}

// spiderFields reads the spider_id / spider_name pair of a request body;
// one of them must be there.
func spiderFields(idRaw, nameRaw json.RawMessage) (id, name string, err error) {
	if id, err = optString(idRaw, "spider_id"); err != nil {
		return "", "", err
	}
	if name, err = optString(nameRaw, "spider_name"); err != nil {
		return "", "", err
	}
	if id == "" && name == "" {
		return "", "", scrapethis.Errorf(scrapethis.EInvalid, "Missing spider_id or spider_name")
	}
	return id, name, nil
}

// spiderByIDOrName returns the user's live spider with the id, or else
// with the name.
func (s *Server) spiderByIDOrName(ctx context.Context, uid, id, name string) (scrapethis.Spider, error) {
	if id != "" {
		return s.db.Spider(ctx, uid, id)
	}
	if strings.IndexByte(name, 0) >= 0 { // no such name, and Postgres would refuse it
		return scrapethis.Spider{}, scrapethis.Errorf(scrapethis.ENotFound, "Spider not found")
	}
	return s.db.SpiderByName(ctx, uid, name)
}

// optString reads an optional string field: absent or null is "".
func optString(raw json.RawMessage, field string) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	var v string
	if err := json.Unmarshal(raw, &v); err != nil {
		return "", scrapethis.Errorf(scrapethis.EInvalid, "%s must be a string", field)
	}
	return strings.TrimSpace(v), nil
}

// MaxArgumentDepth bounds how deeply argument values may nest.
const MaxArgumentDepth = 32

// ValidArguments checks that raw is absent, null or a JSON object whose keys
// are identifiers, and returns it re-encoded, so that what is stored is
// plain UTF-8 JSON that Postgres accepts: no NUL characters, no lone
// surrogates, nesting at most MaxArgumentDepth deep.
func ValidArguments(raw json.RawMessage) (json.RawMessage, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return json.RawMessage(`{}`), nil
	}
	if raw[0] != '{' {
		return nil, scrapethis.Errorf(scrapethis.EInvalid, "arguments must be a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, scrapethis.Errorf(scrapethis.EInvalid, "arguments must be a JSON object")
	}
	for k, v := range m {
		if !scrapethis.ValidArgumentKey(k) {
			return nil, scrapethis.Errorf(scrapethis.EInvalid, "arguments key %q is not an identifier (letters, digits and _, not starting with a digit)", k)
		}
		if err := checkValue(v, 1); err != nil {
			return nil, scrapethis.Errorf(scrapethis.EInvalid, "arguments.%s: %s", k, err.Error())
		}
	}
	out, err := json.Marshal(m)
	if err != nil {
		return nil, scrapethis.Errorf(scrapethis.EInvalid, "arguments must be a JSON object")
	}
	return out, nil
}

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

// ValidTimeout reads an optional timeout_seconds.
func ValidTimeout(raw json.RawMessage) (*int, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	n, err := strconv.Atoi(string(bytes.TrimSpace(raw)))
	if err != nil || n < 1 || n > MaxTimeoutSeconds {
		return nil, scrapethis.Errorf(scrapethis.EInvalid, "timeout_seconds must be a whole number from 1 to %d", MaxTimeoutSeconds)
	}
	return &n, nil
}

func (s *Server) getJob(w http.ResponseWriter, r *http.Request) {
	job, err := s.db.Job(r.Context(), userID(r.Context()), jobParam(r))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toJobJSON(job))
}

func jobParam(r *http.Request) string {
	return httprouter.ParamsFromContext(r.Context()).ByName("id")
}

var errCancelFailed = scrapethis.Errorf(scrapethis.EInternal, "Failed to cancel job")

// cancelJob records the cancel in Postgres first, then withdraws the task
// or publishes the cancel to the worker running it. A worker also polls the
// row, so a lost message costs about a second, never a job that runs on.
func (s *Server) cancelJob(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	uid := userID(ctx)
	job, err := s.db.CancelJob(ctx, uid, jobParam(r))
	if scrapethis.ErrorCode(err) == scrapethis.ENotFound {
		writeError(w, scrapethis.Errorf(scrapethis.ENotFound, "Job not found"))
		return
	}
	if err != nil {
		s.log.Error("cancel failed", "job_id", jobParam(r), "user_id", uid, "err", err)
		writeError(w, errCancelFailed)
		return
	}
	switch job.Status {
	case scrapethis.StatusFinished:
		writeError(w, scrapethis.Errorf(scrapethis.EConflict, "Job already finished"))
		return
	case scrapethis.StatusError:
		writeError(w, scrapethis.Errorf(scrapethis.EConflict, "Job already ended in error"))
		return
	case scrapethis.StatusCancelled:
		if err := s.queuer.Withdraw(ctx, job.ID); err != nil {
			s.log.Warn("withdraw task failed; the worker will skip the cancelled job", "job_id", job.ID, "spider", job.SpiderName, "user_id", uid, "err", err)
		}
	case scrapethis.StatusRunning:
		if err := s.queuer.Cancel(ctx, job.ID); err != nil {
			s.log.Warn("publish cancel failed; the worker will see it in Postgres", "job_id", job.ID, "spider", job.SpiderName, "user_id", uid, "err", err)
		}
		s.awaitFinal(ctx, uid, job.ID)
	}
	writeJSON(w, http.StatusOK, map[string]any{"ok": true, "message": "Job cancelled"})
}

// awaitFinal waits, up to CancelWait, for a cancelled running job to end,
// so that a client reading the job right after DELETE usually sees it final.
func (s *Server) awaitFinal(ctx context.Context, uid, id string) {
	deadline := time.Now().Add(s.CancelWait)
	for delay := 5 * time.Millisecond; time.Now().Before(deadline); delay = min(delay*2, 100*time.Millisecond) {
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		j, err := s.db.Job(ctx, uid, id)
		if err != nil || j.Status.Final() {
			return
		}
	}
}
