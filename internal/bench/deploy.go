package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"time"

	"github.com/scrapethis/scrapethis"
	"github.com/scrapethis/scrapethis/archive"
	"github.com/scrapethis/scrapethis/storage"
)

// deployed measures deploys: storing a 20 MiB upload (baseline: the same
// bytes inserted straight into Postgres from here), a version's first job
// on a worker (baseline: unpacking the same archive here, in memory to
// disk), and dispatch of a cached version's spider against a spiders-dir
// spider, interleaved in the same run.
func (b *Benchmarker) deployed(ctx context.Context) error {
	dir := filepath.Join(b.dir, "bundle")
	if err := os.MkdirAll(filepath.Join(dir, "bin"), 0o755); err != nil {
		return err
	}
	if err := copyFile(b.helper, filepath.Join(dir, "bin", "benchspider")); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "scrapethis.json"), []byte(`{"spiders": {"deployed-stamp": "bin/benchspider"}}`), 0o644); err != nil {
		return err
	}
	payload := make([]byte, b.sz.DeployMB<<20)

	// Uploads of three different archives (a fresh payload each), and the
	// raw insert of the same bytes under another key.
	var upload, raw []time.Duration
	var last []byte
	var version struct{ ID, Status string }
	for i := 0; i < 3; i++ {
		rand.Read(payload)
		if err := os.WriteFile(filepath.Join(dir, "payload.bin"), payload, 0o644); err != nil {
			return err
		}
		data, err := archive.Pack(ctx, dir)
		if err != nil {
			return err
		}
		t0 := time.Now()
		st, out, err := b.upload(ctx, "/api/v1/projects/bench/versions", data)
		upload = append(upload, time.Since(t0))
		if err != nil {
			return err
		}
		if st != http.StatusCreated {
			return fmt.Errorf("upload: %d %s", st, bytes.TrimSpace(out))
		}
		json.Unmarshal(out, &version)
		key := "bench-raw-" + strconv.Itoa(i) + "-" + storage.Sum(data)[:16]
		t0 = time.Now()
		if err := b.store.PutArchive(ctx, key, data); err != nil {
			return err
		}
		raw = append(raw, time.Since(t0))
		last = data
	}
	mibps := func(d time.Duration) float64 { return float64(len(last)) / (1 << 20) / d.Seconds() }
	b.res.add(fmt.Sprintf("deploy: %d MiB upload stored (POST -> 201)", b.sz.DeployMB), mibps(percentile(upload, 50)), "MiB/s",
		ptr(mibps(percentile(raw, 50))), true, ratioAtLeast(0.5),
		fmt.Sprintf("%.1f MiB archive, median of 3; baseline: the same bytes INSERTed into archives from the bench", float64(len(last))/(1<<20)))

	// The newest version becomes ready; its first job fetches it.
	deadline := time.Now().Add(2 * time.Minute)
	for version.Status != string(scrapethis.VersionReady) {
		if version.Status == string(scrapethis.VersionFailed) || time.Now().After(deadline) {
			return fmt.Errorf("bench version %s is %s", version.ID, version.Status)
		}
		time.Sleep(20 * time.Millisecond)
		_, out, err := b.client.do(ctx, http.MethodGet, "/api/v1/projects/bench/versions/"+version.ID, nil)
		if err != nil {
			return err
		}
		json.Unmarshal(out, &version)
	}
	sp, err := b.store.SpiderByName(ctx, b.userID, "deployed-stamp")
	if err != nil {
		return err
	}
	b.spiders["deployed-stamp"] = sp.ID
	stamps := filepath.Join(b.dir, "stamps")
	// The worker that inspected the version has it cached: a first job is
	// cold only on a worker that did not. The worker starts again on an
	// empty cache of its own, as a new machine would.
	b.worker.stop(30 * time.Second)
	b.env = append(b.env, "SCRAPETHIS_CACHE_DIR="+filepath.Join(b.dir, "cache-2"))
	if b.worker, err = b.startChild("worker", "worker"); err != nil {
		return fmt.Errorf("%w: %w", errFatal, err)
	}
	first, err := b.postJob(ctx, "deployed-stamp", map[string]string{"mode": "stamp", "out": filepath.Join(stamps, "deploy-first")})
	if err != nil {
		return err
	}
	if job, err := b.waitFinal(ctx, first, time.Minute); err != nil || job.Status != scrapethis.StatusFinished {
		return fmt.Errorf("first deployed job ended %s: %v", job.Status, err)
	}
	prepared, cached := b.preparedIn(ctx, first)
	t0 := time.Now()
	if _, err := archive.Extract(ctx, bytes.NewReader(last), int64(len(last)), "application/gzip", archive.Limits{}, filepath.Join(b.dir, "extract-baseline")); err != nil {
		return err
	}
	extract := time.Since(t0)
	note := "first job of the version on the worker: fetch from Postgres, verify, unpack (no requirements: no environment); baseline: archive.Extract of the same bytes in the bench"
	if cached {
		note = "the worker had the version from its inspection; " + note
	}
	b.res.add("deploy: version's first job, fetch+verify+unpack", ms(prepared), "ms", ptr(ms(extract)), false, nil, note)

	// Dispatch, interleaved: a cached version's executable against the
	// same executable in the spiders directory.
	var deployed, plain []time.Duration
	n := max(b.sz.DispatchJobs/2, 10)
	for i := 0; i < n; i++ {
		for _, spider := range []string{"deployed-stamp", "stamp"} {
			out := filepath.Join(stamps, fmt.Sprintf("deploy-%s-%d", spider, i))
			id, err := b.postJob(ctx, spider, map[string]string{"mode": "stamp", "out": out})
			accepted := time.Now()
			if err != nil {
				return err
			}
			started, err := waitStamp(ctx, out, 10*time.Second)
			if err != nil {
				return err
			}
			if job, err := b.waitFinal(ctx, id, 10*time.Second); err != nil || job.Status != scrapethis.StatusFinished {
				return fmt.Errorf("%s job ended %s: %v", spider, job.Status, err)
			}
			if spider == "stamp" {
				plain = append(plain, started.Sub(accepted))
			} else {
				deployed = append(deployed, started.Sub(accepted))
			}
		}
	}
	dp, pp := ms(percentile(deployed, 50)), ms(percentile(plain, 50))
	b.res.add("deploy: dispatch p50, cached version minus spiders-dir spider", dp-pp, "ms", ptr(pp), false, atMost(5),
		fmt.Sprintf("%d pairs interleaved; cached version p50 %.2f ms, p99 %.2f ms; spiders-dir p50 %.2f ms (the baseline), p99 %.2f ms",
			n, dp, ms(percentile(deployed, 99)), pp, ms(percentile(plain, 99))))
	return nil
}

// upload POSTs an archive as the CLI does.
func (b *Benchmarker) upload(ctx context.Context, path string, data []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, b.client.base+path, bytes.NewReader(data))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", b.client.auth)
	req.Header.Set("Content-Type", "application/gzip")
	resp, err := b.client.hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	return resp.StatusCode, out, err
}

var preparedLine = regexp.MustCompile(`prepared on this worker in ([0-9.]+)(ms|s|µs)`)

// preparedIn reads from the job's log how long its worker took to prepare
// the version, or reports that it came from the cache.
func (b *Benchmarker) preparedIn(ctx context.Context, jobID string) (time.Duration, bool) {
	lines, err := b.store.Logs(ctx, jobID, -1, 100)
	if err != nil {
		return 0, true
	}
	for _, l := range lines {
		if m := preparedLine.FindStringSubmatch(l.Line); m != nil {
			d, err := time.ParseDuration(m[1] + m[2])
			if err == nil {
				return d, false
			}
		}
	}
	return 0, true
}
