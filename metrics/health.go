package metrics

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// ReadyTimeout bounds each dependency check of /readyz.
const ReadyTimeout = 2 * time.Second

// Pinger is Postgres as /readyz sees it: *db.DB, *sqlx.DB or *sql.DB.
type Pinger interface {
	Ping(ctx context.Context) error
}

// RedisPinger is Redis as /readyz sees it: any go-redis client.
type RedisPinger interface {
	Ping(ctx context.Context) *redis.StatusCmd
}

// Healthz answers 200 {"status":"ok"} for as long as the process serves
// HTTP; it checks nothing else, so that a restart is never the answer to a
// database outage.
func Healthz() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeProbe(w, http.StatusOK, struct {
			Status string `json:"status"`
		}{"ok"})
	})
}

// Readyz answers 200 when Postgres and Redis both answer within
// ReadyTimeout, else 503 {"status":"unavailable","postgres":"ok|down",
// "redis":"ok|down"}. It says which is down, never why: no error text, no
// address.
func Readyz(pg Pinger, rdb RedisPinger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), ReadyTimeout)
		defer cancel()
		var pgErr, redisErr error
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); pgErr = pg.Ping(ctx) }()
		go func() { defer wg.Done(); redisErr = rdb.Ping(ctx).Err() }()
		wg.Wait()
		body := readiness{Status: "ok", Postgres: state(pgErr), Redis: state(redisErr)}
		status := http.StatusOK
		if pgErr != nil || redisErr != nil {
			body.Status = "unavailable"
			status = http.StatusServiceUnavailable
		}
		writeProbe(w, status, body)
	})
}

type readiness struct {
	Status   string `json:"status"`
	Postgres string `json:"postgres"`
	Redis    string `json:"redis"`
}

func state(err error) string {
	if err != nil {
		return "down"
	}
	return "ok"
}

func writeProbe(w http.ResponseWriter, status int, body any) {
	b, _ := json.Marshal(body)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// Ops is the handler of a process that serves no API (the worker): GET
// /metrics, /healthz and /readyz, and 404 for anything else.
func Ops(m *Metrics, pg Pinger, rdb RedisPinger) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	mux.Handle("GET /healthz", Healthz())
	mux.Handle("GET /readyz", Readyz(pg, rdb))
	return mux
}
