package serve

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	jsonv2 "github.com/goccy/go-json/v2"

	"github.com/skyjoin/skyjoin/internal/api"
	"github.com/skyjoin/skyjoin/internal/event"
)

// openapiSource is the OpenAPI 3.1 document of the whole HTTP API, written
// by hand, except for the schemas of components.schemas that are "x-from":
// "event.Event" (event.JSONSchema) or "x-from": "event.Record" (generated
// from the Go type): OpenAPI fills them in. docs/openapi.json is its output
// (TestOpenAPIIsCommitted keeps it in step).
//
//go:embed openapi.json
var openapiSource []byte

var (
	openapiOnce sync.Once
	openapiDoc  []byte
	openapiErr  error
)

// OpenAPI returns the OpenAPI 3.1 document served at GET /openapi.json.
func OpenAPI() ([]byte, error) {
	openapiOnce.Do(func() {
		openapiDoc, openapiErr = buildOpenAPI()
	})
	return openapiDoc, openapiErr
}

func buildOpenAPI() ([]byte, error) {
	// encoding/json keeps the last of a name given twice in an object,
	// which silently drops what the first one declared: refuse it.
	if err := jsonv2.Unmarshal(openapiSource, new(any)); err != nil {
		return nil, fmt.Errorf("openapi: openapi.json: %w", err)
	}
	var doc map[string]any
	if err := json.Unmarshal(openapiSource, &doc); err != nil {
		return nil, fmt.Errorf("openapi: parse openapi.json: %w", err)
	}
	if err := checkPaths(doc); err != nil {
		return nil, err
	}
	comps, _ := doc["components"].(map[string]any)
	schemas, _ := comps["schemas"].(map[string]any)
	for name, s := range schemas {
		m, _ := s.(map[string]any)
		switch m["x-from"] {
		case nil:
		case "event.Event":
			var ev map[string]any
			if err := json.Unmarshal(event.JSONSchema(), &ev); err != nil {
				return nil, fmt.Errorf("openapi: event schema: %w", err)
			}
			delete(ev, "$schema") // the document's dialect applies
			schemas[name] = ev
		case "event.Record":
			rec := structSchema(reflect.TypeFor[event.Record](), true)
			rec["title"] = "skyjoin enriched record"
			schemas[name] = map[string]any{
				"description": "An enriched event: the event as ingested plus the weather joined to it.",
				"allOf":       []any{map[string]any{"$ref": "#/components/schemas/Event"}, rec},
			}
		default:
			return nil, fmt.Errorf("openapi: schema %s: unknown x-from %v", name, m["x-from"])
		}
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("openapi: encode: %w", err)
	}
	return append(b, '\n'), nil
}

// structSchema describes the fields of a Record beyond its Event (skipEmbedded)
// or of a nested struct, from their json and desc tags.
func structSchema(t reflect.Type, skipEmbedded bool) map[string]any {
	props := map[string]any{}
	var required []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if f.Anonymous && skipEmbedded {
			continue
		}
		name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" || name == "" {
			continue
		}
		ft := f.Type
		nullable := ft.Kind() == reflect.Pointer
		if nullable {
			ft = ft.Elem()
		}
		var s map[string]any
		switch {
		case ft == reflect.TypeFor[time.Time]():
			s = map[string]any{"type": "string", "format": "date-time"}
		case ft.Kind() == reflect.Struct:
			s = structSchema(ft, false)
		case ft.Kind() == reflect.String:
			s = map[string]any{"type": "string"}
		case ft.Kind() == reflect.Float64:
			s = map[string]any{"type": "number"}
		case ft.Kind() == reflect.Int, ft.Kind() == reflect.Int64:
			s = map[string]any{"type": "integer"}
		default:
			panic(fmt.Sprintf("openapi: no schema for %s", ft))
		}
		if d := f.Tag.Get("desc"); d != "" {
			s["description"] = d
		}
		props[name] = s
		if !nullable && !strings.Contains(opts, "omitempty") {
			required = append(required, name)
		}
	}
	s := map[string]any{"type": "object", "properties": props}
	if len(required) > 0 {
		s["required"] = required
	}
	return s
}

// serveOpenAPI answers GET /openapi.json.
func serveOpenAPI(w http.ResponseWriter, r *http.Request) {
	doc, err := OpenAPI()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "public, max-age=300")
	w.Write(doc)
}

// describeScope writes the route table's authorization policy into an
// operation: the scope it needs (x-scope), the credentials it takes
// (security) and its 401 and 403 answers.
func describeScope(op map[string]any, r api.Route) {
	op["x-scope"] = r.Scope
	if r.Scope == api.ScopePublic {
		op["security"] = []any{}
		return
	}
	sec := []any{map[string]any{"bearer": []any{}}}
	if api.WriteKeyRoutes[r.Pattern] {
		sec = append(sec, map[string]any{"writeKey": []any{}})
	}
	if r.Method() == http.MethodGet && (r.Scope == api.ScopeRead || r.Scope == api.ScopeStream) {
		sec = append(sec, map[string]any{"session": []any{}})
	}
	op["security"] = sec
	resps, _ := op["responses"].(map[string]any)
	if resps != nil {
		resps["401"] = map[string]any{"$ref": "#/components/responses/Unauthorized"}
		resps["403"] = map[string]any{"$ref": "#/components/responses/Forbidden"}
	}
}

// checkPaths holds the document's operations to the route table: every
// route of the public API (api.Route.Doc) is described, nothing else is,
// and an operation without a summary takes the table's; the scope of each
// comes from the table (describeScope).
func checkPaths(doc map[string]any) error {
	paths, _ := doc["paths"].(map[string]any)
	want := map[string]api.Route{}
	for _, r := range api.Routes {
		if r.Doc {
			want[strings.ToLower(r.Method())+" "+r.Path()] = r
		}
	}
	var problems []string
	for path, v := range paths {
		ops, _ := v.(map[string]any)
		for method, op := range ops {
			if method == "parameters" {
				continue
			}
			key := method + " " + path
			r, ok := want[key]
			if !ok {
				problems = append(problems, "documents "+strings.ToUpper(method)+" "+path+", which is not in the route table (internal/api)")
				continue
			}
			delete(want, key)
			if m, ok := op.(map[string]any); ok {
				if m["summary"] == nil {
					m["summary"] = r.Summary
				}
				describeScope(m, r)
			}
		}
	}
	for _, r := range want {
		problems = append(problems, "does not describe "+r.Pattern+" of the route table")
	}
	if len(problems) > 0 {
		slices.Sort(problems)
		return fmt.Errorf("openapi: internal/serve/openapi.json %s", strings.Join(problems, "; "))
	}
	return nil
}
