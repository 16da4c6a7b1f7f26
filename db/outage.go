package db

import (
	"context"
	"database/sql/driver"
	"errors"
	"io"
	"net"
	"net/url"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/lib/pq"

	"github.com/scrapethis/scrapethis"
)

// errUnavailable is what every caller sees while Postgres cannot be
// reached: the API answers it with 503 and Retry-After.
var errUnavailable = scrapethis.Errorf(scrapethis.EUnavailable, "Service unavailable")

// connectionLost reports whether err says that Postgres could not be
// reached or dropped the connection, as opposed to an answer it gave.
func connectionLost(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	var pqErr *pq.Error
	if errors.As(err, &pqErr) {
		switch {
		case pqErr.Code.Class() == "08", // connection exception
			pqErr.Code == "57P01", pqErr.Code == "57P02", pqErr.Code == "57P03", // shutdowns, starting up
			pqErr.Code == "53300",       // too many connections
			pqErr.Severity == pq.Efatal: // a connection-level refusal
			return true
		}
		return false
	}
	var netErr net.Error
	return errors.Is(err, driver.ErrBadConn) || errors.As(err, &netErr) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, context.DeadlineExceeded) && strings.Contains(err.Error(), "dial")
}

// outage tracks whether Postgres is reachable, to log each change once
// rather than an error per request.
type outage struct {
	down  atomic.Bool
	since atomic.Int64 // UnixNano of the first failure of the outage
}

// check classifies the result of a database call: a lost connection is
// returned as errUnavailable (wrapping the driver's error, for logs) and
// starts an outage; any answer of the server ends one.
func (d *DB) check(err error) error {
	if !connectionLost(err) {
		if d.outage.down.Load() && d.outage.down.CompareAndSwap(true, false) && d.log != nil {
			d.log.Info("database reachable again", "down_for", time.Since(time.Unix(0, d.outage.since.Load())).Round(time.Millisecond))
		}
		return err
	}
	if d.outage.down.CompareAndSwap(false, true) {
		d.outage.since.Store(time.Now().UnixNano())
		if d.log != nil {
			d.log.Warn("database unreachable: requests answer 503 until it is back", "err", err)
		}
	}
	return errors.Join(errUnavailable, err)
}

// Unavailable reports whether the store is in an outage now.
func (d *DB) Unavailable() bool { return d.outage.down.Load() }

// withConnectTimeout bounds connection attempts (lib/pq's connect_timeout,
// in seconds) when the DSN does not: a host that drops packets must not
// hold requests for the kernel's TCP timeout.
func withConnectTimeout(dsn string) string {
	if strings.Contains(dsn, "connect_timeout") {
		return dsn
	}
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return dsn
		}
		q := u.Query()
		q.Set("connect_timeout", "5")
		u.RawQuery = q.Encode()
		return u.String()
	}
	return dsn + " connect_timeout=5"
}
