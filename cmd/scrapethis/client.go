package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// defaultURL is where the client finds the API when SCRAPETHIS_URL is unset:
// the address `scrapethis dev` and `scrapethis api` listen on by default.
const defaultURL = "http://127.0.0.1:8080"

// maxJSONBody bounds how much of a JSON answer (or an error's body) the
// client reads.
const maxJSONBody = 16 << 20

// apiClient talks to the ScrapeThis API as a user: one base URL, one API
// key. Every call takes a context; answers that are not 2xx come back as
// an *apiError carrying the API's own message.
type apiClient struct {
	base string
	key  string
	http *http.Client
}

// newClient returns a client of the API at base (SCRAPETHIS_URL) with key
// (SCRAPETHIS_API_KEY).
func newClient(base, key string) *apiClient {
	return &apiClient{base: strings.TrimSuffix(base, "/"), key: key, http: &http.Client{}}
}

// clientFromEnv reads SCRAPETHIS_URL (default http://127.0.0.1:8080) and
// SCRAPETHIS_API_KEY, which must be set.
func clientFromEnv(getenv func(string) string) (*apiClient, error) {
	base := getenv("SCRAPETHIS_URL")
	if base == "" {
		base = defaultURL
	}
	if u, err := url.Parse(base); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("SCRAPETHIS_URL %q is not an http(s) URL", base)
	}
	key := getenv("SCRAPETHIS_API_KEY")
	if key == "" {
		return nil, errors.New("SCRAPETHIS_API_KEY is not set: create a key with `scrapethis apikey create --email YOU`, or take the one `make run` prints")
	}
	return newClient(base, key), nil
}

// apiError is an answer outside 2xx: its status and the API's message
// (the "error" of its JSON body, or the start of whatever body it was).
type apiError struct {
	Method, Path string
	Status       int
	Message      string
}

func (e *apiError) Error() string {
	return fmt.Sprintf("%s %s: %d %s: %s", e.Method, e.Path, e.Status, http.StatusText(e.Status), e.Message)
}

// statusOf returns the HTTP status of an *apiError in err's chain, 0 for
// any other error.
func statusOf(err error) int {
	var e *apiError
	if errors.As(err, &e) {
		return e.Status
	}
	return 0
}

// request is one API call.
type request struct {
	method, path string
	query        url.Values
	body         []byte // nil for none
	contentType  string
	header       http.Header // extra headers
}

// send makes the call and returns the response of a 2xx answer, whose body
// the caller closes; any other answer is read into an *apiError.
func (c *apiClient) send(ctx context.Context, r request) (*http.Response, error) {
	u := c.base + r.path
	if len(r.query) > 0 {
		u += "?" + r.query.Encode()
	}
	var body io.Reader
	if r.body != nil {
		body = bytes.NewReader(r.body)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, u, body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", r.method, r.path, err)
	}
	for k, v := range r.header {
		req.Header[k] = v
	}
	req.Header.Set("Authorization", "Bearer "+c.key)
	req.Header.Set("Accept", "application/json")
	if r.contentType != "" {
		req.Header.Set("Content-Type", r.contentType)
	}
	res, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", r.method, r.path, err)
	}
	if res.StatusCode/100 == 2 {
		return res, nil
	}
	defer res.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(res.Body, maxJSONBody))
	e := &apiError{Method: r.method, Path: r.path, Status: res.StatusCode}
	var msg struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(data, &msg) == nil && msg.Error != "" {
		e.Message = msg.Error
	} else {
		e.Message = strings.TrimSpace(string(data[:min(len(data), 200)]))
	}
	return nil, e
}

// call makes the call and decodes a 2xx JSON answer into out (unless nil),
// returning the status.
func (c *apiClient) call(ctx context.Context, r request, out any) (int, error) {
	res, err := c.send(ctx, r)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	data, err := io.ReadAll(io.LimitReader(res.Body, maxJSONBody))
	if err != nil {
		return 0, fmt.Errorf("%s %s: read the answer: %w", r.method, r.path, err)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return 0, fmt.Errorf("%s %s: the answer is not the JSON expected: %w", r.method, r.path, err)
		}
	}
	return res.StatusCode, nil
}

// version is a deployed version of a project (API.md C1).
type version struct {
	ID        string     `json:"id"`
	Project   string     `json:"project"`
	Label     string     `json:"label"`
	SHA256    string     `json:"sha256"`
	SizeBytes int64      `json:"size_bytes"`
	Status    string     `json:"status"`
	Error     *string    `json:"error"`
	Spiders   []string   `json:"spiders"`
	CreatedAt time.Time  `json:"created_at"`
	ReadyAt   *time.Time `json:"ready_at"`
}

// Version statuses.
const (
	versionBuilding = "building"
	versionReady    = "ready"
	versionFailed   = "failed"
)

// project is a project with its latest version, if any.
type project struct {
	Name          string   `json:"name"`
	LatestVersion *version `json:"latest_version"`
}

func projectPath(name string) string { return "/api/v1/projects/" + url.PathEscape(name) }

// uploadVersion uploads archive (of contentType, application/gzip or
// application/zip) as a new version of the project, labelled label unless
// "". created is false when the same bytes were deployed to the project
// before (200): v is then that version.
func (c *apiClient) uploadVersion(ctx context.Context, name, label string, archive []byte, contentType string) (v version, created bool, err error) {
	r := request{method: http.MethodPost, path: projectPath(name) + "/versions", body: archive, contentType: contentType}
	if label != "" {
		r.query = url.Values{"label": {label}}
	}
	status, err := c.call(ctx, r, &v)
	return v, status == http.StatusCreated, err
}

