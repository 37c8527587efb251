package webhook

import (
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"time"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/cost"
	json "github.com/goccy/go-json"

	"github.com/skyjoin/skyjoin/internal/event"
)

// MaxFilterLength bounds a filter expression.
const MaxFilterLength = 4096

// MaxFilterCost bounds a filter's cost, in CEL's cost units (about one per
// operation, one per few bytes a string function reads): a filter whose
// estimated worst case, for the largest record the event schema admits
// (filterSizes), is over it is refused at registration, and an evaluation
// that spends more is stopped (no match). A filter runs on every record
// for every webhook, so one slow filter slows every delivery: without the
// bound, a nested comprehension over the attributes was accepted and made
// every other webhook twenty times slower.
const MaxFilterCost = 10_000

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
		// Typed properties: JSON numbers are doubles, then strings,
		// booleans, null, lists and maps, as in the JSON.
		cel.Variable("properties", obj),
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
	src  string
	prg  cel.Program
	cost cost.CostEstimate // its estimated cost, from filterSizes
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
	est, err := celEnv.EstimateCost(ast, filterSizes{})
	if err != nil {
		return nil, fmt.Errorf("estimate its cost: %w", err)
	}
	prg, err := celEnv.Program(ast, cel.EvalOptions(cel.OptOptimize), cel.CostLimit(MaxFilterCost))
	if err != nil {
		return nil, err
	}
	return &filter{src: src, prg: prg, cost: est}, nil
}

// checkCost refuses a filter whose estimated worst-case cost is over
// MaxFilterCost. It applies at registration; a filter registered before
// the bound still runs, under the runtime limit.
func (f *filter) checkCost() error {
	if f.cost.Max > MaxFilterCost {
		return fmt.Errorf("too costly: its worst case, on a record of the largest sizes the event schema allows (64 attributes of 1024 characters, ...), "+
			"is estimated at %s cost units, over the bound of %d; a filter runs on every record for every webhook: avoid nested comprehensions "+
			"(all, exists, map, filter within one another) and functions over whole maps", costText(f.cost.Max), MaxFilterCost)
	}
	return nil
}

func costText(c uint64) string {
	if c == math.MaxUint64 {
		return "an unbounded number of"
	}
	return strconv.FormatUint(c, 10)
}

// filterSizes gives CEL's cost estimator the largest size of each variable
// of a record, from the event schema's limits (internal/event: string
// lengths, 64 attributes) and, for the fields skyjoin fills in (weather,
// enrichment), from what it writes. A size it does not know is
// unbounded, and the filter is then refused.
type filterSizes struct{}

var _ cost.Estimator = filterSizes{}

// Sizes by path: the variable, then a field name, "@keys" or "@values".
var filterSizeOf = func() map[string]uint64 {
	m := map[string]uint64{
		"event_id": 128, "event_type": 64,
		"user": 13, "user.@keys": 16, "user.@values": 1024,
		"location": 8, "location.@keys": 16, "location.@values": 256,
		"attributes": 64, "attributes.@keys": 64, "attributes.@values": 1024,
		"weather": 12, "weather.@keys": 32, "weather.@values": 64,
		"enrichment": 2, "enrichment.@keys": 16, "enrichment.@values": 1024,
		// properties: at most PropertiesMaxKeys entries in all (so in any
		// map or list within them), names of at most 128 characters. A
		// value within them is sized as a container of that bound: a string
		// value may be longer (up to the 16 KiB of the whole), which the
		// runtime cost limit bounds instead; so ordinary comprehensions over
		// properties (properties.items.exists(i, i.qty > 2)) stay allowed.
		// The top level may hold one member more: _segment, whose value
		// is bounded on its own (PropertiesReservedMaxKeys entries).
		"properties": uint64(event.PropertiesMaxKeys + 1), "properties.@keys": 128,
		"properties.@values": uint64(max(event.PropertiesMaxKeys, event.PropertiesReservedMaxKeys)),
	}
	// The fields of user and location, each its schema's maxLength; a
	// number is of size 1.
	for _, obj := range []struct {
		name string
		t    reflect.Type
	}{{"user", reflect.TypeFor[event.User]()}, {"location", reflect.TypeFor[event.Location]()}} {
		for i := range obj.t.NumField() {
			f := obj.t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			m[obj.name+"."+name] = 1
			for part := range strings.SplitSeq(f.Tag.Get("schema"), ",") {
				if v, ok := strings.CutPrefix(part, "maxLength="); ok {
					n, _ := strconv.ParseUint(v, 10, 64)
					m[obj.name+"."+name] = n
				}
			}
		}
	}
	for _, name := range []string{"condition", "provider"} {
		m["weather."+name] = 64
	}
	m["enrichment.status"] = 16
	m["enrichment.error"] = 1024
	return m
}()

// EstimateSize implements cost.Estimator.
func (filterSizes) EstimateSize(n cost.AstNode) *cost.SizeEstimate {
	path := n.Path()
	if len(path) == 0 {
		return nil
	}
	key := path[0]
	if len(path) > 1 {
		key += "." + path[1]
	}
	if len(path) > 2 {
		// Deeper than a record has (the values are strings or numbers).
		key = path[0] + ".@values"
	}
	if sz, ok := filterSizeOf[key]; ok {
		e := cost.RangedSizeEstimate(0, sz)
		return &e
	}
	if len(path) == 2 {
		// A field the record's object does not have: as large as its largest.
		if sz, ok := filterSizeOf[path[0]+".@values"]; ok {
			e := cost.RangedSizeEstimate(0, sz)
			return &e
		}
	}
	return nil
}

// EstimateCallCost implements cost.Estimator: CEL's own estimates.
func (filterSizes) EstimateCallCost(function, overloadID string, target *cost.AstNode, args []cost.AstNode) *cost.CallEstimate {
	return nil
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
	if _, ok := vars["properties"].(map[string]any); !ok {
		vars["properties"] = map[string]any{}
	}
	return encoded{id: r.EventID, json: b, vars: vars}, nil
}
