package api

import (
	"errors"
	"net/http"

	"github.com/scrapethis/scrapethis"
)

// handlerFunc is every API handler: it writes its answer, or returns an
// error and writes nothing. Only the adapter (handle) turns an error into a
// response, so every error body, status and log line comes from one place.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// handle adapts h to net/http.
func (s *Server) handle(h handlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			s.writeError(w, r, err)
		}
	}
}

// errorBody is every error response.
type errorBody struct {
	Error string `json:"error"`
}

// statusOf maps each domain error code to its HTTP status; statusFor falls
// back to 500 for a code missing here.
var statusOf = map[string]int{
	scrapethis.EInvalid:          http.StatusBadRequest,
	scrapethis.ENotFound:         http.StatusNotFound,
	scrapethis.EConflict:         http.StatusConflict,
	scrapethis.EUnauthorized:     http.StatusUnauthorized,
	scrapethis.ETooLarge:         http.StatusRequestEntityTooLarge,
	scrapethis.EUnavailable:      http.StatusServiceUnavailable,
	scrapethis.ETooManyRequests:  http.StatusTooManyRequests,
	scrapethis.EMethodNotAllowed: http.StatusMethodNotAllowed,
	scrapethis.EUnprocessable:    http.StatusUnprocessableEntity,
	scrapethis.EInternal:         http.StatusInternalServerError,
}

func statusFor(code string) int {
	if st, ok := statusOf[code]; ok {
		return st
	}
	return http.StatusInternalServerError
}

// internalMessage is all a client learns of an unexpected error.
const internalMessage = "Internal error"

// writeError is the one error writer. A client error answers its status and
// its own message. Anything else is logged in full and answered with a
// fixed message (a domain error coded internal carries one of ours, such as
// "Failed to cancel job"; any other error says "Internal error"), so no
// driver or database text ever reaches a client. A request whose client has
// gone away is not a server error: it is logged at debug level and counted
// as 499, and nothing is written.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	code := scrapethis.ErrorCode(err)
	status := statusFor(code)
	msg := scrapethis.ErrorMessage(err)
	if status >= 500 {
		if clientGone(r) {
			noteClientGone(r.Context())
			s.log.Debug("client went away", "method", r.Method, "path", r.URL.Path, "err", err)
			return
		}
		if code != scrapethis.EUnavailable {
			attrs := []any{"method", r.Method, "path", r.URL.Path, "status", status, "err", err}
			if uid := userID(r.Context()); uid != "" {
				attrs = append(attrs, "user_id", uid)
			}
			s.log.Error("request failed", attrs...)
		}
		var de *scrapethis.Error
		if !errors.As(err, &de) || code != scrapethis.EInternal && code != scrapethis.EUnavailable {
			msg = internalMessage
		}
	}
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "5")
	}
	writeJSON(w, status, errorBody{Error: msg})
}

// clientGone reports whether the request failed because its client hung
// up: its context ends only when the client goes or the server shuts down,
// and then nobody reads the answer anyway.
func clientGone(r *http.Request) bool {
	return r.Context().Err() != nil
}
