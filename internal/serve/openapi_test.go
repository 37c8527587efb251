package serve_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/skyjoin/skyjoin/internal/auth"
	"github.com/skyjoin/skyjoin/internal/deadletter"
	"github.com/skyjoin/skyjoin/internal/erase"
	"github.com/skyjoin/skyjoin/internal/ingest"
	"github.com/skyjoin/skyjoin/internal/platform"
	"github.com/skyjoin/skyjoin/internal/segment"
	"github.com/skyjoin/skyjoin/internal/serve"
)

var update = flag.Bool("update", false, "rewrite docs/openapi.json")

const openapiPath = "../../docs/openapi.json"

func TestOpenAPIIsCommitted(t *testing.T) {
	// docs/openapi.json is generated from internal/serve/openapi.json and
	// the event types. Regenerate with:
	//   go test ./internal/serve -run TestOpenAPIIsCommitted -update
	doc, err := serve.OpenAPI()
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile(openapiPath, doc, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(openapiPath)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, doc) {
		t.Errorf("%s is out of date: run go test ./internal/serve -run TestOpenAPIIsCommitted -update", openapiPath)
	}
	// Served as it is committed.
	h := serve.New(failingReader{}, serve.Options{Logger: platform.Discard})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/openapi.json", nil))
	if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != "application/json" || !bytes.Equal(rec.Body.Bytes(), got) {
		t.Errorf("GET /openapi.json: %d %s, not the committed document", rec.Code, rec.Header().Get("Content-Type"))
	}
}

type openapiDoc struct {
	OpenAPI string                                `json:"openapi"`
	Paths   map[string]map[string]json.RawMessage `json:"paths"`
}

func loadOpenAPI(t *testing.T) openapiDoc {
	t.Helper()
	b, err := serve.OpenAPI()
	if err != nil {
		t.Fatal(err)
	}
	var doc openapiDoc
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.OpenAPI != "3.1.0" {
		t.Errorf("openapi %q", doc.OpenAPI)
	}
	return doc
}

var wildcard = regexp.MustCompile(`\{([a-z_]+)(\.\.\.)?\}`)

// documented reports whether the ServeMux pattern "METHOD /path" is in doc.
func documented(doc openapiDoc, pattern string) bool {
	method, path, _ := strings.Cut(pattern, " ")
	path = wildcard.ReplaceAllString(path, "{$1}")
	ops, ok := doc.Paths[path]
	if !ok {
		return false
	}
	_, ok = ops[strings.ToLower(method)]
	return ok
}

func TestOpenAPIDocumentsEveryRoute(t *testing.T) {
	doc := loadOpenAPI(t)
	routes := append(serve.Routes(),
		// The other packages' routes on the same port.
		"POST /v1/events", "GET /v1/schema",
		"POST /v1/webhooks", "GET /v1/webhooks", "GET /v1/webhooks/{id}", "DELETE /v1/webhooks/{id}",
		"GET /v1/webhooks/{id}/failures", "POST /v1/webhooks/{id}/failures/replay",
		"GET /v1/deadletters", "POST /v1/deadletters/replay", "DELETE /v1/deadletters/{id}",
		"POST /v1/keys", "GET /v1/keys", "POST /v1/keys/{id}/rotate", "DELETE /v1/keys/{id}", "POST /v1/session",
		"DELETE /v1/users/{id}", "POST /v1/push/events",
		"POST /v1/batch", "POST /v1/track", "POST /v1/identify", "POST /v1/page", "POST /v1/screen", "POST /v1/group", "POST /v1/alias",
	)
	for _, r := range routes {
		if !documented(doc, r) {
			t.Errorf("route %s is not in the OpenAPI document", r)
		}
	}
	// Every documented operation of these packages answers on a mux that
	// has their routes (the webhook routes need a running dispatcher and
	// are checked by the list above, and so is the worker's push route,
	// which needs a worker: internal/app's TestRouteTableAgrees).
	mux := http.NewServeMux()
	serve.New(failingReader{}, serve.Options{Logger: platform.Discard}).Register(mux)
	ingest.New(ingest.Config{}, nil, platform.Discard).Register(mux)
	segment.New(segment.Config{}, nil, nil, platform.Discard).Register(mux)
	deadletter.NewHandler(nil, platform.Discard).Register(mux)
	(&auth.Handler{}).RegisterKeys(mux)
	(&auth.Handler{}).RegisterSession(mux)
	(&erase.Eraser{}).Register(mux)
	for path, ops := range doc.Paths {
		if strings.HasPrefix(path, "/v1/webhooks") || path == "/v1/push/events" {
			continue
		}
		for method := range ops {
			if method == "parameters" {
				continue
			}
			req := httptest.NewRequest(strings.ToUpper(method), wildcard.ReplaceAllString(path, "x"), nil)
			if _, pattern := mux.Handler(req); pattern == "" {
				t.Errorf("documented %s %s has no route", strings.ToUpper(method), path)
			}
		}
	}
	if !slices.Contains(serve.Routes(), "GET /v1/stream") {
		t.Error("Routes lacks the stream")
	}
}
