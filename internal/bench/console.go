package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/scrapethis/scrapethis"
	"github.com/scrapethis/scrapethis/console"
)

// consoleLatency: the web console's jobs page (GET /jobs, 50 rows, as a
// signed-in person's browser asks for it) for the listed user of
// listLatency's table. Its value is the server's own time for the page
// (the console's Server-Timing header: session lookup, the jobs query,
// the spiders for the filter, rendering); the baseline is the store's jobs
// query alone (db.Jobs) in this process, alternated with the requests.
func (b *Benchmarker) consoleLatency(ctx context.Context, userID, key string) error {
	s, err := b.store.CreateSession(ctx, key, time.Hour)
	if err != nil {
		return fmt.Errorf("console session: %w", err)
	}
	defer b.store.DeleteSession(context.WithoutCancel(ctx), s.Token)
	get := func(path string) (server, total time.Duration, err error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.client.base+path, nil)
		if err != nil {
			return 0, 0, err
		}
		req.AddCookie(&http.Cookie{Name: console.SessionCookie, Value: s.Token})
		t := time.Now()
		res, err := b.client.hc.Do(req)
		if err != nil {
			return 0, 0, err
		}
		body, err := io.ReadAll(res.Body)
		res.Body.Close()
		total = time.Since(t)
		if err != nil {
			return 0, 0, err
		}
		if res.StatusCode != http.StatusOK || bytes.Count(body, []byte("<tr data-job=")) != 50 {
			return 0, 0, fmt.Errorf("GET %s: %d with %d job rows, want 200 with 50", path, res.StatusCode, bytes.Count(body, []byte("<tr data-job=")))
		}
		server, err = serverTiming(res.Header.Get("Server-Timing"))
		return server, total, err
	}
	variants := []struct {
		name, path string
		filter     scrapethis.JobFilter
	}{
		{"console jobs page", "/jobs", scrapethis.JobFilter{UserID: userID, Limit: 50}},
		{"console jobs page status=error", "/jobs?status=error", scrapethis.JobFilter{UserID: userID, Status: scrapethis.StatusError, Limit: 50}},
	}
	for _, v := range variants {
		for range 50 { // warm up
			if _, _, err := get(v.path); err != nil {
				return err
			}
		}
		var server, total, raw []time.Duration
		deadline := time.Now().Add(30 * time.Second)
		for i := 0; i < b.sz.ListRequests && time.Now().Before(deadline); i++ {
			st, tt, err := get(v.path)
			if err != nil {
				return err
			}
			server, total = append(server, st), append(total, tt)
			t := time.Now()
			if _, err := b.store.Jobs(ctx, v.filter); err != nil {
				return err
			}
			raw = append(raw, time.Since(t))
		}
		note := fmt.Sprintf("%d sequential page loads with a session cookie, %d rows in the table, %d the user's; seen by the client: p50 %.2f ms, p99 %.2f ms",
			len(server), b.sz.ListRows, b.sz.ListUserRows, ms(percentile(total, 50)), ms(percentile(total, 99)))
		b.res.add(v.name+" server time p50", ms(percentile(server, 50)), "ms", ptr(ms(percentile(raw, 50))), false, nil, note)
		b.res.add(v.name+" server time p99", ms(percentile(server, 99)), "ms", ptr(ms(percentile(raw, 99))), false, atMost(50), "")
	}
	return nil
}

// serverTiming reads the console's "app;dur=MS" Server-Timing entry.
func serverTiming(h string) (time.Duration, error) {
	for _, part := range strings.Split(h, ",") {
		name, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if name != "app" {
			continue
		}
		for _, p := range strings.Split(params, ";") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(p), "dur="); ok {
				f, err := strconv.ParseFloat(v, 64)
				if err != nil {
					return 0, fmt.Errorf("Server-Timing %q: %w", h, err)
				}
				return time.Duration(f * float64(time.Millisecond)), nil
			}
		}
	}
	return 0, fmt.Errorf("no app duration in Server-Timing %q", h)
}
