package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/lib/pq"

	"github.com/scrapethis/scrapethis"
)

// TestWriteError: the one error writer maps codes to statuses (500 for a
// code it does not know, never WriteHeader(0)), logs what is internal in
// full, and shows the client only fixed text for it.
func TestWriteError(t *testing.T) {
	t.Parallel()
	pgErr := &pq.Error{Code: "22P02", Message: "invalid input syntax for type uuid: \"x\""}
	for _, tc := range []struct {
		name    string
		err     error
		status  int
		message string
		logged  bool
	}{
		{"invalid", scrapethis.Errorf(scrapethis.EInvalid, "Missing name"), 400, "Missing name", false},
		{"not found", scrapethis.Errorf(scrapethis.ENotFound, "Job not found"), 404, "Job not found", false},
		{"conflict", scrapethis.Errorf(scrapethis.EConflict, "taken"), 409, "taken", false},
		{"unknown code", scrapethis.Errorf("brand_new_code", "secret detail"), 500, "Internal error", true},
		{"plain error", errors.New("dial tcp 10.0.0.1:5432: refused"), 500, "Internal error", true},
		{"database text", fmt.Errorf("create job: %w", pgErr), 500, "Internal error", true},
		{"our own internal message", fmt.Errorf("%w: %w", errCancelFailed, pgErr), 500, "Failed to cancel job", true},
		{"unavailable", scrapethis.Errorf(scrapethis.EUnavailable, "Service unavailable"), 503, "Service unavailable", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var logs bytes.Buffer
			s := &Server{log: slog.New(slog.NewJSONHandler(&logs, nil))}
			rec := httptest.NewRecorder()
			s.writeError(rec, httptest.NewRequest("GET", "/api/v1/jobs", nil), tc.err)
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d", rec.Code, tc.status)
			}
			var body errorBody
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || body.Error != tc.message {
				t.Fatalf("body %s, want message %q", rec.Body, tc.message)
			}
			if strings.Contains(rec.Body.String(), "syntax") || strings.Contains(rec.Body.String(), "10.0.0.1") {
				t.Fatalf("internal text reached the client: %s", rec.Body)
			}
			if got := strings.Contains(logs.String(), "request failed"); got != tc.logged {
				t.Fatalf("logged %v, want %v: %s", got, tc.logged, logs.String())
			}
			if tc.logged && !strings.Contains(logs.String(), tc.err.Error()[:10]) {
				t.Fatalf("the log lacks the error in full: %s", logs.String())
			}
			if tc.status == 503 && rec.Header().Get("Retry-After") == "" {
				t.Fatal("503 without Retry-After")
			}
		})
	}
}

// TestClientGoneIsNotAServerError: a request whose client hung up is not
// logged as a failure and writes nothing.
func TestClientGoneIsNotAServerError(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	s := &Server{log: slog.New(slog.NewJSONHandler(&logs, nil))}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	info := &reqInfo{}
	r := httptest.NewRequest("GET", "/api/v1/jobs", nil).WithContext(context.WithValue(ctx, infoKey{}, info))
	rec := httptest.NewRecorder()
	s.writeError(rec, r, fmt.Errorf("list jobs: %w", context.Canceled))
	if logs.Len() != 0 || rec.Body.Len() != 0 || !info.clientGone {
		t.Fatalf("logs %q, body %q, noted %v", logs.String(), rec.Body, info.clientGone)
	}
	if statusFor("no such code") != http.StatusInternalServerError {
		t.Fatal("an unknown code must be 500")
	}
}
