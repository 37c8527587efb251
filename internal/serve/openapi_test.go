package serve_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"net/http"
	"net/http/httptest"
	"net/url"
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

// TestOpenAPIParameters: the query parameters the document declares are
// those the handlers take. GET /v1/events and GET /v1/stream: every name
// the handler lists as known (its 400 for an unknown one) is declared, and
// nothing else but prop, which stands for the property filters prop.PATH:
// its name pattern accepts what the handler accepts. POST /v1/events
// declares unknown_fields, which the handler takes. And a parameter that
// a description refers to ("the parameter X") is declared.
func TestOpenAPIParameters(t *testing.T) {
	b, err := serve.OpenAPI()
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Paths      map[string]map[string]json.RawMessage `json:"paths"`
		Components struct {
			Parameters map[string]param `json:"parameters"`
		} `json:"components"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	declared := func(path, method string) (map[string]param, string) {
		t.Helper()
		var op struct {
			Description string  `json:"description"`
			Parameters  []param `json:"parameters"`
		}
		if err := json.Unmarshal(doc.Paths[path][method], &op); err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		out := map[string]param{}
		for _, p := range op.Parameters {
			if name, ok := strings.CutPrefix(p.Ref, "#/components/parameters/"); ok {
				p, ok = doc.Components.Parameters[name]
				if !ok {
					t.Errorf("%s %s: %s is not in components.parameters", method, path, name)
				}
			}
			if p.In == "query" {
				out[p.Name] = p
			}
		}
		return out, op.Description
	}

	mux := http.NewServeMux()
	serve.New(failingReader{errors.New("the store is not read here")}, serve.Options{Logger: platform.Discard}).Register(mux)
	ingest.New(ingest.Config{}, nil, platform.Discard).Register(mux)
	get := func(u string) (int, string) {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, u, nil))
		return rec.Code, rec.Body.String()
	}
	known := regexp.MustCompile(`unknown parameter; known: ([a-z_, ]+)`)
	for _, path := range []string{"/v1/events", "/v1/stream"} {
		params, desc := declared(path, "get")
		code, body := get(path + "?not_a_parameter=1")
		m := known.FindStringSubmatch(body)
		if code != http.StatusBadRequest || m == nil {
			t.Fatalf("GET %s?not_a_parameter=1: %d %s", path, code, body)
		}
		for _, name := range strings.Split(m[1], ", ") {
			if _, ok := params[name]; !ok {
				t.Errorf("GET %s takes %s, which the document does not declare", path, name)
			}
			delete(params, name)
		}
		prop, ok := params["prop"]
		delete(params, "prop")
		for name := range params {
			t.Errorf("GET %s declares %s, which the handler does not take", path, name)
		}
		if !ok || prop.Style != "form" || !prop.Explode || prop.Schema.Type != "object" || prop.Schema.PropertyNames.Pattern == "" ||
			!strings.Contains(desc, "prop.PATH") {
			t.Errorf("GET %s: the property filters are not declared: %+v; %s", path, prop, desc)
			continue
		}
		pattern := docPattern(t, prop.Schema.PropertyNames.Pattern)
		for _, name := range []string{"prop.plan", "prop.shipping.days", "prop._x1", "prop." + strings.Repeat("n", 128),
			"prop." + strings.Repeat("a.", 7) + "a", "prop." + strings.Repeat("a.", 8) + "a",
			"prop.", "prop", "prop.a-b", "prop.1a", "prop.a..b", "prop." + strings.Repeat("n", 129), "props.a"} {
			code, body := get(path + "?" + url.QueryEscape(name) + "=1")
			// The handler reads the store (which fails) for what it takes:
			// not a 400.
			if took := code != http.StatusBadRequest; took != pattern.MatchString(name) {
				t.Errorf("GET %s?%s=1: %d %s; the declared pattern matches: %v", path, name, code, body, pattern.MatchString(name))
			}
		}
	}
	if params, _ := declared("/v1/stats", "get"); params["prop"].Name != "prop" {
		t.Errorf("GET /v1/stats does not declare the property filters")
	}

	// POST /v1/events takes unknown_fields.
	params, _ := declared("/v1/events", "post")
	if p, ok := params[ingest.UnknownFieldsParam]; !ok || len(p.Schema.Enum) != 2 {
		t.Errorf("POST /v1/events does not declare %s: %+v", ingest.UnknownFieldsParam, params)
	}
	for _, c := range []struct {
		param string
		want  int
	}{{"unknown_fields=maybe", http.StatusBadRequest}, {"not_a_parameter=1", http.StatusBadRequest}} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, "/v1/events?"+c.param, strings.NewReader(`{}`))
		req.Header.Set("Content-Type", "application/json")
		mux.ServeHTTP(rec, req)
		name, _, _ := strings.Cut(c.param, "=")
		if rec.Code != c.want || !strings.Contains(rec.Body.String(), name) {
			t.Errorf("POST /v1/events?%s: %d %s", c.param, rec.Code, rec.Body)
		}
	}

	// "the parameter X" in a description names a declared parameter.
	refers := regexp.MustCompile(`the parameters? ([a-z_]+)`)
	for path, ops := range doc.Paths {
		for method := range ops {
			if method == "parameters" {
				continue
			}
			params, desc := declared(path, method)
			for _, m := range refers.FindAllStringSubmatch(desc, -1) {
				if _, ok := params[m[1]]; !ok {
					t.Errorf("%s %s refers to the parameter %s, which it does not declare", strings.ToUpper(method), path, m[1])
				}
			}
		}
	}
}

// param is an OpenAPI parameter, or a reference to one.
type param struct {
	Ref     string `json:"$ref"`
	Name    string `json:"name"`
	In      string `json:"in"`
	Style   string `json:"style"`
	Explode bool   `json:"explode"`
	Schema  struct {
		Type          string `json:"type"`
		Enum          []any  `json:"enum"`
		PropertyNames struct {
			Pattern string `json:"pattern"`
		} `json:"propertyNames"`
	} `json:"schema"`
}

// docPattern compiles a pattern of the document (ECMA-262, as JSON Schema
// reads it) with Go's regexp, which refuses a repetition of a repetition
// over 1000 in all: the one group repeated {1,8} is written out as a
// group and 7 optional copies, which matches the same.
func docPattern(t *testing.T, p string) *regexp.Regexp {
	t.Helper()
	if i := strings.Index(p, "){1,8}"); i > 0 {
		open := strings.LastIndex(p[:i], "(")
		group := p[open : i+1]
		p = p[:open] + group + strings.Repeat("(?:"+group+")?", 7) + p[i+len("){1,8}"):]
	}
	re, err := regexp.Compile(p)
	if err != nil {
		t.Fatalf("pattern %s: %v", p, err)
	}
	return re
}
