package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"log/slog"
	"net/http"
	"time"

	"github.com/julienschmidt/httprouter"
)

// Ops are the operators' endpoints served beside the API. The caller builds
// them (package metrics, package monitor), so that api depends on neither
// Prometheus nor asynqmon. The zero value serves only GET /healthz.
type Ops struct {
	// Metrics counts requests and created jobs; nil counts nothing.
	Metrics Metrics
	// Prometheus serves GET /metrics; nil: not served.
	Prometheus http.Handler
	// Ready serves GET /readyz; nil: not served.
	Ready http.Handler
	// Monitoring is mounted at /monitoring behind HTTP basic auth as
	// AdminUser (default "admin") and AdminPassword. It is not mounted at
	// all (404) while either it or AdminPassword is empty.
	Monitoring    http.Handler
	AdminUser     string
	AdminPassword string
}

// Metrics is what the API reports; package metrics implements it.
type Metrics interface {
	JobCreated()
	JobsHeld(n int)  // jobs held back by a cap
	JobsLetGo(n int) // held jobs let go
	RequestServed(method, route string, status int, d time.Duration)
}

type noMetrics struct{}

func (noMetrics) JobCreated()                                      {}
func (noMetrics) JobsHeld(int)                                     {}
func (noMetrics) JobsLetGo(int)                                    {}
func (noMetrics) RequestServed(string, string, int, time.Duration) {}

func (s *Server) metrics() Metrics {
	if s.Ops.Metrics == nil {
		return noMetrics{}
	}
	return s.Ops.Metrics
}

// MonitoringPath is where the monitoring UI is mounted.
const MonitoringPath = "/monitoring"

// opsRoutes adds the operators' routes to the route table. None of them
// takes an API key: /healthz, /readyz and /metrics say nothing secret, and
// /monitoring has its own credentials.
func (s *Server) opsRoutes(r routes) {
	r.Handler(http.MethodGet, "/healthz", http.HandlerFunc(healthz))
	if s.Ops.Ready != nil {
		r.Handler(http.MethodGet, "/readyz", s.Ops.Ready)
	}
	if s.Ops.Prometheus != nil {
		r.Handler(http.MethodGet, "/metrics", s.Ops.Prometheus)
	}
	if s.Ops.Monitoring != nil && s.Ops.AdminPassword != "" {
		user := s.Ops.AdminUser
		if user == "" {
			user = "admin"
		}
		// Basic credentials are sent by the browser on any request, so a
		// page elsewhere could post to the UI's API: refuse cross-origin
		// writes.
		h := http.NewCrossOriginProtection().Handler(s.adminOnly(user, s.Ops.AdminPassword, s.Ops.Monitoring))
		for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
			r.Handler(m, MonitoringPath, h)
			r.Handler(m, MonitoringPath+"/*path", h)
		}
	}
}

func healthz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// adminOnly admits requests carrying the admin's basic credentials. Both
// are compared in constant time, as digests so that lengths do not leak.
// Wrong credentials are logged at warn and count toward the address's
// failed-authentication throttle (a request without any, the browser's
// first, does not).
func (s *Server) adminOnly(user, password string, next http.Handler) http.Handler {
	wantUser := sha256.Sum256([]byte(user))
	wantPass := sha256.Sum256([]byte(password))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		addr := clientAddr(r)
		if retry, blocked := s.authFails.blocked(addr); blocked {
			s.writeError(w, r, errThrottled(w, retry))
			return
		}
		u, p, ok := r.BasicAuth()
		gotUser := sha256.Sum256([]byte(u))
		gotPass := sha256.Sum256([]byte(p))
		match := subtle.ConstantTimeCompare(gotUser[:], wantUser[:]) & subtle.ConstantTimeCompare(gotPass[:], wantPass[:])
		if !ok || match != 1 {
			if ok {
				s.authFails.fail(addr)
				s.log.Warn("monitoring login failed", "addr", addr)
			}
			w.Header().Set("WWW-Authenticate", `Basic realm="ScrapeThis monitoring", charset="UTF-8"`)
			writeJSON(w, http.StatusUnauthorized, errorBody{Error: "Unauthorized"})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// routes is httprouter with each route's pattern handed to the request, so
// that request logs and metrics name "/api/v1/jobs/:id", never a raw path.
// Its Handler, HandlerFunc and Handle register as httprouter's do.
type routes struct{ *httprouter.Router }

func (rt routes) Handler(method, path string, h http.Handler) {
	rt.Router.Handler(method, path, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		noteRoute(r.Context(), path)
		h.ServeHTTP(w, r)
	}))
}

func (rt routes) HandlerFunc(method, path string, h http.HandlerFunc) {
	rt.Handler(method, path, h)
}

func (rt routes) Handle(method, path string, h httprouter.Handle) {
	rt.Router.Handle(method, path, func(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
		noteRoute(r.Context(), path)
		h(w, r, ps)
	})
}

// reqInfo is what a request learns on its way in, for its log line.
type reqInfo struct {
	route      string
	user       string
	clientGone bool
}

type infoKey struct{}

func noteRoute(ctx context.Context, route string) {
	if info, ok := ctx.Value(infoKey{}).(*reqInfo); ok {
		info.route = route
	}
}

// noteClientGone marks a request whose client hung up before its answer:
// it is counted and logged as 499, never as a server error.
func noteClientGone(ctx context.Context) {
	if info, ok := ctx.Value(infoKey{}).(*reqInfo); ok {
		info.clientGone = true
	}
}

func noteUser(ctx context.Context, uid string) {
	if info, ok := ctx.Value(infoKey{}).(*reqInfo); ok {
		info.user = uid
	}
}

// quiet reports requests that come every few seconds (probes, scrapes, the
// monitoring UI polling): they log at debug level. A write through the
// monitoring UI still logs at info.
func quiet(method, route string) bool {
	switch route {
	case "/healthz", "/readyz", "/metrics":
		return true
	case MonitoringPath, MonitoringPath + "/*path":
		return method == http.MethodGet || method == http.MethodHead
	}
	return false
}

// observe logs and counts every request: method, route pattern, status,
// duration and the user id once authenticated. Never a header, a query
// string or a body, so no key reaches the log.
func (s *Server) observe(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		info := &reqInfo{}
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r.WithContext(context.WithValue(r.Context(), infoKey{}, info)))
		d := time.Since(start)
		route := info.route
		if route == "" {
			route = "unmatched"
		}
		status := sw.status
		switch {
		case info.clientGone:
			status = statusClientClosed
		case status == 0:
			status = http.StatusOK
		}
		s.metrics().RequestServed(r.Method, route, status, d)
		level := slog.LevelInfo
		if quiet(r.Method, route) {
			level = slog.LevelDebug
		}
		if !s.log.Enabled(r.Context(), level) {
			return
		}
		attrs := []slog.Attr{
			slog.String("method", r.Method),
			slog.String("route", route),
			slog.String("path", r.URL.Path),
			slog.Int("status", status),
			slog.Float64("duration_ms", float64(d.Microseconds())/1000),
		}
		if info.user != "" {
			attrs = append(attrs, slog.String("user_id", info.user))
		}
		s.log.LogAttrs(r.Context(), level, "request", attrs...)
	})
}

// statusClientClosed is what metrics and logs say of a request whose client
// hung up before it was answered (nginx's convention).
const statusClientClosed = 499

// statusWriter remembers the status a handler answered. It passes Flush
// through for streamed responses, and Unwrap for http.ResponseController.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Flush() {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
