package bench

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/scrapethis/scrapethis"
)

// cancelLatency: from sending DELETE /api/v1/jobs/{id} to the spider's
// process group being gone, for a spider that obeys SIGTERM (sleeper.sh:
// `exec sleep 60`). The spider writes its pid, which is its process group
// id, to a file; "gone" is kill(-pgid, 0) failing with ESRCH, polled every
// 100µs, which also needs the worker to have reaped the process.
func (b *Benchmarker) cancelLatency(ctx context.Context) error {
	pidDir := filepath.Join(b.dir, "pids")
	var lat, del []time.Duration
	for i := 0; i < b.sz.CancelJobs+2; i++ { // the first two warm up
		id, err := b.postJob(ctx, "sleeper", map[string]string{"dir": pidDir})
		if err != nil {
			return err
		}
		pgid, err := waitPID(ctx, filepath.Join(pidDir, id+".pid"), 10*time.Second)
		if err != nil {
			return err
		}
		type result struct {
			st   int
			body []byte
			err  error
			took time.Duration
		}
		done := make(chan result, 1)
		t0 := time.Now()
		go func() {
			st, body, err := b.client.do(ctx, http.MethodDelete, "/api/v1/jobs/"+id, nil)
			done <- result{st, body, err, time.Since(t0)}
		}()
		gone := false
		for time.Since(t0) < 15*time.Second {
			if err := syscall.Kill(-pgid, 0); errors.Is(err, syscall.ESRCH) {
				gone = true
				break
			}
			time.Sleep(100 * time.Microsecond)
		}
		d := time.Since(t0)
		r := <-done
		if r.err != nil || r.st != http.StatusOK {
			return fmt.Errorf("DELETE: %d %s %v", r.st, r.body, r.err)
		}
		if !gone {
			return fmt.Errorf("spider process group %d still there %s after DELETE", pgid, d.Round(time.Millisecond))
		}
		if job, err := b.waitFinal(ctx, id, 10*time.Second); err != nil || job.Status != scrapethis.StatusCancelled {
			return fmt.Errorf("cancelled job ended %s: %v", job.Status, err)
		}
		if i >= 2 {
			lat = append(lat, d)
			del = append(del, r.took)
		}
	}
	note := fmt.Sprintf("%d jobs; DELETE response p50 %.2f ms, p99 %.2f ms (it waits for the job to be final)",
		len(lat), ms(percentile(del, 50)), ms(percentile(del, 99)))
	b.res.add("cancel latency p50 (DELETE -> process group gone)", ms(percentile(lat, 50)), "ms", nil, false, nil, note)
	b.res.add("cancel latency p99 (DELETE -> process group gone)", ms(percentile(lat, 99)), "ms", nil, false, atMost(100), "")
	return nil
}

// waitPID polls for a pid file and returns the pid in it.
func waitPID(ctx context.Context, path string, limit time.Duration) (int, error) {
	deadline := time.Now().Add(limit)
	for {
		b, err := os.ReadFile(path)
		if err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 {
				return pid, nil
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return 0, fmt.Errorf("spider did not write %s within %s", path, limit)
		}
		time.Sleep(500 * time.Microsecond)
	}
}
