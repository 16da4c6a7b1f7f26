// Package console is the web console for people, served by the API server
// at /: server-rendered html/template pages, a small embedded stylesheet
// and script, no build chain and nothing from another origin.
//
// A person signs in with an API key; the console opens a server-side
// session (package db) referenced by an HttpOnly, SameSite cookie, and
// never stores the key. Pages read through the same store methods as the
// API; every change (start or cancel a job, schedules) is an API request
// served in-process as the session's user (api.Server.ServeAs), so every
// rule and message is the API's own.
package console

import (
	"bytes"
	"context"
	"crypto/subtle"
	"embed"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/julienschmidt/httprouter"

	"github.com/scrapethis/scrapethis"
	"github.com/scrapethis/scrapethis/api"
	"github.com/scrapethis/scrapethis/db"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Cookie names. The session cookie holds a random token whose hash names a
// row of console_sessions; the sign-in cookie is the sign-in form's CSRF
// token (double submit), before any session exists.
const (
	SessionCookie = "scrapethis_session"
	signinCookie  = "scrapethis_signin"
)

// DefaultSessionTTL is how long a session lasts after sign-in.
const DefaultSessionTTL = 12 * time.Hour

// Config is what the console needs.
type Config struct {
	API *api.Server
	DB  *db.DB
	Log *slog.Logger
	// SessionTTL is a session's lifetime (zero: DefaultSessionTTL).
	SessionTTL time.Duration
	// Poll is how often pages ask for live updates (zero: 2 s); it is
	// handed to the page's script.
	Poll time.Duration
}

// Console serves the console's pages. It is an http.Handler.
type Console struct {
	api     *api.Server
	db      *db.DB
	log     *slog.Logger
	ttl     time.Duration
	poll    time.Duration
	pages   map[string]*template.Template
	assets  map[string]string // file name -> its path with a content hash, for caching
	handler http.Handler
}

// New returns the console. Its templates and assets are embedded, so they
// are checked by the tests; a broken one panics here, as template.Must does.
func New(cfg Config) *Console {
	c := &Console{api: cfg.API, db: cfg.DB, log: cfg.Log, ttl: cfg.SessionTTL, poll: cfg.Poll}
	if c.ttl <= 0 {
		c.ttl = DefaultSessionTTL
	}
	if c.poll <= 0 {
		c.poll = 2 * time.Second
	}
	var err error
	if c.assets, err = assetPaths(); err != nil {
		panic(err)
	}
	if c.pages, err = c.parseTemplates(); err != nil {
		panic(err)
	}
	c.handler = c.routes()
	return c
}

// routes is the console's route table.
func (c *Console) routes() http.Handler {
	r := httprouter.New()
	r.RedirectTrailingSlash = false
	r.HandleMethodNotAllowed = false
	r.NotFound = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.serve(w, r, false, func(p *page) error { return errNotFound })
	})
	r.PanicHandler = func(w http.ResponseWriter, r *http.Request, v any) {
		if v == http.ErrAbortHandler {
			panic(v)
		}
		c.log.Error("panic in console handler", "path", r.URL.Path, "panic", v)
		http.Error(w, "Internal error", http.StatusInternalServerError)
	}
	get := func(path string, h func(*page) error) { r.Handler(http.MethodGet, path, c.page(h)) }
	post := func(path string, h func(*page) error) { r.Handler(http.MethodPost, path, c.action(h)) }

	r.Handler(http.MethodGet, "/static/*file", http.HandlerFunc(c.static))
	r.Handler(http.MethodGet, "/", http.HandlerFunc(c.home))
	r.Handler(http.MethodGet, "/signin", http.HandlerFunc(c.signinForm))
	r.Handler(http.MethodPost, "/signin", http.HandlerFunc(c.signin))
	post("/signout", c.signout)

	get("/jobs", c.jobs)
	get("/jobs/:id", c.job)
	get("/jobs/:id/summary", c.jobSummary)
	get("/jobs/:id/items", c.jobItemsTable)
	get("/jobs/:id/download/:file", c.download)
	get("/jobs/:id/log", c.jobLog)
	get("/new-job", c.newJobForm)
	post("/new-job", c.startJob)
	post("/jobs/:id/cancel", c.cancelJob)
	get("/live/jobs", c.liveJobs)
	get("/spiders", c.spiders)
	get("/projects", c.projects)
	get("/projects/:name", c.project)
	get("/schedules", c.schedules)
	post("/schedules", c.createSchedule)
	post("/schedules/:id/enabled", c.setScheduleEnabled)
	post("/schedules/:id/delete", c.deleteSchedule)
	return http.NewCrossOriginProtection().Handler(r)
}

