package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/julienschmidt/httprouter"

	"github.com/scrapethis/scrapethis"
	"github.com/scrapethis/scrapethis/db"
)

func (s *Server) listJobs(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	f := scrapethis.JobFilter{UserID: userID(r.Context()), Limit: 50}
	if v := q.Get("status"); v != "" || q.Has("status") {
		if !scrapethis.Status(v).Valid() {
			return scrapethis.Errorf(scrapethis.EInvalid, "Invalid status: must be one of pending, running, finished, cancelled, error")
		}
		f.Status = scrapethis.Status(v)
	}
	if v := q.Get("spider_id"); v != "" || q.Has("spider_id") {
		if !canonicalUUID(v) {
			return scrapethis.Errorf(scrapethis.EInvalid, "Invalid spider_id: must be a UUID")
		}
		f.SpiderID = v
	}
	if v := q.Get("limit"); v != "" || q.Has("limit") {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return scrapethis.Errorf(scrapethis.EInvalid, "Invalid limit: must be a whole number from 1 to %d", db.MaxListLimit)
		}
		f.Limit = min(n, db.MaxListLimit)
	}
	if v := q.Get("before"); v != "" || q.Has("before") {
		c, err := parseCursor(v)
		if err != nil {
			return scrapethis.Errorf(scrapethis.EInvalid, "Invalid before: not a cursor from a Link header")
		}
		f.Before = &c
	}
	jobs, err := s.db.Jobs(r.Context(), f)
	if err != nil {
		return err
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
	return nil
}

// canonicalUUID reports whether s is an id of ours (scrapethis.CanonicalID).
func canonicalUUID(s string) bool { return scrapethis.CanonicalID(s) }

func formatCursor(c scrapethis.JobCursor) string { return c.Encode() }

func parseCursor(s string) (scrapethis.JobCursor, error) { return scrapethis.ParseJobCursor(s) }

type createJobRequest struct {
	SpiderID       optional        `json:"spider_id"`
	SpiderName     optional        `json:"spider_name"`
	Arguments      json.RawMessage `json:"arguments"`
	TimeoutSeconds optional        `json:"timeout_seconds"`
	Version        optional        `json:"version"`
	Settings       json.RawMessage `json:"settings"`
	MemoryMB       optional        `json:"memory_mb"`
	Priority       optional        `json:"priority"`
}

// createJob starts a job. With an Idempotency-Key header the key is stored
// with the job in one statement; a key its user already used answers the
// first answer (same body) or 422 (another body), and a key whose first
// request is still running here answers 409.
func (s *Server) createJob(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	uid := userID(ctx)
	key, keyed := r.Header.Get("Idempotency-Key"), len(r.Header.Values("Idempotency-Key")) > 0
	if !keyed {
		job, err := s.newJob(w, r, uid, "", nil)
		if err != nil {
			return err
		}
		return s.jobCreated(ctx, w, job)
	}
	if !validIdempotencyKey(key) {
		return scrapethis.Errorf(scrapethis.EInvalid, "Invalid Idempotency-Key: 1 to 255 visible ASCII characters")
	}
	release, ok := s.inflight.claim(uid + "\x00" + key)
	if !ok {
		return errKeyInFlight
	}
	defer release()
	digest := sha256.New()
	r.Body = struct {
		io.Reader
		io.Closer
	}{io.TeeReader(r.Body, digest), r.Body}
	job, err := s.newJob(w, r, uid, key, digest)
	if err == nil {
		return s.jobCreated(ctx, w, job)
	}
	used, lerr := s.db.IdempotencyKey(ctx, uid, key)
	switch {
	case scrapethis.ErrorCode(lerr) == scrapethis.ENotFound:
		return err
	case lerr != nil:
		return lerr
	case !bytes.Equal(used.RequestHash, digest.Sum(nil)):
		return scrapethis.Errorf(scrapethis.EUnprocessable, "Idempotency-Key was already used with another request body")
	}
	w.Header().Set("Idempotent-Replayed", "true")
	writeJSON(w, http.StatusOK, map[string]string{"jobId": used.JobID, "status": string(scrapethis.StatusPending)})
	return nil
}

var errKeyInFlight = scrapethis.Errorf(scrapethis.EConflict, "A request with this Idempotency-Key is still in progress")

// validIdempotencyKey: 1 to 255 visible ASCII characters.
func validIdempotencyKey(k string) bool {
	if k == "" || len(k) > 255 {
		return false
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x21 || k[i] > 0x7e {
			return false
		}
	}
	return true
}

func (s *Server) jobCreated(ctx context.Context, w http.ResponseWriter, job scrapethis.Job) error {
	s.metrics().JobCreated()
	s.log.Debug("job created", "job_id", job.ID, "spider", job.SpiderName, "user_id", job.UserID, "held", job.Held)
	if job.Held {
		s.metrics().JobsHeld(1) // a cap holds it back: it is let go when a job of its user ends
	} else {
		s.enqueue(ctx, job)
	}
	writeJSON(w, http.StatusOK, map[string]string{"jobId": job.ID, "status": string(job.Status)})
	return nil
}

