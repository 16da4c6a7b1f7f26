package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/scrapethis/scrapethis"
)

// dispatchLatency: from the API's 200 for a POST to the spider process
// running, with every worker slot free. The spider (benchspider, mode
// stamp) writes the time it started, taken before its main, to a file
// named by its argument. The baseline is the same spider started with
// fork/exec from this process, measured the same way: what starting the
// process costs by itself.
func (b *Benchmarker) dispatchLatency(ctx context.Context) error {
	dir := filepath.Join(b.dir, "stamps")
	one := func(i int) (sent, accepted time.Time, started time.Time, err error) {
		out := filepath.Join(dir, "api-"+strconv.Itoa(i))
		body := b.jobBody("stamp", map[string]string{"mode": "stamp", "out": out})
		sent = time.Now()
		id, err := b.post(ctx, body)
		accepted = time.Now()
		if err != nil {
			return
		}
		if started, err = waitStamp(ctx, out, 10*time.Second); err != nil {
			return
		}
		if job, err2 := b.waitFinal(ctx, id, 10*time.Second); err2 != nil || job.Status != scrapethis.StatusFinished {
			err = fmt.Errorf("stamp job ended %s: %v", job.Status, err2)
		}
		return
	}
	for i := range 3 { // warm-up
		if _, _, _, err := one(-1 - i); err != nil {
			return err
		}
	}
	var fromAccept, fromSent, post []time.Duration
	negative := 0
	deadline := time.Now().Add(time.Duration(b.sz.DispatchJobs) * 200 * time.Millisecond)
	for i := 0; i < b.sz.DispatchJobs && time.Now().Before(deadline); i++ {
		sent, accepted, started, err := one(i)
		if err != nil {
			return err
		}
		d := started.Sub(accepted)
		if d < 0 {
			negative++
		}
		fromAccept = append(fromAccept, d)
		fromSent = append(fromSent, started.Sub(sent))
		post = append(post, accepted.Sub(sent))
		// Land at a random phase of the worker's poll.
		time.Sleep(time.Duration(rand.Int64N(int64(10 * time.Millisecond))))
	}

	var raw []time.Duration
	for i := 0; i < len(fromAccept); i++ {
		out := filepath.Join(dir, "raw-"+strconv.Itoa(i))
		cmd := exec.CommandContext(ctx, b.helper, "-a", "mode=stamp", "-a", "out="+out)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		t0 := time.Now()
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("raw exec: %w", err)
		}
		started, err := readStamp(out)
		if err != nil {
			return err
		}
		raw = append(raw, started.Sub(t0))
	}

	note := fmt.Sprintf("%d jobs; from POST sent: p50 %.2f ms, p99 %.2f ms; POST round trip p50 %.2f ms",
		len(fromAccept), ms(percentile(fromSent, 50)), ms(percentile(fromSent, 99)), ms(percentile(post, 50)))
	if negative > 0 {
		note += fmt.Sprintf("; %d spiders started before the client had the 200", negative)
	}
	b.res.add("dispatch latency p50 (POST 200 -> spider started)", ms(percentile(fromAccept, 50)), "ms",
		ptr(ms(percentile(raw, 50))), false, atMost(10), note)
	b.res.add("dispatch latency p99 (POST 200 -> spider started)", ms(percentile(fromAccept, 99)), "ms",
		ptr(ms(percentile(raw, 99))), false, atMost(50), "")
	return nil
}

// waitStamp polls for a stamp file and returns the time in it.
func waitStamp(ctx context.Context, path string, limit time.Duration) (time.Time, error) {
	deadline := time.Now().Add(limit)
	for {
		t, err := readStamp(path)
		if err == nil {
			return t, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return time.Time{}, fmt.Errorf("spider did not write %s within %s", path, limit)
		}
		time.Sleep(500 * time.Microsecond)
	}
}

func readStamp(path string) (time.Time, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return time.Time{}, err
	}
	ns, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil {
		return time.Time{}, err
	}
	return time.Unix(0, ns), nil
}
