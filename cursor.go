package scrapethis

import (
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

// CanonicalID reports whether s is a UUID in its canonical form (lowercase
// hex, hyphenated): other spellings that uuid.Parse and Postgres accept
// (braces, urn:uuid:, upper case) are not ids of ours, and name nothing.
func CanonicalID(s string) bool {
	u, err := uuid.Parse(s)
	return err == nil && u.String() == s
}

// maxCursorMicros is 9999-12-31 in Unix microseconds.
const maxCursorMicros = 253402300799999999

// Encode is the cursor as clients see it (a Link header's before=, the
// console's pages): the job's created_at in Unix microseconds and its id.
func (c JobCursor) Encode() string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(c.CreatedAt.UnixMicro(), 10) + "/" + c.ID))
}

// ParseJobCursor reads a cursor that Encode made; anything else is an
// error (callers answer 400 or ignore it, never pass it on).
func ParseJobCursor(s string) (JobCursor, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return JobCursor{}, err
	}
	ts, id, ok := strings.Cut(string(b), "/")
	if !ok {
		return JobCursor{}, errors.New("no separator")
	}
	us, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return JobCursor{}, err
	}
	// Postgres timestamps span 4713 BC to 294276 AD; a cursor is ours, so
	// it lies well within 1970 to 9999.
	if us < 0 || us > maxCursorMicros {
		return JobCursor{}, errors.New("cursor time out of range")
	}
	if !CanonicalID(id) {
		return JobCursor{}, errors.New("cursor id is not a UUID")
	}
	return JobCursor{CreatedAt: time.UnixMicro(us), ID: id}, nil
}