// version reads one version of the project.
func (c *apiClient) version(ctx context.Context, name, id string) (version, error) {
	var v version
	_, err := c.call(ctx, request{method: http.MethodGet, path: projectPath(name) + "/versions/" + url.PathEscape(id)}, &v)
	return v, err
}

// project reads a project; a missing one is an *apiError with status 404.
func (c *apiClient) project(ctx context.Context, name string) (project, error) {
	var p project
	_, err := c.call(ctx, request{method: http.MethodGet, path: projectPath(name)}, &p)
	return p, err
}

// maxPollInterval caps waitVersion's interval, which grows from its first
// value: a quick inspection is seen at once, a long dependency install is
// not asked about several times a second.
const maxPollInterval = 2 * time.Second

// waitVersion polls version v of project name, first after interval and
// then less often (up to maxPollInterval), until it is no longer building,
// and returns it; ctx bounds the wait.
func (c *apiClient) waitVersion(ctx context.Context, name string, v version, interval time.Duration) (version, error) {
	timer := time.NewTimer(interval)
	defer timer.Stop()
	for v.Status == versionBuilding {
		select {
		case <-ctx.Done():
		case <-timer.C:
			next, err := c.version(ctx, name, v.ID)
			if err == nil {
				v = next
				interval = min(interval*3/2, maxPollInterval)
				timer.Reset(interval)
				continue
			}
			if ctx.Err() == nil {
				return v, err
			}
		}
		return v, fmt.Errorf("version %s of %s is still %s: %w", v.Label, name, v.Status, context.Cause(ctx))
	}
	return v, nil
}

// stream makes a GET call and copies a 2xx answer's body to w as it
// arrives (items, logs); a body cut short is an error.
func (c *apiClient) stream(ctx context.Context, path string, query url.Values, w io.Writer) error {
	res, err := c.send(ctx, request{method: http.MethodGet, path: path, query: query})
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if _, err := io.Copy(w, res.Body); err != nil {
		return fmt.Errorf("GET %s: the answer was cut short: %w", path, err)
	}
	return nil
}

// jobStart is the body of POST /api/v1/jobs.
type jobStart struct {
	SpiderName     string            `json:"spider_name"`
	Arguments      map[string]string `json:"arguments,omitempty"`
	Version        string            `json:"version,omitempty"`
	Settings       map[string]string `json:"settings,omitempty"`
	MemoryMB       int               `json:"memory_mb,omitempty"`
	TimeoutSeconds int               `json:"timeout_seconds,omitempty"`
	Priority       *int              `json:"priority,omitempty"`
}

// startJob starts a job and returns the API's answer ({"jobId", "status"}).
// With an idempotency key, retrying the call never starts a second job.
func (c *apiClient) startJob(ctx context.Context, body jobStart, idempotencyKey string) (json.RawMessage, error) {
	data, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("encode the job: %w", err)
	}
	req := request{method: http.MethodPost, path: "/api/v1/jobs", body: data, contentType: "application/json"}
	if idempotencyKey != "" {
		req.header = http.Header{"Idempotency-Key": {idempotencyKey}}
	}
	var out json.RawMessage
	_, err = c.call(ctx, req, &out)
	return out, err
}

// spiderID returns the id of the user's spider with the name.
func (c *apiClient) spiderID(ctx context.Context, name string) (string, error) {
	var spiders []struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	}
	if _, err := c.call(ctx, request{method: http.MethodGet, path: "/api/v1/spiders"}, &spiders); err != nil {
		return "", err
	}
	for _, s := range spiders {
		if s.Name == name {
			return s.ID, nil
		}
	}
	return "", fmt.Errorf("no spider named %q", name)
}

// jobRow is what the CLI shows of a job object; the API's full object is
// printed as it came where all of it is wanted.
type jobRow struct {
	ID           string    `json:"id"`
	Status       string    `json:"status"`
	ItemsScraped int64     `json:"items_scraped"`
	CreatedAt    time.Time `json:"created_at"`
	Error        *string   `json:"error"`
	Spider       struct {
		Name string `json:"name"`
	} `json:"spider"`
}

// jobs lists jobs, newest first, with the API's filters (status,
// spider_id, limit).
func (c *apiClient) jobs(ctx context.Context, query url.Values) ([]jobRow, json.RawMessage, error) {
	var raw json.RawMessage
	if _, err := c.call(ctx, request{method: http.MethodGet, path: "/api/v1/jobs", query: query}, &raw); err != nil {
		return nil, nil, err
	}
	var rows []jobRow
	if err := json.Unmarshal(raw, &rows); err != nil {
		return nil, nil, fmt.Errorf("GET /api/v1/jobs: the answer is not a list of jobs: %w", err)
	}
	return rows, raw, nil
}

func jobPath(id string) string { return "/api/v1/jobs/" + url.PathEscape(id) }

// job returns a job object as the API sent it.
func (c *apiClient) job(ctx context.Context, id string) (json.RawMessage, error) {
	var raw json.RawMessage
	_, err := c.call(ctx, request{method: http.MethodGet, path: jobPath(id)}, &raw)
	return raw, err
}

// cancelJob cancels a job and returns the API's message.
func (c *apiClient) cancelJob(ctx context.Context, id string) (string, error) {
	var out struct {
		Message string `json:"message"`
	}
	_, err := c.call(ctx, request{method: http.MethodDelete, path: jobPath(id)}, &out)
	return out.Message, err
}
