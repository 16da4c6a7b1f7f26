package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/scrapethis/scrapethis"
)

// apiClient talks to the API as a client does.
type apiClient struct {
	base string
	auth string
	hc   *http.Client
}

func newAPIClient(base, key string) *apiClient {
	tr := &http.Transport{
		Proxy:               nil,
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     time.Minute,
	}
	return &apiClient{base: base, auth: "Bearer " + key, hc: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
}

func (c *apiClient) do(ctx context.Context, method, path string, body []byte) (int, []byte, error) {
	return c.doKey(ctx, c.auth, method, path, body)
}

func (c *apiClient) doKey(ctx context.Context, auth, method, path string, body []byte) (int, []byte, error) {
	return c.doHeader(ctx, auth, method, path, body, nil)
}

// doHeader sends a request with extra headers.
func (c *apiClient) doHeader(ctx context.Context, auth, method, path string, body []byte, h http.Header) (int, []byte, error) {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, r)
	if err != nil {
		return 0, nil, err
	}
	for k, v := range h {
		req.Header[k] = v
	}
	req.Header.Set("Authorization", auth)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	return resp.StatusCode, out, err
}

// jobBody is a POST /api/v1/jobs body for one of the bench's spiders.
func (b *Benchmarker) jobBody(spider string, args map[string]string) []byte {
	body, _ := json.Marshal(map[string]any{"spider_id": b.spiders[spider], "arguments": args})
	return body
}

// postJob starts a job over the API and returns its id.
func (b *Benchmarker) postJob(ctx context.Context, spider string, args map[string]string) (string, error) {
	return b.post(ctx, b.jobBody(spider, args))
}

func (b *Benchmarker) post(ctx context.Context, body []byte) (string, error) {
	st, out, err := b.client.do(ctx, http.MethodPost, "/api/v1/jobs", body)
	if err != nil {
		return "", err
	}
	if st != http.StatusOK {
		return "", fmt.Errorf("POST /api/v1/jobs: %d %s", st, bytes.TrimSpace(out))
	}
	var resp struct {
		JobID string `json:"jobId"`
	}
	if err := json.Unmarshal(out, &resp); err != nil || resp.JobID == "" {
		return "", fmt.Errorf("POST /api/v1/jobs: unexpected body %s", out)
	}
	return resp.JobID, nil
}

// waitFinal polls the job until it is final, and returns it.
func (b *Benchmarker) waitFinal(ctx context.Context, id string, limit time.Duration) (scrapethis.Job, error) {
	deadline := time.Now().Add(limit)
	for {
		job, err := b.store.JobByID(ctx, id)
		if err != nil {
			return job, err
		}
		if job.Status.Final() {
			return job, nil
		}
		if time.Now().After(deadline) {
			return job, fmt.Errorf("job %s still %s after %s", id, job.Status, limit)
		}
		select {
		case <-ctx.Done():
			return job, ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
	}
}
