package event

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"golang.org/x/text/message"
)

// boundsVocab is the vocabulary of the schema's x- keywords for properties,
// which JSON Schema has no keyword for: x-maxDepth (levels of nesting, the
// object itself level 1), x-maxKeys (member names and array elements at
// every level, in all) and x-maxBytes (of the compact JSON). A member
// declared under "properties" with x-maxKeys or x-maxBytes of its own
// (_segment) is bounded by them, and neither its name nor its value counts
// against its object's (Validate's rule; docs/segment.md). With it, the
// tests check that the schema and Validate agree on these bounds too.
func boundsVocab() *jsonschema.Vocabulary {
	const url = "https://skyjoin.dev/schemas/vocab/bounds"
	meta, err := jsonschema.UnmarshalJSON(strings.NewReader(`{"properties": {
		"x-maxDepth": {"type": "integer", "minimum": 1},
		"x-maxKeys": {"type": "integer", "minimum": 0},
		"x-maxBytes": {"type": "integer", "minimum": 0}}}`))
	if err != nil {
		panic(err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource(url, meta); err != nil {
		panic(err)
	}
	sch, err := c.Compile(url)
	if err != nil {
		panic(err)
	}
	return &jsonschema.Vocabulary{URL: url, Schema: sch, Compile: compileBounds}
}

type bounds struct {
	maxDepth, maxKeys, maxBytes int      // 0: no bound
	own                         []string // members bounded on their own
}

func intOf(v any) int {
	switch n := v.(type) {
	case json.Number:
		i, _ := n.Int64()
		return int(i)
	case float64:
		return int(n)
	case int:
		return n
	}
	return 0
}

func compileBounds(_ *jsonschema.CompilerContext, obj map[string]any) (jsonschema.SchemaExt, error) {
	b := &bounds{maxDepth: intOf(obj["x-maxDepth"]), maxKeys: intOf(obj["x-maxKeys"]), maxBytes: intOf(obj["x-maxBytes"])}
	if b.maxDepth == 0 && b.maxKeys == 0 && b.maxBytes == 0 {
		return nil, nil
	}
	if props, ok := obj["properties"].(map[string]any); ok {
		for name, s := range props {
			if m, ok := s.(map[string]any); ok && (m["x-maxKeys"] != nil || m["x-maxBytes"] != nil) {
				b.own = append(b.own, name)
			}
		}
	}
	return b, nil
}

func (b *bounds) Validate(ctx *jsonschema.ValidatorContext, v any) {
	rest := v
	if m, ok := v.(map[string]any); ok && len(b.own) > 0 {
		r := map[string]any{}
		for k, x := range m {
			r[k] = x
		}
		for _, k := range b.own {
			delete(r, k)
		}
		rest = r
	}
	if b.maxDepth > 0 {
		if d := depthOf(v); d > b.maxDepth {
			ctx.AddError(&boundError{"x-maxDepth", d, b.maxDepth})
		}
	}
	if b.maxKeys > 0 {
		if n := entriesOf(rest); n > b.maxKeys {
			ctx.AddError(&boundError{"x-maxKeys", n, b.maxKeys})
		}
	}
	if b.maxBytes > 0 {
		raw, _ := json.Marshal(rest)
		n := len(raw)
		if m, ok := v.(map[string]any); ok {
			// An own member's name, its colon and its comma count, as in
			// Validate: only its value is bounded on its own.
			for _, k := range b.own {
				if _, ok := m[k]; ok {
					name, _ := json.Marshal(k)
					n += len(name) + 1
					if len(m) > 1 {
						n++
					}
				}
			}
		}
		if n > b.maxBytes {
			ctx.AddError(&boundError{"x-maxBytes", n, b.maxBytes})
		}
	}
}

func depthOf(v any) int {
	d := 0
	switch x := v.(type) {
	case map[string]any:
		for _, e := range x {
			d = max(d, depthOf(e))
		}
		return d + 1
	case []any:
		for _, e := range x {
			d = max(d, depthOf(e))
		}
		return d + 1
	}
	return 0
}

func entriesOf(v any) int {
	n := 0
	switch x := v.(type) {
	case map[string]any:
		for _, e := range x {
			n += 1 + entriesOf(e)
		}
	case []any:
		for _, e := range x {
			n += 1 + entriesOf(e)
		}
	}
	return n
}

type boundError struct {
	keyword   string
	got, want int
}

func (e *boundError) KeywordPath() []string { return []string{e.keyword} }

func (e *boundError) LocalizedString(p *message.Printer) string {
	return fmt.Sprintf("%s: got %d, want at most %d", e.keyword, e.got, e.want)
}