// newJob decodes, validates and inserts one job; with a key, the whole body
// is read into hash first and the key goes in with the job.
func (s *Server) newJob(w http.ResponseWriter, r *http.Request, uid, key string, digest hash.Hash) (scrapethis.Job, error) {
	var req createJobRequest
	err := decodeBody(w, r, &req)
	if digest != nil {
		// The decoder may stop short of the end: hash all of the body.
		if _, cerr := io.Copy(io.Discard, r.Body); cerr != nil && err == nil {
			err = scrapethis.Errorf(scrapethis.ETooLarge, "Request body too large (limit 1 MiB)")
		}
	}
	if err != nil {
		return scrapethis.Job{}, err
	}
	ctx := r.Context()
	spiderID, spiderName, err := spiderFields(req.SpiderID, req.SpiderName)
	if err != nil {
		return scrapethis.Job{}, err
	}
	nj := scrapethis.NewJob{UserID: uid, SpiderID: spiderID, Arguments: req.Arguments, Settings: req.Settings}
	if nj.Version, err = req.Version.str("version"); err != nil {
		return scrapethis.Job{}, err
	}
	if nj.MemoryMB, err = req.MemoryMB.positive("memory_mb"); err != nil {
		return scrapethis.Job{}, err
	}
	if nj.Priority, err = req.Priority.priority(); err != nil {
		return scrapethis.Job{}, err
	}
	if err := scrapethis.ValidateMemory(nj.MemoryMB, s.MaxMemoryMB); err != nil {
		return scrapethis.Job{}, err
	}
	if nj.SpiderID == "" {
		nj.SpiderID = "-" // looked up by name below, once the body is known good
	}
	if nj.TimeoutSeconds, err = req.TimeoutSeconds.timeout(); err != nil {
		return scrapethis.Job{}, err
	}
	if err := nj.Validate(); err != nil {
		return scrapethis.Job{}, err
	}
	if spiderID == "" {
		sp, err := s.spiderByIDOrName(ctx, uid, "", spiderName)
		if err != nil {
			return scrapethis.Job{}, err
		}
		nj.SpiderID = sp.ID
	}
	if key != "" {
		nj.IdempotencyKey, nj.RequestHash = key, digest.Sum(nil)
	}
	return s.creates.Do(ctx, nj)
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

// release enqueues the held jobs that job's leaving its place let go; on
// failure the reconciler lets them go.
func (s *Server) release(ctx context.Context, job scrapethis.Job) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	let, err := s.db.Release(ctx, job)
	if err != nil {
		s.log.Warn("held jobs not let go; the reconciler will", "user_id", job.UserID, "err", err)
	}
	s.enqueueLetGo(ctx, let)
}

// enqueueLetGo enqueues held jobs just let go, best first.
func (s *Server) enqueueLetGo(ctx context.Context, jobs []scrapethis.Job) {
	if len(jobs) > 0 {
		s.metrics().JobsLetGo(len(jobs))
	}
	for _, j := range jobs {
		s.enqueue(ctx, j)
	}
}

// spiderFields reads the spider_id / spider_name pair of a request body;
// one of them must be there.
func spiderFields(idField, nameField optional) (id, name string, err error) {
	if id, err = idField.str("spider_id"); err != nil {
		return "", "", err
	}
	if name, err = nameField.str("spider_name"); err != nil {
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

func (s *Server) getJob(w http.ResponseWriter, r *http.Request) error {
	job, err := s.db.Job(r.Context(), userID(r.Context()), jobParam(r))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, toJobJSON(job))
	return nil
}

func jobParam(r *http.Request) string {
	return httprouter.ParamsFromContext(r.Context()).ByName("id")
}

var errCancelFailed = scrapethis.Errorf(scrapethis.EInternal, "Failed to cancel job")

// cancelJob records the cancel in Postgres first, then withdraws the task
// or publishes the cancel to the worker running it. A worker also polls the
// row, so a lost message costs about a second, never a job that runs on.
func (s *Server) cancelJob(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	uid := userID(ctx)
	job, err := s.db.CancelJob(ctx, uid, jobParam(r))
	switch code := scrapethis.ErrorCode(err); {
	case code == scrapethis.ENotFound:
		return scrapethis.Errorf(scrapethis.ENotFound, "Job not found")
	case code == scrapethis.EUnavailable:
		return err
	case err != nil:
		return fmt.Errorf("%w: %w", errCancelFailed, err)
	}
	switch job.Status {
	case scrapethis.StatusFinished:
		return scrapethis.Errorf(scrapethis.EConflict, "Job already finished")
	case scrapethis.StatusError:
		return scrapethis.Errorf(scrapethis.EConflict, "Job already ended in error")
	case scrapethis.StatusCancelled:
		if job.Held {
			break // held back by a cap: it has no task
		}
		if err := s.queuer.Withdraw(ctx, job); err != nil {
			s.log.Warn("withdraw task failed; the worker will skip the cancelled job", "job_id", job.ID, "spider", job.SpiderName, "user_id", uid, "err", err)
		}
		// Its place under the caps is free.
		s.release(ctx, job)
	case scrapethis.StatusRunning:
		if err := s.queuer.Cancel(ctx, job.ID); err != nil {
			s.log.Warn("publish cancel failed; the worker will see it in Postgres", "job_id", job.ID, "spider", job.SpiderName, "user_id", uid, "err", err)
		}
		s.awaitFinal(ctx, uid, job.ID)
	}
	writeJSON(w, http.StatusOK, map[string]any{"ok": true, "message": "Job cancelled"})
	return nil
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
