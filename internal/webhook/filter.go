package webhook

import (
	"fmt"
	"time"

	"cel.dev/cel-go/cel"
	json "github.com/goccy/go-json"

	"github.com/skyjoin/skyjoin/internal/event"
)

// MaxFilterLength bounds a filter expression.
const MaxFilterLength = 4096

// filterCostLimit bounds the work of one evaluation (comprehensions over
// attributes are the only way to spend much).
const filterCostLimit = 100_000

// celEnv declares the enriched record's top-level fields, as in its JSON
// form, as variables. Maps are dynamic, so `weather.temperature_c > 30`
// type-checks and a misspelt top-level name does not.
var celEnv = func() *cel.Env {
	obj := cel.MapType(cel.StringType, cel.DynType)
	env, err := cel.NewEnv(
		cel.Variable("event_id", cel.StringType),
		cel.Variable("event_type", cel.StringType),
		cel.Variable("occurred_at", cel.TimestampType),
		cel.Variable("user", obj),
		cel.Variable("location", obj),
		cel.Variable("attributes", cel.MapType(cel.StringType, cel.StringType)),
		cel.Variable("weather", obj),
		cel.Variable("enrichment", obj),
		cel.Variable("ingested_at", cel.TimestampType),
		cel.Variable("processed_at", cel.TimestampType),
		cel.CrossTypeNumericComparisons(true),
	)
	if err != nil {
		panic(fmt.Sprintf("webhook: CEL environment: %v", err))
	}
	return env
}()

// filter is a compiled filter expression.
type filter struct {
	src string
	prg cel.Program
}

// compileFilter compiles src; an empty src matches every record. The error
// is CEL's own text, with line, column and a caret.
func compileFilter(src string) (*filter, error) {
	if src == "" {
		src = "true"
	}
	if len(src) > MaxFilterLength {
		return nil, fmt.Errorf("longer than %d bytes", MaxFilterLength)
	}
	ast, iss := celEnv.Compile(src)
	if iss != nil && iss.Err() != nil {
		return nil, iss.Err()
	}
	if t := ast.OutputType(); !t.IsExactType(cel.BoolType) && !t.IsExactType(cel.DynType) {
		return nil, fmt.Errorf("must evaluate to a bool, not %s", t)
	}
	prg, err := celEnv.Program(ast, cel.EvalOptions(cel.OptOptimize), cel.CostLimit(filterCostLimit))
	if err != nil {
		return nil, err
	}
	return &filter{src: src, prg: prg}, nil
}

// match evaluates the filter on a record's variables. An evaluation error
// (a missing key, such as weather.temperature_c of a record whose weather
// was unavailable, or a result that is not a bool) is returned; callers
// count it as no match.
func (f *filter) match(vars map[string]any) (bool, error) {
	out, _, err := f.prg.Eval(vars)
	if err != nil {
		return false, err
	}
	b, ok := out.Value().(bool)
	if !ok {
		return false, fmt.Errorf("filter gave %s, not a bool", out.Type())
	}
	return b, nil
}

// encoded is a record encoded once for every registration: its JSON (what
// is delivered) and its CEL variables.
type encoded struct {
	id   string
	json []byte
	vars map[string]any
	call *call // the Deliver call it settles
}

// encodeRecord turns a record into its JSON and the map of its top-level
// fields that filters see. Timestamps become CEL timestamps; a record
// without weather has an empty weather map, so `has(weather.condition)` is
// false and `weather.temperature_c` is an evaluation error (no match).
func encodeRecord(r *event.Record) (encoded, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return encoded{}, fmt.Errorf("encode record %q: %w", r.EventID, err)
	}
	vars := map[string]any{}
	if err := json.Unmarshal(b, &vars); err != nil {
		return encoded{}, fmt.Errorf("decode record %q: %w", r.EventID, err)
	}
	for k, t := range map[string]time.Time{"occurred_at": r.OccurredAt, "ingested_at": r.IngestedAt, "processed_at": r.ProcessedAt} {
		vars[k] = t
	}
	for _, k := range []string{"user", "location", "weather", "enrichment"} {
		if _, ok := vars[k].(map[string]any); !ok {
			vars[k] = map[string]any{}
		}
	}
	if _, ok := vars["attributes"].(map[string]any); !ok {
		vars["attributes"] = map[string]any{}
	}
	return encoded{id: r.EventID, json: b, vars: vars}, nil
}
