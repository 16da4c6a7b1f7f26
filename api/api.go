// Package api is the HTTP API: one route table, Bearer-key authentication,
// and the handlers for spiders, jobs, items, logs and schedules.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/julienschmidt/httprouter"

	"github.com/scrapethis/scrapethis"
	"github.com/scrapethis/scrapethis/archive"
	"github.com/scrapethis/scrapethis/batch"
	"github.com/scrapethis/scrapethis/db"
	"github.com/scrapethis/scrapethis/storage"
	"github.com/scrapethis/scrapethis/tasks"
)

// MaxBodyBytes is the largest request body accepted; larger ones get 413.
const MaxBodyBytes = 1 << 20

// Server holds the API's dependencies.
type Server struct {
	db       *db.DB
	queuer   *tasks.Queuer
	auths    *batch.Batcher[string, string]
	creates  *batch.Batcher[scrapethis.NewJob, scrapethis.Job]
	keys     *keyCache
	inflight inflight
	log      *slog.Logger

	// CancelWait is how long DELETE of a running job waits for the worker
	// to stop the spider before answering; the cancel is durable either way.
	CancelWait time.Duration
	// ReadTimeout bounds reading a request's body (RequestReadTimeout by
	// default; uploads get UploadReadTimeout).
	ReadTimeout time.Duration
	// ArchiveLimits bound uploaded archives (zero fields: the defaults).
	ArchiveLimits archive.Limits
	// MaxMemoryMB is the most memory_mb a job may ask for.
	MaxMemoryMB int
	// WebhookAllowPrivate lets webhook URLs name private and loopback hosts.
	WebhookAllowPrivate bool
	archives            storage.Store
	uploads             chan struct{}
	authFails           *throttle
	follows             *follower
	// Ops are the operators' endpoints (metrics, probes, monitoring UI);
	// set them before calling Handler.
	Ops Ops
	// Console, when set, serves every path outside /api/ that no route of
	// the API or Ops matches (the web console, at /).
	Console http.Handler
	as      asUser
}

// New returns the API server.
// Call Close when done with it.
func New(store *db.DB, queuer *tasks.Queuer, log *slog.Logger) *Server {
	s := &Server{db: store, queuer: queuer, log: log, CancelWait: 2 * time.Second, ReadTimeout: RequestReadTimeout,
		keys: newKeyCache(time.Minute), archives: storage.NewPostgres(store), uploads: make(chan struct{}, MaxConcurrentUploads),
		authFails:   newThrottle(AuthBurst, AuthRate),
		follows:     newFollower(store, 250*time.Millisecond),
		MaxMemoryMB: 4096}
	// Concurrent key lookups and job inserts share round trips and commits.
	ctx := context.Background()
	s.auths = batch.New(ctx, 2, 128, func(ctx context.Context, keys []string) ([]batch.Result[string], error) {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		users, err := store.UsersByKeys(ctx, keys)
		if err != nil {
			return nil, err
		}
		out := make([]batch.Result[string], len(users))
		for i, u := range users {
			out[i].Value = u
		}
		return out, nil
	})
	s.creates = batch.New(ctx, 1, 256, func(ctx context.Context, jobs []scrapethis.NewJob) ([]batch.Result[scrapethis.Job], error) {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		created, errs, others, err := store.CreateJobsLetGo(ctx, jobs)
		if err != nil {
			return nil, err
		}
		s.enqueueLetGo(ctx, others) // older held jobs this batch's admission let go
		out := make([]batch.Result[scrapethis.Job], len(created))
		for i := range created {
			out[i] = batch.Result[scrapethis.Job]{Value: created[i], Err: errs[i]}
		}
		return out, nil
	})
	return s
}

// CacheKeys caches key lookups while a watch on key revocations, on a
// connection of its own, is live; it runs until ctx ends, and its caller
// waits for it. Without it every request looks its key up.
func (s *Server) CacheKeys(ctx context.Context) error {
	defer s.keys.setLive(false)
	return s.db.WatchKeys(ctx, s.keys.clear, s.keys.setLive)
}

// KeyCacheLive reports whether key lookups are being cached now.
func (s *Server) KeyCacheLive() bool { return s.keys.isLive() }

// Close stops the server's batchers; in-flight requests finish first.
func (s *Server) Close() {
	s.auths.Close()
	s.creates.Close()
	s.follows.close()
}

