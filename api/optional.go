package api

import (
	"encoding/json"
	"strconv"
	"strings"

	"github.com/scrapethis/scrapethis"
)

// optional is a field of a request body that may be absent, null or set:
// PATCH changes only the fields present. Its JSON decoding only records the
// raw value; each field is checked by the reader for its type (str, boolean,
// seconds), so every field's message names it.
type optional struct {
	set bool
	raw json.RawMessage
}

func (o *optional) UnmarshalJSON(b []byte) error {
	o.set = true
	o.raw = append(o.raw[:0], b...)
	return nil
}

// null reports a field that is absent or null.
func (o optional) null() bool { return !o.set || string(o.raw) == "null" }

// str reads an optional string: absent or null is "", others trimmed.
func (o optional) str(field string) (string, error) {
	v, err := o.untrimmed(field)
	return strings.TrimSpace(v), err
}

// untrimmed reads an optional string as it is: absent or null is "".
func (o optional) untrimmed(field string) (string, error) {
	if o.null() {
		return "", nil
	}
	var v string
	if err := json.Unmarshal(o.raw, &v); err != nil {
		return "", scrapethis.Errorf(scrapethis.EInvalid, "%s must be a string", field)
	}
	return v, nil
}

// notNull refuses a field that is present as null, for PATCH fields that
// cannot be cleared.
func (o optional) notNull(field, want string) error {
	if o.set && string(o.raw) == "null" {
		return scrapethis.Errorf(scrapethis.EInvalid, "%s must be %s", field, want)
	}
	return nil
}

// boolean reads an optional boolean: absent or null is def.
func (o optional) boolean(field string, def bool) (bool, error) {
	if o.null() {
		return def, nil
	}
	var v bool
	if json.Unmarshal(o.raw, &v) != nil {
		return false, scrapethis.Errorf(scrapethis.EInvalid, "%s must be true or false", field)
	}
	return v, nil
}

// timeout reads an optional timeout_seconds: absent or null is none.
func (o optional) timeout() (*int, error) {
	if o.null() {
		return nil, nil
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(o.raw)))
	if err != nil {
		return nil, scrapethis.ErrTimeout
	}
	if err := scrapethis.ValidateTimeout(&n); err != nil {
		return nil, err
	}
	return &n, nil
}

// positive reads an optional whole number of at least 1: absent or null is
// none.
func (o optional) positive(field string) (*int, error) {
	if o.null() {
		return nil, nil
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(o.raw)))
	if err != nil || n < 1 {
		return nil, scrapethis.Errorf(scrapethis.EInvalid, "%s must be a whole number of at least 1", field)
	}
	return &n, nil
}

// priority reads an optional job priority: absent or null is none (the
// default), anything but a whole number from 0 to 4 is a 400.
func (o optional) priority() (*int, error) {
	if o.null() {
		return nil, nil
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(o.raw)))
	if err != nil {
		return nil, scrapethis.ErrPriority
	}
	if err := scrapethis.ValidatePriority(&n); err != nil {
		return nil, err
	}
	return &n, nil
}

// maxRunning reads a spider's max_running: absent or null is no cap, else
// a whole number of at least 0.
func (o optional) maxRunning() (*int, error) {
	if o.null() {
		return nil, nil
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(o.raw)))
	if err != nil || n < 0 || n > 1_000_000 {
		return nil, scrapethis.Errorf(scrapethis.EInvalid, "max_running must be null (no cap) or a whole number from 0 to 1000000")
	}
	return &n, nil
}
