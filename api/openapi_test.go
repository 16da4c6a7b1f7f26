package api_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/scrapethis/scrapethis/api"
)

// openapiRouter is the document, checked, as a router to find each
// request's operation.
var openapiRouter = sync.OnceValues(func() (routers.Router, error) {
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(api.OpenAPIYAML())
	if err != nil {
		return nil, err
	}
	if err := doc.Validate(context.Background()); err != nil {
		return nil, err
	}
	return gorillamux.NewRouter(doc)
})

func init() {
	// Streams: their bodies are text to the validator.
	openapi3filter.RegisterBodyDecoder("text/csv", openapi3filter.FileBodyDecoder)
	openapi3filter.RegisterBodyDecoder("application/x-ndjson", openapi3filter.FileBodyDecoder)
}

// checkOpenAPI validates a real response against the document: its status
// must be documented for its operation, and its body must match the schema
// (objects have additionalProperties false, so an undocumented field
// fails). Every request the API tests make goes through here. A request
// the document has no operation for may only be answered 404 or 405.
func checkOpenAPI(t *testing.T, req *http.Request, status int, header http.Header, body []byte) {
	t.Helper()
	router, err := openapiRouter()
	if err != nil {
		t.Fatalf("openapi.yaml: %v", err)
	}
	if !strings.HasPrefix(req.URL.Path, "/api/v1/") {
		return // the operators' routes are not the API
	}
	probe := req.Clone(context.Background())
	probe.Body = http.NoBody
	route, params, err := router.FindRoute(probe)
	if err != nil {
		if status != http.StatusNotFound && status != http.StatusMethodNotAllowed {
			t.Errorf("openapi: %s %s answered %d but the document has no such operation: %v", req.Method, req.URL.Path, status, err)
		}
		return
	}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: probe, PathParams: params, Route: route,
			Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}},
		Status: status,
		Header: header,
		Body:   io.NopCloser(bytes.NewReader(body)),
		Options: &openapi3filter.Options{
			IncludeResponseStatus: true,
			MultiError:            true,
		},
	}
	if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
		t.Errorf("openapi: %s %s answered %d %.300s: not as documented: %v", req.Method, req.URL, status, body, err)
	}
}

func TestOpenAPIServed(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r := b.mustStatus(b.do("GET", "/api/v1/openapi.json", "", ""), 200)
	doc, err := openapi3.NewLoader().LoadFromData(r.body)
	if err != nil {
		t.Fatalf("served document: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("served document: %v", err)
	}
	// Every route of the route table is in it.
	for _, p := range []string{"/api/v1/jobs", "/api/v1/jobs/{id}", "/api/v1/jobs/{id}/items", "/api/v1/jobs/{id}/logs",
		"/api/v1/spiders", "/api/v1/spiders/{id}", "/api/v1/projects", "/api/v1/projects/{name}",
		"/api/v1/projects/{name}/versions", "/api/v1/projects/{name}/versions/{id}", "/api/v1/schedules",
		"/api/v1/schedules/{id}", "/api/v1/webhooks", "/api/v1/webhooks/{id}", "/api/v1/webhooks/{id}/deliveries"} {
		if doc.Paths.Find(p) == nil {
			t.Errorf("no path %s", p)
		}
	}
}