// Handler returns the route table, with every request logged, counted and
// given its deadlines.
func (s *Server) Handler() http.Handler { return s.observe(s.deadlines(s.routes())) }

// routes is the route table: every route of the API on one screen.
func (s *Server) routes() http.Handler {
	r := routes{httprouter.New()}
	r.RedirectTrailingSlash = false
	r.HandleMethodNotAllowed = true
	r.NotFound = s.handle(s.notFound)
	r.MethodNotAllowed = s.handle(func(w http.ResponseWriter, r *http.Request) error {
		return scrapethis.Errorf(scrapethis.EMethodNotAllowed, "Method not allowed")
	})
	r.PanicHandler = func(w http.ResponseWriter, r *http.Request, v any) {
		if v == http.ErrAbortHandler {
			panic(v)
		}
		s.writeError(w, r, fmt.Errorf("panic in handler: %v", v))
	}

	auth := s.authenticate
	r.Handler(http.MethodGet, "/api/v1/openapi.json", s.handle(s.openAPI))
	r.Handler(http.MethodGet, "/api/v1/jobs", auth(s.listJobs))
	r.Handler(http.MethodPost, "/api/v1/jobs", auth(s.createJob))
	r.Handler(http.MethodGet, "/api/v1/jobs/:id", auth(s.getJob))
	r.Handler(http.MethodDelete, "/api/v1/jobs/:id", auth(s.cancelJob))
	r.Handler(http.MethodGet, "/api/v1/jobs/:id/items", auth(s.jobItems))
	r.Handler(http.MethodGet, "/api/v1/jobs/:id/logs", auth(s.jobLogs))

	r.Handler(http.MethodGet, "/api/v1/projects", auth(s.listProjects))
	r.Handler(http.MethodGet, "/api/v1/projects/:name", auth(s.getProject))
	r.Handler(http.MethodDelete, "/api/v1/projects/:name", auth(s.deleteProject))
	r.Handler(http.MethodGet, "/api/v1/projects/:name/versions", auth(s.listVersions))
	r.Handler(http.MethodPost, "/api/v1/projects/:name/versions", auth(s.uploadVersion))
	r.Handler(http.MethodGet, "/api/v1/projects/:name/versions/:id", auth(s.getVersion))
	r.Handler(http.MethodGet, "/api/v1/spiders", auth(s.listSpiders))
	r.Handler(http.MethodPost, "/api/v1/spiders", auth(s.createSpider))
	r.Handler(http.MethodGet, "/api/v1/spiders/:id", auth(s.getSpider))
	r.Handler(http.MethodPatch, "/api/v1/spiders/:id", auth(s.updateSpider))
	r.Handler(http.MethodDelete, "/api/v1/spiders/:id", auth(s.deleteSpider))

	r.Handler(http.MethodGet, "/api/v1/schedules", auth(s.listSchedules))
	r.Handler(http.MethodPost, "/api/v1/schedules", auth(s.createSchedule))
	r.Handler(http.MethodGet, "/api/v1/schedules/:id", auth(s.getSchedule))
	r.Handler(http.MethodPatch, "/api/v1/schedules/:id", auth(s.updateSchedule))
	r.Handler(http.MethodDelete, "/api/v1/schedules/:id", auth(s.deleteSchedule))

	r.Handler(http.MethodGet, "/api/v1/webhooks", auth(s.listWebhooks))
	r.Handler(http.MethodPost, "/api/v1/webhooks", auth(s.createWebhook))
	r.Handler(http.MethodGet, "/api/v1/webhooks/:id", auth(s.getWebhook))
	r.Handler(http.MethodDelete, "/api/v1/webhooks/:id", auth(s.deleteWebhook))
	r.Handler(http.MethodGet, "/api/v1/webhooks/:id/deliveries", auth(s.webhookDeliveries))

	s.opsRoutes(r)
	return r
}

type ctxKey int

const userKey ctxKey = iota

// userID returns the authenticated user's id.
func userID(ctx context.Context) string {
	id, _ := ctx.Value(userKey).(string)
	return id
}

