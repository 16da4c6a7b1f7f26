// Package cronspec parses schedule specs (five-field cron, descriptors and
// @every) and IANA time zones, and computes fire times under the
// missed-fire policy. It depends on nothing of the platform, so the domain
// types can validate schedules with it and the API can use it without the
// scheduler engine. Its errors are plain errors whose text is meant for the
// person who wrote the spec.
package cronspec

import (
	"errors"
	"fmt"
	"strings"
	"time"
	_ "time/tzdata" // IANA zones even where the host has no zoneinfo

	"github.com/robfig/cron/v3"
)

// MinEvery is the shortest @every interval accepted.
const MinEvery = time.Second

// maxSpecLen bounds a spec's length; real ones are a few dozen bytes.
const maxSpecLen = 200

// parser reads standard 5-field cron specs (minute hour day-of-month month
// day-of-week) and the descriptors @yearly, @annually, @monthly, @weekly,
// @daily, @midnight, @hourly and @every <duration>.
var parser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// Spec is a parsed schedule: when it fires, in its time zone.
type Spec struct {
	sched cron.Schedule
	// every is the interval of an @every spec, whose fire times are
	// anchored on the first one rather than on the clock.
	every time.Duration
}

// Parse reads a cron spec in a time zone. Its errors are invalid-input
// domain errors that name the spec or the zone.
func Parse(spec, timezone string) (Spec, error) {
	loc, err := LoadZone(timezone)
	if err != nil {
		return Spec{}, err
	}
	return ParseIn(spec, loc)
}

// LoadZone returns the IANA time zone with the name. "Local" is refused:
// it would mean whatever zone the scheduler's host happens to have.
func LoadZone(name string) (*time.Location, error) {
	bad := func(why string) error {
		return fmt.Errorf("Invalid timezone %q: %s", name, why)
	}
	switch {
	case name == "":
		return nil, bad("must be an IANA time zone name such as UTC or Europe/Paris")
	case name == "Local":
		return nil, bad("name the zone, such as UTC or Europe/Paris")
	case len(name) > 64:
		return nil, bad("too long")
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, bad("not an IANA time zone name such as UTC or Europe/Paris")
	}
	return loc, nil
}

// ParseIn reads a cron spec whose fire times are in loc.
func ParseIn(spec string, loc *time.Location) (s Spec, err error) {
	spec = strings.TrimSpace(spec)
	bad := func(format string, args ...any) error {
		return fmt.Errorf("Invalid cron %q: %s", spec, fmt.Sprintf(format, args...))
	}
	switch {
	case spec == "":
		return Spec{}, errors.New("Missing cron")
	case len(spec) > maxSpecLen:
		return Spec{}, fmt.Errorf("Invalid cron: longer than %d bytes", maxSpecLen)
	case strings.HasPrefix(spec, "TZ=") || strings.HasPrefix(spec, "CRON_TZ="):
		return Spec{}, bad("set the zone with the timezone field, not in the spec")
	}
	if rest, ok := strings.CutPrefix(spec, "@every "); ok {
		d, err := time.ParseDuration(strings.TrimSpace(rest))
		switch {
		case err != nil:
			return Spec{}, bad("@every needs a duration such as 30s, 5m or 1h30m")
		case d < MinEvery:
			return Spec{}, bad("@every needs at least %s", MinEvery)
		case d%time.Second != 0:
			return Spec{}, bad("@every needs a whole number of seconds")
		}
		return Spec{sched: cron.Every(d), every: d}, nil
	}
	// The parser has panicked on odd input before; a spec is client input.
	defer func() {
		if v := recover(); v != nil {
			s, err = Spec{}, bad("cannot be parsed")
		}
	}()
	sched, err := parser.Parse(spec)
	if err != nil {
		if strings.Contains(err.Error(), "fields") || strings.HasPrefix(spec, "@") {
			return Spec{}, bad("%s (want 5 fields: minute hour day-of-month month day-of-week, or one of @hourly, @daily, @weekly, @monthly, @yearly, @every <duration>)", err)
		}
		return Spec{}, bad("%s", err)
	}
	cs, ok := sched.(*cron.SpecSchedule)
	if !ok {
		return Spec{}, bad("unsupported")
	}
	cs.Location = loc
	s = Spec{sched: cs}
	if s.Next(time.Now()).IsZero() {
		return Spec{}, bad("it never fires")
	}
	return s, nil
}

// Every returns the interval of an @every spec, or zero.
func (s Spec) Every() time.Duration { return s.every }

// Next returns the first fire time strictly after t, or zero if there is
// none (a date that never comes). Fire times fall on whole seconds.
func (s Spec) Next(t time.Time) time.Time {
	n := s.sched.Next(t)
	if n.IsZero() {
		return n
	}
	return n.UTC()
}

// Due applies the missed-fire policy to a schedule that was due at next
// (next <= now): it fires once, for the latest of its fire times not after
// now, however many were missed, and is next due at its first fire time
// after now. A scheduler that was down for a day so starts one job, not a
// burst of them. following is zero when the spec never fires again.
func (s Spec) Due(next, now time.Time) (fire, following time.Time) {
	fire = s.latest(next, now)
	return fire, s.Next(fire)
}

// latest returns the last fire time in [from, now], where from is a fire
// time not after now.
func (s Spec) latest(from, now time.Time) time.Time {
	if !from.Before(now) {
		return from
	}
	if s.every > 0 {
		// @every fire times are from + k*every.
		k := now.Sub(from) / s.every
		return from.Add(k * s.every)
	}
	// Find a start close before the latest fire time by looking back from
	// now in doubling steps, then walk forward: the walk is short however
	// long the gap since from.
	lo := from
	for step := time.Second; step < 200*365*24*time.Hour; step *= 2 {
		start := now.Add(-step)
		if !start.After(from) {
			break
		}
		if n := s.Next(start); !n.IsZero() && !n.After(now) {
			lo = n
			break
		}
	}
	for range 1 << 20 {
		n := s.Next(lo)
		if n.IsZero() || n.After(now) || !n.After(lo) {
			break
		}
		lo = n
	}
	return lo
}
