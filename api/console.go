package api

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/scrapethis/scrapethis"
)

// ConsoleRoute is what request logs and metrics call every console page.
const ConsoleRoute = "console"

// presetUser carries the user of a request that ServeAs serves.
type presetUser struct{}

// asUser is the route table ServeAs serves through, built once.
type asUser struct {
	once sync.Once
	h    http.Handler
}

// ServeAs serves an API request (a path under /api/v1) as the user uid,
// whom its caller has already authenticated: the console, whose server-side
// session says who is signed in, so that it holds no API key. Routes,
// validation, error bodies and streaming are the API's own, so the console
// keeps no second copy of any rule. r is not logged or counted again: it
// is part of the caller's request.
func (s *Server) ServeAs(w http.ResponseWriter, r *http.Request, uid string) {
	s.as.once.Do(func() { s.as.h = s.routes() })
	noteUser(r.Context(), uid)
	ctx := context.WithValue(r.Context(), presetUser{}, uid)
	ctx = context.WithValue(ctx, infoKey{}, &reqInfo{}) // the caller's log line keeps its own route
	s.as.h.ServeHTTP(w, r.WithContext(ctx))
}

// notFound answers a path no route matches: the console's, when one is
// mounted, for any path outside /api/; else the API's 404.
func (s *Server) notFound(w http.ResponseWriter, r *http.Request) error {
	if s.Console != nil && r.URL.Path != "/api" && !strings.HasPrefix(r.URL.Path, "/api/") {
		noteRoute(r.Context(), ConsoleRoute)
		s.Console.ServeHTTP(w, r)
		return nil
	}
	return scrapethis.Errorf(scrapethis.ENotFound, "Not found")
}

// AuthBlocked reports whether r's client address has used up its failed
// authentications (the API's throttle, which console sign-ins share), and
// when it may try again.
func (s *Server) AuthBlocked(r *http.Request) (retry time.Duration, blocked bool) {
	return s.authFails.blocked(clientAddr(r))
}

// AuthFailed counts a failed authentication of r's client address: a
// console sign-in with a bad key counts as a bad key on the API does.
func (s *Server) AuthFailed(r *http.Request) { s.authFails.fail(clientAddr(r)) }