// authenticate admits a request carrying a live key as
// "Authorization: Bearer <key>" and answers 401 to any other.
func (s *Server) authenticate(next handlerFunc) http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		if uid, ok := r.Context().Value(presetUser{}).(string); ok && uid != "" {
			return next(w, r.WithContext(context.WithValue(r.Context(), userKey, uid))) // ServeAs
		}
		addr := clientAddr(r)
		key, ok := bearer(r.Header.Get("Authorization"))
		uid, gen, cached := "", uint64(0), false
		if ok {
			uid, gen, cached = s.keys.get(key)
		}
		if !cached || uid == "" {
			if retry, blocked := s.authFails.blocked(addr); blocked {
				return errThrottled(w, retry)
			}
		}
		if !ok {
			s.authFails.fail(addr)
			return errUnauthorized
		}
		if !cached {
			var err error
			if uid, err = s.auths.Do(r.Context(), key); err != nil {
				return fmt.Errorf("look up API key: %w", err)
			}
			if uid != "" {
				s.keys.put(key, uid, gen)
			}
		}
		if uid == "" {
			s.authFails.fail(addr)
			return errUnauthorized
		}
		noteUser(r.Context(), uid)
		return next(w, r.WithContext(context.WithValue(r.Context(), userKey, uid)))
	})
}

var errUnauthorized = scrapethis.Errorf(scrapethis.EUnauthorized, "Invalid or missing API key")

func bearer(h string) (string, bool) {
	const prefix = "bearer "
	if len(h) <= len(prefix) || !equalFold(h[:len(prefix)], prefix) {
		return "", false
	}
	key := h[len(prefix):]
	for len(key) > 0 && key[0] == ' ' {
		key = key[1:]
	}
	if key == "" || len(key) > 256 {
		return "", false
	}
	return key, true
}

func equalFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		ca, cb := a[i], b[i]
		if 'A' <= ca && ca <= 'Z' {
			ca += 'a' - 'A'
		}
		if ca != cb {
			return false
		}
	}
	return true
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		body = []byte(`{"error":"Internal error"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(body, '\n'))
}

// decodeBody reads a JSON object body of at most MaxBodyBytes into dst. An
// empty body decodes as {}.
func decodeBody(w http.ResponseWriter, r *http.Request, dst any) error {
	r.Body = http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	dec := json.NewDecoder(r.Body)
	dec.UseNumber()
	err := dec.Decode(dst)
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		return scrapethis.Errorf(scrapethis.ETooLarge, "Request body too large (limit 1 MiB)")
	case err != nil && r.Context().Err() != nil:
		return fmt.Errorf("read request body: %w", r.Context().Err())
	case errors.Is(err, io.EOF):
		return nil
	case err != nil:
		return scrapethis.Errorf(scrapethis.EInvalid, "Invalid JSON body: %s", jsonProblem(err))
	}
	if dec.More() {
		return scrapethis.Errorf(scrapethis.EInvalid, "Invalid JSON body: more than one JSON value")
	}
	// Read to the end so that an oversized trailer is still refused.
	var extra [1]byte
	if _, err := dec.Buffered().Read(extra[:]); err == nil && !isSpace(extra[0]) {
		return scrapethis.Errorf(scrapethis.EInvalid, "Invalid JSON body: trailing data")
	}
	return nil
}

func isSpace(b byte) bool { return b == ' ' || b == '\n' || b == '\r' || b == '\t' }

func jsonProblem(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return syn.Error()
	case errors.As(err, &typ):
		if typ.Field != "" {
			return typ.Field + " must be " + jsonKind(typ.Type.Kind().String())
		}
		return "the body must be a JSON object"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "unexpected end of input"
	}
	return err.Error()
}

func jsonKind(k string) string {
	switch k {
	case "string":
		return "a string"
	case "int", "int64", "int32":
		return "an integer"
	case "bool":
		return "a boolean"
	case "map", "struct":
		return "a JSON object"
	case "slice":
		return "an array"
	}
	return "of another type"
}

// Per-request deadlines: a request's headers and body must arrive within
// RequestReadTimeout (an upload gets UploadReadTimeout for its body) and
// its answer be written within RequestWriteTimeout; streams extend their
// write deadline page by page, and a followed log lifts its read deadline.
// With the server's ReadHeaderTimeout and IdleTimeout, no stalled client
// holds a connection for long.
const (
	RequestReadTimeout  = 30 * time.Second
	RequestWriteTimeout = 60 * time.Second
	UploadReadTimeout   = 10 * time.Minute
)

func (s *Server) deadlines(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		now := time.Now()
		rc.SetReadDeadline(now.Add(s.ReadTimeout))
		rc.SetWriteDeadline(now.Add(RequestWriteTimeout))
		next.ServeHTTP(w, r)
	})
}