// ServeHTTP serves the console.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("X-Frame-Options", "DENY")
	c.handler.ServeHTTP(w, r)
}

// page is one request to a page: the signed-in session, and what the
// handler renders.
type page struct {
	w       http.ResponseWriter
	r       *http.Request
	session db.Session
	start   time.Time
	// rendered is set by a handler that wrote its own answer.
	rendered bool
}

func (p *page) ctx() context.Context { return p.r.Context() }
func (p *page) uid() string          { return p.session.UserID }
func (p *page) param(name string) string {
	return httprouter.ParamsFromContext(p.r.Context()).ByName(name)
}

// Errors a handler returns for the adapter to render.
var (
	errNotFound = scrapethis.Errorf(scrapethis.ENotFound, "Not found")
	errBadCSRF  = scrapethis.Errorf(scrapethis.EInvalid, "This form has expired or did not come from this site; reload the page and try again")
)

// page adapts a page handler: it needs a session (else it redirects to
// sign-in, or answers 401 to a script's request).
func (c *Console) page(h func(*page) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { c.serve(w, r, true, h) })
}

// action adapts a form's POST handler: a session and its CSRF token.
func (c *Console) action(h func(*page) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, api.MaxBodyBytes)
		c.serve(w, r, true, func(p *page) error {
			if err := r.ParseForm(); err != nil {
				return scrapethis.Errorf(scrapethis.EInvalid, "Could not read the form: %v", err)
			}
			got := r.PostForm.Get("csrf")
			if got == "" || subtle.ConstantTimeCompare([]byte(got), []byte(p.session.CSRF)) != 1 {
				return errBadCSRF
			}
			return h(p)
		})
	})
}

