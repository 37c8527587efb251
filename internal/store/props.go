package store

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
)

// Property filter operators: GET /v1/events?prop.PATH=[OP:]VALUE.
const (
	PropEq     = "eq"     // prop.plan=pro: the value, compared by the property's type
	PropGt     = "gt"     // prop.amount=gt:10: a number above 10
	PropGte    = "gte"    // a number at least VALUE
	PropLt     = "lt"     // a number below VALUE
	PropLte    = "lte"    // a number at most VALUE
	PropExists = "exists" // prop.items=exists: present and not null
)

// MaxPropFilters bounds the property filters of one query.
const MaxPropFilters = 8

// PropParamPrefix starts the name of a property filter's parameter.
const PropParamPrefix = "prop."

// PropFilter selects records by one value within their properties. Its
// semantics are Match's; every backend's SQL selects the same records.
//
//   - eq: a string property equal to Value; a number property equal to
//     Value read as a number (10 matches 10.0); a boolean property when
//     Value is true or false. Null, objects and arrays never match.
//   - gt, gte, lt, lte: a number property compared with Num. A property
//     that is not a number (the string "12" included) does not match.
//   - exists: the path is there and its value is not null.
//
// A record without the path does not match any of them.
type PropFilter struct {
	Path  []string // property names from the top, e.g. [shipping days]
	Op    string
	Value string  // eq's value as given
	Num   float64 // gt..lte's number; eq's when IsNum
	IsNum bool    // Value reads as a number
}

// propName is a property name a filter can name: letters, digits and _,
// so that the path needs no quoting in any store's JSON path syntax.
var propName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,127}$`)

// ParsePropFilter parses a filter from its parameter name (prop.a.b) and
// value ([OP:]VALUE).
func ParsePropFilter(name, value string) (PropFilter, error) {
	var f PropFilter
	path, ok := strings.CutPrefix(name, PropParamPrefix)
	if !ok || path == "" {
		return f, fmt.Errorf("a property filter is prop.NAME[.NAME...]")
	}
	f.Path = strings.Split(path, ".")
	if len(f.Path) > 8 {
		return f, fmt.Errorf("a property path has at most 8 names (the depth of properties)")
	}
	for _, p := range f.Path {
		if !propName.MatchString(p) {
			return f, fmt.Errorf("property names in a filter are letters, digits and _ (not first), at most 128; got %q", p)
		}
	}
	f.Op, f.Value = PropEq, value
	if op, rest, ok := strings.Cut(value, ":"); ok {
		switch op {
		case PropGt, PropGte, PropLt, PropLte, PropExists, PropEq:
			f.Op, f.Value = op, rest
		}
	}
	n, err := strconv.ParseFloat(f.Value, 64)
	f.IsNum = err == nil && !math.IsInf(n, 0) && !math.IsNaN(n)
	if f.IsNum {
		f.Num = n
	}
	switch f.Op {
	case PropExists:
		if f.Value != "" {
			return f, fmt.Errorf("exists takes no value: prop.NAME=exists")
		}
	case PropGt, PropGte, PropLt, PropLte:
		if !f.IsNum {
			return f, fmt.Errorf("%s compares numbers: want %s:NUMBER, got %q", f.Op, f.Op, f.Value)
		}
	case PropEq:
		if f.Value == "" {
			return f, fmt.Errorf("must not be empty; use prop.NAME=exists to ask for the property")
		}
	}
	return f, nil
}

// JSONPath is the filter's path in JSONPath form ($.a.b), for SQL. Its
// names need no quoting (see propName).
func (f *PropFilter) JSONPath() string { return "$." + strings.Join(f.Path, ".") }

// Param is the filter as a query parameter (name and value), the inverse
// of ParsePropFilter.
func (f *PropFilter) Param() (string, string) {
	v := f.Value
	if f.Op != PropEq {
		v = f.Op + ":" + v
	}
	return PropParamPrefix + strings.Join(f.Path, "."), v
}

// Match reports whether properties (a JSON object, or empty) pass f.
func (f *PropFilter) Match(properties json.RawMessage) bool {
	if len(properties) == 0 {
		return false
	}
	d := json.NewDecoder(bytes.NewReader(properties))
	d.UseNumber()
	var cur any
	if d.Decode(&cur) != nil {
		return false
	}
	for _, name := range f.Path {
		m, ok := cur.(map[string]any)
		if !ok {
			return false
		}
		if cur, ok = m[name]; !ok {
			return false
		}
	}
	switch v := cur.(type) {
	case nil:
		return false
	case json.Number:
		n, err := v.Float64()
		if err != nil {
			return false
		}
		switch f.Op {
		case PropExists:
			return true
		case PropEq:
			return f.IsNum && n == f.Num
		case PropGt:
			return n > f.Num
		case PropGte:
			return n >= f.Num
		case PropLt:
			return n < f.Num
		case PropLte:
			return n <= f.Num
		}
	case string:
		return f.Op == PropExists || (f.Op == PropEq && v == f.Value)
	case bool:
		return f.Op == PropExists || (f.Op == PropEq && f.Value == strconv.FormatBool(v))
	default: // objects and arrays
		return f.Op == PropExists
	}
	return false
}
