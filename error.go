package scrapethis

import (
	"errors"
	"fmt"
)

// Error codes. The API maps each to one HTTP status.
const (
	EConflict     = "conflict"
	EInternal     = "internal"
	EInvalid      = "invalid"
	ENotFound     = "not_found"
	EUnauthorized = "unauthorized"
	ETooLarge     = "too_large"
	EUnavailable  = "unavailable"
	// EMethodNotAllowed is a route that exists, asked with another method.
	EMethodNotAllowed = "method_not_allowed"
	// ETooManyRequests is a client over a rate limit.
	ETooManyRequests = "too_many_requests"
	// EUnprocessable is a well-formed request that contradicts an earlier
	// one (an Idempotency-Key reused with another body).
	EUnprocessable = "unprocessable"
)

// Error is a domain error: a code for machines and a message for people.
type Error struct {
	Code    string
	Message string
}

func (e *Error) Error() string { return fmt.Sprintf("%s: %s", e.Code, e.Message) }

// Errorf returns an *Error with the code and a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of the first *Error in err's chain, EInternal
// for any other non-nil error, and "" for nil.
func ErrorCode(err error) string {
	var e *Error
	switch {
	case err == nil:
		return ""
	case errors.As(err, &e):
		return e.Code
	}
	return EInternal
}

// ErrorMessage returns the human message of err's *Error, or "Internal error".
func ErrorMessage(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return "Internal error"
}