// serve runs h with the request's session; a handler's error becomes an
// error page with the status of its code.
func (c *Console) serve(w http.ResponseWriter, r *http.Request, needSession bool, h func(*page) error) {
	p := &page{w: w, r: r, start: time.Now()}
	s, err := c.sessionOf(r)
	switch {
	case err == nil:
		p.session = s
	case scrapethis.ErrorCode(err) != scrapethis.EUnauthorized:
		c.fail(p, err)
		return
	case needSession:
		if isScript(r) || r.Method != http.MethodGet {
			http.Error(w, "Not signed in", http.StatusUnauthorized)
			return
		}
		http.Redirect(w, r, "/signin?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	if err := h(p); err != nil {
		c.fail(p, err)
	}
}

// isScript reports a request made by the console's script (live updates),
// which wants a status, not a sign-in page.
func isScript(r *http.Request) bool { return r.Header.Get("X-Console") == "1" }

func (c *Console) sessionOf(r *http.Request) (db.Session, error) {
	ck, err := r.Cookie(SessionCookie)
	if err != nil {
		return db.Session{}, scrapethis.Errorf(scrapethis.EUnauthorized, "Not signed in")
	}
	return c.db.SessionByToken(r.Context(), ck.Value)
}

// fail renders an error page: the code's status and message, or for an
// unexpected error a fixed message, logged in full.
func (c *Console) fail(p *page, err error) {
	if p.r.Context().Err() != nil {
		return // the client went away
	}
	code := scrapethis.ErrorCode(err)
	status := http.StatusInternalServerError
	msg := "Something went wrong on our side; it has been logged."
	switch code {
	case scrapethis.ENotFound:
		status, msg = http.StatusNotFound, "There is nothing here: it does not exist, or it is not yours."
	case scrapethis.EInvalid, scrapethis.EConflict, scrapethis.ETooLarge:
		status, msg = http.StatusBadRequest, scrapethis.ErrorMessage(err)
	case scrapethis.EUnavailable:
		status, msg = http.StatusServiceUnavailable, "The service is unavailable right now; try again in a moment."
		p.w.Header().Set("Retry-After", "5")
	default:
		c.log.Error("console request failed", "method", p.r.Method, "path", p.r.URL.Path, "user_id", p.uid(), "err", err)
	}
	if p.rendered {
		return
	}
	c.render(p, status, "error", map[string]any{"Title": http.StatusText(status), "Message": msg})
}

// render executes a page's template into a buffer and sends it, with the
// time the server spent on the request in a Server-Timing header.
func (c *Console) render(p *page, status int, name string, data map[string]any) {
	t, ok := c.pages[name]
	if !ok {
		panic("console: no template " + name)
	}
	data["Session"] = p.session
	data["SignedIn"] = p.session.UserID != ""
	data["Path"] = p.r.URL.Path
	data["Assets"] = c.assets
	data["Poll"] = c.poll.Milliseconds()
	if n, ok := notices[p.r.URL.Query().Get("done")]; ok && p.r.Method == http.MethodGet {
		data["Notice"] = n
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout", data); err != nil {
		c.log.Error("render console page", "page", name, "err", err)
		http.Error(p.w, "Internal error", http.StatusInternalServerError)
		return
	}
	c.send(p, status, "text/html; charset=utf-8", buf.Bytes())
}

// fragment executes a shared template (templates/_NAME.html) without the
// layout: a part of the job page that its script swaps in.
func (c *Console) fragment(p *page, name string, data map[string]any) error {
	data["Session"] = p.session
	var buf bytes.Buffer
	if err := c.pages["job"].ExecuteTemplate(&buf, name, data); err != nil {
		return fmt.Errorf("render fragment %s: %w", name, err)
	}
	c.send(p, http.StatusOK, "text/html; charset=utf-8", buf.Bytes())
	return nil
}

func (c *Console) send(p *page, status int, contentType string, body []byte) {
	h := p.w.Header()
	h.Set("Content-Type", contentType)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("Server-Timing", fmt.Sprintf("app;dur=%.2f", float64(time.Since(p.start).Microseconds())/1000))
	p.w.WriteHeader(status)
	p.w.Write(body)
	p.rendered = true
}

func (c *Console) home(w http.ResponseWriter, r *http.Request) {
	if _, err := c.sessionOf(r); err != nil {
		http.Redirect(w, r, "/signin", http.StatusSeeOther)
		return
	}
	http.Redirect(w, r, "/jobs", http.StatusSeeOther)
}

// static serves the embedded stylesheet, script and icon. Their URLs carry
// a hash of their content, so they are cached for good.
func (c *Console) static(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimPrefix(httprouter.ParamsFromContext(r.Context()).ByName("file"), "/")
	base, _, _ := strings.Cut(name, ".v")
	ext := name[strings.LastIndexByte(name, '.')+1:]
	file := base + "." + ext
	if c.assets[file] != "/static/"+name {
		http.NotFound(w, r)
		return
	}
	data, err := fs.ReadFile(staticFS, "static/"+file)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	types := map[string]string{"css": "text/css; charset=utf-8", "js": "text/javascript; charset=utf-8", "svg": "image/svg+xml"}
	w.Header().Set("Content-Type", types[ext])
	w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	w.Write(data)
}

// apiCall is the answer to an API request served in-process.
type apiCall struct {
	status int
	header http.Header
	body   bytes.Buffer
}

func (a *apiCall) Header() http.Header { return a.header }
func (a *apiCall) Write(b []byte) (int, error) {
	if a.status == 0 {
		a.status = http.StatusOK
	}
	return a.body.Write(b)
}
func (a *apiCall) WriteHeader(code int) {
	if a.status == 0 {
		a.status = code
	}
}

// ok reports a 2xx answer.
func (a *apiCall) ok() bool { return a.status >= 200 && a.status < 300 }

// message is an error answer's message.
func (a *apiCall) message() string {
	var e struct {
		Error string `json:"error"`
	}
	if err := json.Unmarshal(a.body.Bytes(), &e); err != nil || e.Error == "" {
		return http.StatusText(a.status)
	}
	return e.Error
}

// err turns an error answer into a domain error: the API's client errors
// keep their message; anything else is internal.
func (a *apiCall) err() error {
	switch {
	case a.ok():
		return nil
	case a.status == http.StatusNotFound:
		return scrapethis.Errorf(scrapethis.ENotFound, "%s", a.message())
	case a.status == http.StatusServiceUnavailable:
		return scrapethis.Errorf(scrapethis.EUnavailable, "%s", a.message())
	case a.status < 500:
		return scrapethis.Errorf(scrapethis.EInvalid, "%s", a.message())
	}
	return fmt.Errorf("API answered %d: %s", a.status, a.message())
}

// call serves an API request as the page's user and returns its answer.
func (c *Console) call(p *page, method, path string, body io.Reader) (*apiCall, error) {
	req, err := http.NewRequestWithContext(p.ctx(), method, path, body)
	if err != nil {
		return nil, fmt.Errorf("API request %s %s: %w", method, path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.RemoteAddr = p.r.RemoteAddr
	a := &apiCall{header: http.Header{}}
	c.api.ServeAs(a, req, p.uid())
	return a, nil
}

// ---- sign-in and sign-out ----

func (c *Console) signinForm(w http.ResponseWriter, r *http.Request) {
	if _, err := c.sessionOf(r); err == nil {
		http.Redirect(w, r, safeNext(r.URL.Query().Get("next")), http.StatusSeeOther)
		return
	}
	c.renderSignin(w, r, http.StatusOK, "")
}

// renderSignin shows the sign-in form with a fresh CSRF token, also set as
// a cookie that only this form's POST can match.
func (c *Console) renderSignin(w http.ResponseWriter, r *http.Request, status int, problem string) {
	token, err := randomToken()
	if err != nil {
		c.log.Error("sign-in token", "err", err)
		http.Error(w, "Internal error", http.StatusInternalServerError)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: signinCookie, Value: token, Path: "/signin", HttpOnly: true,
		Secure: secure(r), SameSite: http.SameSiteStrictMode, MaxAge: 3600})
	w.Header().Set("Cache-Control", "no-store")
	p := &page{w: w, r: r, start: time.Now()}
	c.render(p, status, "signin", map[string]any{"Title": "Sign in", "Token": token, "Problem": problem,
		"Next": safeNext(r.FormValue("next"))})
}

// signin opens a session for a good key. A bad key counts toward the
// API's failed-authentication throttle, which refuses the address for a
// while past its limit, here as on the API.
func (c *Console) signin(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		c.renderSignin(w, r, http.StatusBadRequest, "Could not read the form.")
		return
	}
	ck, err := r.Cookie(signinCookie)
	if err != nil || ck.Value == "" || subtle.ConstantTimeCompare([]byte(ck.Value), []byte(r.PostForm.Get("csrf"))) != 1 {
		c.renderSignin(w, r, http.StatusBadRequest, "This form has expired or did not come from this site; try again.")
		return
	}
	if wait, blocked := c.api.AuthBlocked(r); blocked {
		secs := max(1, int(math.Ceil(wait.Seconds())))
		w.Header().Set("Retry-After", strconv.Itoa(secs))
		c.renderSignin(w, r, http.StatusTooManyRequests, fmt.Sprintf("Too many failed sign-ins from your address; try again in %d s.", secs))
		return
	}
	s, err := c.db.CreateSession(r.Context(), strings.TrimSpace(r.PostForm.Get("key")), c.ttl)
	if scrapethis.ErrorCode(err) == scrapethis.EUnauthorized {
		c.api.AuthFailed(r)
		c.log.Info("console sign-in refused", "remote", r.RemoteAddr)
		c.renderSignin(w, r, http.StatusUnauthorized, "That API key is not valid (unknown or revoked).")
		return
	}
	if err != nil {
		c.fail(&page{w: w, r: r, start: time.Now()}, err)
		return
	}
	c.log.Info("console sign-in", "user_id", s.UserID)
	http.SetCookie(w, &http.Cookie{Name: signinCookie, Value: "", Path: "/signin", MaxAge: -1, HttpOnly: true, Secure: secure(r), SameSite: http.SameSiteStrictMode})
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: s.Token, Path: "/", HttpOnly: true, Secure: secure(r),
		SameSite: http.SameSiteLaxMode, Expires: s.ExpiresAt})
	http.Redirect(w, r, safeNext(r.PostForm.Get("next")), http.StatusSeeOther)
}

func (c *Console) signout(p *page) error {
	if err := c.db.DeleteSession(p.ctx(), p.session.Token); err != nil {
		return err
	}
	http.SetCookie(p.w, &http.Cookie{Name: SessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: secure(p.r), SameSite: http.SameSiteLaxMode})
	http.Redirect(p.w, p.r, "/signin", http.StatusSeeOther)
	p.rendered = true
	return nil
}

// secure reports a request that came over TLS (directly or through a
// proxy that says so): its cookies are then Secure.
func secure(r *http.Request) bool {
	return r.TLS != nil || r.Header.Get("X-Forwarded-Proto") == "https"
}

// safeNext keeps a post-sign-in redirect on this site: a path of ours, or
// the jobs page.
func safeNext(next string) string {
	if next == "" || !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.HasPrefix(next, "/\\") ||
		strings.HasPrefix(next, "/signin") || strings.ContainsAny(next, "\r\n") {
		return "/jobs"
	}
	return next
}
