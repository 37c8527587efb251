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
	var err error
	if f.Path, err = ParsePropPath(path); err != nil {
		return f, err
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

// ParsePropPath splits a property path (a.b) into its names, checking
// each: letters, digits and _ (not first), at most 128, at most 8 names.
func ParsePropPath(path string) ([]string, error) {
	names := strings.Split(path, ".")
	if len(names) > 8 {
		return nil, fmt.Errorf("a property path has at most 8 names (the depth of properties)")
	}
	for _, p := range names {
		if !propName.MatchString(p) {
			return nil, fmt.Errorf("property names are letters, digits and _ (not first), at most 128; got %q", p)
		}
	}
	return names, nil
}

// PropJSONPath is a property path in JSONPath form ($.a.b), for SQL. Its
// names need no quoting (see ParsePropPath).
func PropJSONPath(path []string) string { return "$." + strings.Join(path, ".") }

// PropText is the value at path within properties as the text a stats
// group is keyed by (store.GroupByProp): a string as it is, a boolean as
// true or false, a number as its JSON text (an integer as 12, a fraction
// in its shortest form, 12.5). A number is keyed by its value, as the eq
// filter compares it: a whole number below 10^15 in magnitude as an integer
// (100 and 100.0 are both 100), any other in Go's shortest form (12.5,
// 1e+21). ok is false when the path is missing or its
// value is null, an object or an array: those records form the group
// without a value.
func PropText(properties json.RawMessage, path []string) (text string, ok bool) {
	if len(properties) == 0 {
		return "", false
	}
	d := json.NewDecoder(bytes.NewReader(properties))
	d.UseNumber()
	var cur any
	if d.Decode(&cur) != nil {
		return "", false
	}
	for _, name := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return "", false
		}
		if cur, ok = m[name]; !ok {
			return "", false
		}
	}
	switch v := cur.(type) {
	case string:
		return v, true
	case bool:
		return strconv.FormatBool(v), true
	case json.Number:
		n, err := v.Float64()
		if err != nil {
			return v.String(), true
		}
		return NumberText(n), true
	}
	return "", false
}

// JSONPath is the filter's path in JSONPath form ($.a.b), for SQL. Its
// names need no quoting (see propName).
func (f *PropFilter) JSONPath() string { return PropJSONPath(f.Path) }

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

// NumberText is a property number as a stats group's key (PropText): a
// whole number below 10^15 in magnitude as an integer, any other in the
// shortest form that reads back as the same float64. Stores agree with it
// on whole numbers below 10^15 and on fractions; on whole numbers of 10^15
// and more, each writes its own float form (DuckDB 1000000000000000.0 for
// 1e+15): group such identifiers as strings.
func NumberText(n float64) string {
	if n == math.Trunc(n) && math.Abs(n) < 1e15 {
		return strconv.FormatInt(int64(n), 10)
	}
	return strconv.FormatFloat(n, 'g', -1, 64)
}
