package db

import (
	"context"
	"fmt"
	"time"

	"github.com/lib/pq"
)

// keysChannel is NOTIFYed by a trigger whenever an API key is revoked or
// deleted (migration 0002).
const keysChannel = "scrapethis_api_keys"

// WatchKeys listens on its own connection for API key revocations until
// ctx ends. It calls live(true) once the watch is in place (and again after
// each reconnect, together with changed, since a revocation may have been
// missed while it was down), live(false) as soon as the connection drops,
// and changed for every revocation or deletion of a key.
func (d *DB) WatchKeys(ctx context.Context, changed func(), live func(bool)) error {
	l := pq.NewListener(d.dsn, 100*time.Millisecond, 5*time.Second, func(ev pq.ListenerEventType, err error) {
		if ev == pq.ListenerEventDisconnected || ev == pq.ListenerEventConnectionAttemptFailed {
			live(false)
		}
	})
	defer l.Close()
	if err := l.Listen(keysChannel); err != nil {
		return fmt.Errorf("watch key revocations: %w", err)
	}
	changed()
	live(true)
	for {
		select {
		case <-ctx.Done():
			return nil
		case n := <-l.Notify:
			changed()
			if n == nil { // reconnected, LISTEN re-issued
				live(true)
			}
		}
	}
}
