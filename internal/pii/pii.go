// Package pii is skyjoin's policy for personal data: for each field path of
// a record it says whether the value is kept, replaced by a keyed hash,
// made coarser, or dropped, before the record is stored and before any
// stream or webhook sees it (the enrich worker applies it right after the
// weather join; see docs/data.md).
//
// # Paths
//
// A path names a field of an event as its JSON does:
//
//	user.id, user.email, ... every field of event.User
//	location.latitude, location.postcode, ... every field of event.Location
//	weather.cell_latitude, weather.cell_longitude   the provider's grid cell
//	attributes.KEY      one attribute (KEY as sent, dots and all)
//	attributes.*        every attribute no attributes.KEY rule names
//
// Free-form data (attributes now, event properties later) is addressed by a
// root and the rest of the path: a rule for root.a.b applies to that key
// (for nested data, to the value at a.b), root.a.* to every key directly
// under a without a rule of its own, and root.* to every key of the root
// without one. FreeForm lists the roots; a path under another root, or a
// field the event does not have, is an error.
//
// # Actions
//
//	keep              the value as sent
//	hash              HMAC-SHA256 of the value under the policy's key, as
//	                  "h1:" and 32 hex digits (128 bits); equal values hash
//	                  equally in every field and event (e-mail addresses are
//	                  lower-cased and phone numbers reduced to digits and a
//	                  leading + first, so that spellings of one value agree)
//	coarsen[:PARAM]   latitude/longitude: rounded to a grid of PARAM degrees
//	                  (default 0.1, about 11 km); birth_date: the year;
//	                  email: the domain; postcode: the first PARAM characters
//	                  (default 3)
//	drop              removed (the empty string; the attribute deleted)
//
// Not every action fits every field: user.id is the key of reads and
// erasure (keep or hash), coordinates must stay numbers (keep or coarsen),
// and coarsen is defined only for the fields above.
//
// # Specs
//
// A spec is a list of items separated by commas or new lines, # starting a
// comment: an optional preset first (default or keep; absent means
// default), then PATH=ACTION rules that replace the preset's rule for that
// path. "@FILE" reads the spec from a file. See Default for the defaults.
package pii

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/skyjoin/skyjoin/internal/event"
)

// Action is what a rule does to a value.
type Action uint8

// Actions.
const (
	Keep Action = iota
	Hash
	Coarsen
	Drop
)

var actionNames = [...]string{Keep: "keep", Hash: "hash", Coarsen: "coarsen", Drop: "drop"}

func (a Action) String() string {
	if int(a) < len(actionNames) {
		return actionNames[a]
	}
	return "action(" + strconv.Itoa(int(a)) + ")"
}

// Rule is one path's action. Param is coarsen's parameter: the grid in
// degrees for coordinates, the characters kept for a postcode; zero means
// the default.
type Rule struct {
	Path   string
	Action Action
	Param  float64
}

func (r Rule) String() string {
	s := r.Path + "=" + r.Action.String()
	if r.Action == Coarsen && r.Param != 0 {
		s += ":" + strconv.FormatFloat(r.Param, 'f', -1, 64)
	}
	return s
}

// FreeForm are the roots of free-form data in an event.
// attributes are flat string labels; properties are typed, nested JSON
// (a rule's path reaches into them: properties.a.b).
var FreeForm = []string{"attributes", "properties"}

// DefaultPropertyGrid is coarsen's grid for a number within properties.
const DefaultPropertyGrid = 1.0

// DefaultCoordinateGrid is coarsen's grid for coordinates, in degrees.
const DefaultCoordinateGrid = 0.1

// DefaultPostcodeChars is how many characters coarsen keeps of a postcode.
const DefaultPostcodeChars = 3

// Default is the default policy (the "default" preset); every other known
// field is kept. The reasons are in docs/data.md: identifiers that link a
// record to a person are hashed (they still group and join), what only
// identifies is dropped, and what analysis needs at a coarser grain is
// coarsened; user.id, the application's own pseudonymous key of reads and
// erasure, and the place names the statistics group by are kept.
var Default = []Rule{
	{Path: "user.username", Action: Hash},
	{Path: "user.email", Action: Hash},
	{Path: "user.phone", Action: Hash},
	{Path: "user.cell", Action: Hash},
	{Path: "user.name", Action: Drop},
	{Path: "user.first_name", Action: Drop},
	{Path: "user.last_name", Action: Drop},
	{Path: "user.picture_url", Action: Drop},
	{Path: "user.birth_date", Action: Coarsen},
	{Path: "location.street", Action: Drop},
	{Path: "location.postcode", Action: Coarsen},
	{Path: "location.latitude", Action: Coarsen},
	{Path: "location.longitude", Action: Coarsen},
	{Path: "weather.cell_latitude", Action: Coarsen},
	{Path: "weather.cell_longitude", Action: Coarsen},
	// What a Segment message says of the person beside the event's own
	// fields (internal/segment keeps the message's own members under
	// properties._segment; the traits that became user fields and the
	// coordinates that became the location are not kept there, so the
	// rules above reach them): the IP address is hashed; context.traits
	// the mapping did not turn into user fields, and identify's personal
	// traits skyjoin has no field for (address, a user field's trait that
	// is not a string), which the mapping puts in _segment.traits, are
	// dropped.
	{Path: "properties._segment.context.ip", Action: Hash},
	{Path: "properties._segment.context.traits", Action: Drop},
	{Path: "properties._segment.traits", Action: Drop},
}

// Spec is a parsed policy without its key: a rule for every field it does
// not keep.
type Spec struct {
	rules map[string]Rule
}

// Rules returns the rules that do not keep, by path.
func (s Spec) Rules() []Rule {
	out := make([]Rule, 0, len(s.rules))
	for _, r := range s.rules {
		if r.Action != Keep || isFreeForm(r.Path) {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b Rule) int { return strings.Compare(a.Path, b.Path) })
	return out
}

// Hashes reports whether a rule hashes, so that the policy needs a key.
func (s Spec) Hashes() bool {
	for _, r := range s.rules {
		if r.Action == Hash {
			return true
		}
	}
	return false
}

// Rule returns the rule of a known field path (keep when none).
func (s Spec) Rule(path string) Rule {
	if r, ok := s.rules[path]; ok {
		return r
	}
	return Rule{Path: path, Action: Keep}
}

// String is the spec in its own syntax, the preset first.
func (s Spec) String() string {
	parts := []string{"keep"}
	for _, r := range s.Rules() {
		parts = append(parts, r.String())
	}
	return strings.Join(parts, ",")
}

// field is a known field of an event: how to reach it and what fits it.
type field struct {
	path    string
	kind    fieldKind
	str     func(r *event.Record) *string   // string fields
	num     func(r *event.Record) **float64 // the event's coordinates
	weather func(w *event.Weather) *float64 // the weather cell's coordinates
}

type fieldKind uint8

const (
	kindString   fieldKind = iota
	kindID                 // user.id: keep or hash
	kindCoord              // a coordinate: keep or coarsen
	kindEmail              // coarsen: the domain
	kindPhone              // hash normalises to digits
	kindBirth              // coarsen: the year
	kindPostcode           // coarsen: a prefix
)

// fields are the known fields: every field of event.User and
// event.Location (TestEveryFieldKnown holds this list to those types) and
// the weather's cell.
var fields = func() map[string]*field {
	out := map[string]*field{}
	str := func(path string, kind fieldKind, get func(r *event.Record) *string) {
		out[path] = &field{path: path, kind: kind, str: get}
	}
	str("user.id", kindID, func(r *event.Record) *string { return &r.User.ID })
	str("user.username", kindString, func(r *event.Record) *string { return &r.User.Username })
	str("user.name", kindString, func(r *event.Record) *string { return &r.User.Name })
	str("user.title", kindString, func(r *event.Record) *string { return &r.User.Title })
	str("user.first_name", kindString, func(r *event.Record) *string { return &r.User.FirstName })
	str("user.last_name", kindString, func(r *event.Record) *string { return &r.User.LastName })
	str("user.email", kindEmail, func(r *event.Record) *string { return &r.User.Email })
	str("user.phone", kindPhone, func(r *event.Record) *string { return &r.User.Phone })
	str("user.cell", kindPhone, func(r *event.Record) *string { return &r.User.Cell })
	str("user.gender", kindString, func(r *event.Record) *string { return &r.User.Gender })
	str("user.nationality", kindString, func(r *event.Record) *string { return &r.User.Nationality })
	str("user.birth_date", kindBirth, func(r *event.Record) *string { return &r.User.BirthDate })
	str("user.picture_url", kindString, func(r *event.Record) *string { return &r.User.PictureURL })
	str("location.street", kindString, func(r *event.Record) *string { return &r.Location.Street })
	str("location.city", kindString, func(r *event.Record) *string { return &r.Location.City })
	str("location.state", kindString, func(r *event.Record) *string { return &r.Location.State })
	str("location.country", kindString, func(r *event.Record) *string { return &r.Location.Country })
	str("location.postcode", kindPostcode, func(r *event.Record) *string { return &r.Location.Postcode })
	str("location.timezone", kindString, func(r *event.Record) *string { return &r.Location.Timezone })
	out["location.latitude"] = &field{path: "location.latitude", kind: kindCoord, num: func(r *event.Record) **float64 { return &r.Location.Latitude }}
	out["location.longitude"] = &field{path: "location.longitude", kind: kindCoord, num: func(r *event.Record) **float64 { return &r.Location.Longitude }}
	out["weather.cell_latitude"] = &field{path: "weather.cell_latitude", kind: kindCoord, weather: func(w *event.Weather) *float64 { return &w.CellLatitude }}
	out["weather.cell_longitude"] = &field{path: "weather.cell_longitude", kind: kindCoord, weather: func(w *event.Weather) *float64 { return &w.CellLongitude }}
	return out
}()

// Paths returns the known field paths, sorted, and the free-form roots as
// ROOT.*.
func Paths() []string {
	out := make([]string, 0, len(fields)+len(FreeForm))
	for p := range fields {
		out = append(out, p)
	}
	for _, r := range FreeForm {
		out = append(out, r+".*")
	}
	slices.Sort(out)
	return out
}

func isFreeForm(path string) bool {
	root, _, ok := strings.Cut(path, ".")
	return ok && slices.Contains(FreeForm, root)
}

// check returns what is wrong with a rule, or nil; it fills in coarsen's
// default parameter.
func check(r *Rule) error {
	if isFreeForm(r.Path) {
		_, rest, _ := strings.Cut(r.Path, ".")
		switch {
		case rest == "":
			return fmt.Errorf("%s: want ROOT.KEY, ROOT.PREFIX.* or ROOT.*", r.Path)
		case !utf8.ValidString(rest):
			return fmt.Errorf("%q: not valid UTF-8", r.Path)
		case r.Action == Coarsen && !strings.HasPrefix(r.Path, "properties."):
			return fmt.Errorf("%s: coarsen is not defined for free-form values (keep, hash or drop)", r.Path)
		case r.Action == Coarsen:
			// A number within properties is rounded to the grid; any other
			// value there is dropped (nothing coarser to keep).
			if r.Param < 0 || math.IsNaN(r.Param) || math.IsInf(r.Param, 0) {
				return fmt.Errorf("%s: coarsen's grid must be a positive number", r.Path)
			}
			if r.Param == 0 {
				r.Param = DefaultPropertyGrid
			}
		}
		return nil
	}
	f, ok := fields[r.Path]
	if !ok {
		return fmt.Errorf("unknown field %q (known: %s)", r.Path, strings.Join(Paths(), ", "))
	}
	bad := func(allowed string) error {
		return fmt.Errorf("%s: %s does not fit this field (%s)", r.Path, r.Action, allowed)
	}
	switch f.kind {
	case kindID:
		if r.Action != Keep && r.Action != Hash {
			return bad("keep or hash: it is the key of reads and erasure, and required")
		}
	case kindCoord:
		switch r.Action {
		case Keep:
		case Coarsen:
			if r.Param == 0 {
				r.Param = DefaultCoordinateGrid
			}
			if !(r.Param > 0 && r.Param <= 90) {
				return fmt.Errorf("%s: coarsen grid %g: want degrees in (0, 90], e.g. coarsen:0.1", r.Path, r.Param)
			}
		default:
			return bad("keep or coarsen[:DEGREES]: coordinates are required numbers")
		}
	case kindPostcode:
		if r.Action == Coarsen {
			if r.Param == 0 {
				r.Param = DefaultPostcodeChars
			}
			if r.Param != math.Trunc(r.Param) || r.Param < 1 || r.Param > 16 {
				return fmt.Errorf("%s: coarsen:%g: want the number of leading characters kept, 1 to 16", r.Path, r.Param)
			}
		}
	case kindEmail, kindBirth:
		if r.Action == Coarsen && r.Param != 0 {
			return fmt.Errorf("%s: coarsen takes no parameter here", r.Path)
		}
	default:
		if r.Action == Coarsen {
			return bad("keep, hash or drop; coarsen is defined for coordinates, birth_date, email and postcode")
		}
	}
	return nil
}

// ParseSpec parses a spec (see the package documentation). "" is the
// default policy. "@FILE" reads the spec from FILE. Every problem is
// reported at once.
func ParseSpec(spec string) (Spec, error) {
	src := spec
	if name, ok := strings.CutPrefix(strings.TrimSpace(spec), "@"); ok {
		b, err := os.ReadFile(name)
		if err != nil {
			return Spec{}, fmt.Errorf("pii policy: %w", err)
		}
		src = string(b)
	}
	var items []string
	for line := range strings.Lines(src) {
		line, _, _ = strings.Cut(line, "#")
		for item := range strings.SplitSeq(line, ",") {
			if item = strings.TrimSpace(item); item != "" {
				items = append(items, item)
			}
		}
	}
	s := Spec{rules: map[string]Rule{}}
	preset := "default"
	if len(items) > 0 && !strings.Contains(items[0], "=") {
		preset, items = items[0], items[1:]
	}
	switch preset {
	case "default":
		for _, r := range Default {
			if err := check(&r); err != nil {
				panic("pii: default rule " + err.Error())
			}
			s.rules[r.Path] = r
		}
	case "keep":
	default:
		return Spec{}, fmt.Errorf("pii policy: %q is not a preset (default, keep) nor PATH=ACTION", preset)
	}
	var errs []error
	seen := map[string]bool{}
	for _, item := range items {
		path, act, ok := strings.Cut(item, "=")
		path, act = strings.TrimSpace(path), strings.TrimSpace(act)
		if !ok {
			errs = append(errs, fmt.Errorf("%q: want PATH=ACTION; a preset (default, keep) may only come first", item))
			continue
		}
		r, err := parseRule(path, act)
		if err == nil {
			err = check(&r)
		}
		if err == nil && seen[path] {
			err = fmt.Errorf("%s: given twice", path)
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		seen[path] = true
		s.rules[path] = r
	}
	if err := errors.Join(errs...); err != nil {
		return Spec{}, fmt.Errorf("pii policy: %w", err)
	}
	return s, nil
}

func parseRule(path, act string) (Rule, error) {
	name, param, hasParam := strings.Cut(act, ":")
	r := Rule{Path: path}
	i := slices.Index(actionNames[:], name)
	if i < 0 {
		return r, fmt.Errorf("%s: action %q: want keep, hash, coarsen[:PARAM] or drop", path, act)
	}
	r.Action = Action(i)
	if hasParam {
		if r.Action != Coarsen {
			return r, fmt.Errorf("%s: %s takes no parameter", path, name)
		}
		v, err := strconv.ParseFloat(param, 64)
		if err != nil || v <= 0 || math.IsInf(v, 0) {
			return r, fmt.Errorf("%s: coarsen parameter %q: want a positive number", path, param)
		}
		r.Param = v
	}
	return r, nil
}

// HashPrefix starts every hashed value.
const HashPrefix = "h1:"

// Policy applies a Spec with its hash key. It is safe for concurrent use.
type Policy struct {
	wops []op // the weather cell's fields it changes
	spec Spec
	key  []byte
	pool sync.Pool             // of *hasher
	ops  []op                  // the known fields it changes
	free map[string]*freeRules // by free-form root
}

type op struct {
	f    *field
	rule Rule
}

// freeRules are the rules of one free-form root, by the rest of their path.
type freeRules struct {
	exact map[string]Rule // "a.b": the value at a.b
	wild  []wildRule      // "a.*": everything under a; longest prefix first
	keeps bool            // every rule keeps
	// tops are the quoted top-level names the rules that do not keep start
	// with (`"a"` for a.b and a.*); nil when one of them (*) reaches every
	// name. JSON data in which none of them appears, and with no escape
	// that could spell one, has nothing a rule applies to.
	tops [][]byte
	all  bool // a rule that does not keep applies to every name
}

// untouched reports whether no rule of f can apply to the JSON object raw:
// no top-level name of a rule appears in it as a quoted string, and it has
// no backslash (an escape could spell a name: "\u005fsegment").
func (f *freeRules) untouched(raw []byte) bool {
	if f.all || bytes.IndexByte(raw, '\\') >= 0 {
		return false
	}
	for _, t := range f.tops {
		if bytes.Contains(raw, t) {
			return false
		}
	}
	return true
}

type wildRule struct {
	prefix string // "a." for a.*, "" for *
	rule   Rule
}

// rule returns the rule of the value at key (a path below the root).
func (f *freeRules) rule(key string) Rule {
	if r, ok := f.exact[key]; ok {
		return r
	}
	for _, w := range f.wild {
		if strings.HasPrefix(key, w.prefix) {
			return w.rule
		}
	}
	return Rule{Action: Keep}
}

// New returns the policy of spec with key (which it copies). A spec that
// hashes needs a key.
func New(spec Spec, key []byte) (*Policy, error) {
	if spec.rules == nil {
		spec.rules = map[string]Rule{}
	}
	if spec.Hashes() && len(key) == 0 {
		return nil, errors.New("pii policy: the policy hashes, and no key was given")
	}
	p := &Policy{spec: spec, key: slices.Clone(key), free: map[string]*freeRules{}}
	p.pool.New = func() any { return &hasher{h: hmac.New(sha256.New, p.key), buf: make([]byte, 0, 64)} }
	for _, root := range FreeForm {
		p.free[root] = &freeRules{exact: map[string]Rule{}, keeps: true}
	}
	paths := make([]string, 0, len(spec.rules))
	for path := range spec.rules {
		paths = append(paths, path)
	}
	slices.Sort(paths)
	for _, path := range paths {
		r := spec.rules[path]
		if f, ok := fields[path]; ok {
			switch {
			case r.Action == Keep:
			case f.weather != nil:
				p.wops = append(p.wops, op{f: f, rule: r})
			default:
				p.ops = append(p.ops, op{f: f, rule: r})
			}
			continue
		}
		root, key, _ := strings.Cut(path, ".")
		fr := p.free[root]
		fr.keeps = fr.keeps && r.Action == Keep
		if r.Action != Keep {
			top, _, _ := strings.Cut(key, ".")
			if top == "*" {
				fr.all = true
			} else {
				fr.tops = append(fr.tops, []byte(`"`+top+`"`))
			}
		}
		if prefix, ok := strings.CutSuffix(key, "*"); ok && (prefix == "" || strings.HasSuffix(prefix, ".")) {
			fr.wild = append(fr.wild, wildRule{prefix: prefix, rule: r})
		} else {
			fr.exact[key] = r
		}
	}
	for _, fr := range p.free {
		slices.SortFunc(fr.wild, func(a, b wildRule) int { return len(b.prefix) - len(a.prefix) })
	}
	return p, nil
}

// KeepAll returns the policy that keeps everything.
func KeepAll() *Policy {
	p, _ := New(Spec{}, nil)
	return p
}

// Spec returns the policy's spec.
func (p *Policy) Spec() Spec { return p.spec }

// Apply applies the policy to a record in place, the values its
// coordinates point to included; its weather, which the weather service may
// share between records, is replaced by a changed copy.
func (p *Policy) Apply(r *event.Record) {
	for _, o := range p.ops {
		p.applyField(r, o)
	}
	if len(p.wops) > 0 && r.Weather != nil {
		w := *r.Weather
		for _, o := range p.wops {
			v := o.f.weather(&w)
			*v = grid(*v, o.rule.Param)
		}
		r.Weather = &w
	}
	if fr := p.free["attributes"]; !fr.keeps && len(r.Attributes) > 0 {
		// Attributes are flat: a key is the whole rest of the path, dots
		// and all.
		for k, v := range r.Attributes {
			switch fr.rule(k).Action {
			case Hash:
				r.Attributes[k] = p.hash(v)
			case Drop:
				delete(r.Attributes, k)
			}
		}
		if len(r.Attributes) == 0 {
			r.Attributes = nil
		}
	}
	if fr := p.free["properties"]; !fr.keeps && len(r.Properties) > 0 && !fr.untouched(r.Properties) {
		p.applyProperties(fr, r)
	}
}

// applyProperties applies the rules of properties to the record's
// properties: decoded, walked as ApplyTree does, and encoded again. Apply
// calls it only when a rule may apply (freeRules.untouched): properties no
// rule reaches are kept as sent, byte for byte. Properties that do not
// decode (Validate refuses them before a record is made) are dropped rather
// than kept unfiltered.
func (p *Policy) applyProperties(fr *freeRules, r *event.Record) {
	var m map[string]any
	d := json.NewDecoder(bytes.NewReader(r.Properties))
	d.UseNumber() // numbers no rule touches keep their text
	if err := d.Decode(&m); err != nil || m == nil {
		r.Properties = nil
		return
	}
	p.walk(fr, "", m)
	b, err := json.Marshal(m)
	if err != nil {
		r.Properties = nil
		return
	}
	r.Properties = b
}

// ApplyTree applies the rules of a free-form root to nested JSON data (as
// encoding/json decodes an object) in place: a rule for root.a.b applies to
// the value at a.b whatever it is (hash: of a string, or of the value's
// JSON), an object without a rule of its own is walked, and a leaf without
// one takes the nearest root.PREFIX.* rule.
func (p *Policy) ApplyTree(root string, m map[string]any) {
	if fr := p.free[root]; fr != nil && !fr.keeps {
		p.walk(fr, "", m)
	}
}

func (p *Policy) walk(fr *freeRules, prefix string, m map[string]any) {
	for k, v := range m {
		path := prefix + k
		rule, exact := fr.exact[path]
		if !exact {
			if sub, ok := v.(map[string]any); ok {
				p.walk(fr, path+".", sub)
				continue
			}
			rule = fr.rule(path)
		}
		switch rule.Action {
		case Drop:
			delete(m, k)
		case Coarsen:
			switch n := v.(type) {
			case float64:
				m[k] = grid(n, rule.Param)
			case json.Number:
				if f, err := n.Float64(); err == nil {
					m[k] = grid(f, rule.Param)
				} else {
					delete(m, k)
				}
			default:
				delete(m, k)
			}
		case Hash:
			s, ok := v.(string)
			if !ok {
				b, _ := json.Marshal(v)
				s = string(b)
			}
			m[k] = p.hash(s)
		}
	}
}

func (p *Policy) applyField(r *event.Record, o op) {
	f := o.f
	switch {
	case f.str != nil:
		s := f.str(r)
		if *s == "" {
			return
		}
		*s = p.value(f.kind, o.rule, *s)
	case f.num != nil:
		if v := *f.num(r); v != nil {
			*v = grid(*v, o.rule.Param) // coarsen: the only action that fits
		}
	}
}

// value applies a rule to a string value.
func (p *Policy) value(kind fieldKind, rule Rule, s string) string {
	switch rule.Action {
	case Hash:
		switch kind {
		case kindEmail:
			s = strings.ToLower(strings.TrimSpace(s))
		case kindPhone:
			s = digits(s)
		}
		return p.hash(s)
	case Drop:
		return ""
	case Coarsen:
		switch kind {
		case kindEmail:
			if i := strings.LastIndexByte(s, '@'); i >= 0 {
				return strings.ToLower(strings.TrimSpace(s[i+1:]))
			}
			return ""
		case kindBirth:
			if len(s) >= 4 && isDigits(s[:4]) && (len(s) == 4 || !isDigit(s[4])) {
				return s[:4]
			}
			return "" // not a date that starts with its year: nothing coarser to keep
		case kindPostcode:
			n := int(rule.Param)
			s = strings.TrimSpace(s)
			for i := range s { // i: the byte offset of each rune
				if n == 0 {
					return s[:i]
				}
				n--
			}
			return s
		}
	}
	return s
}

// grid rounds v to the nearest multiple of step, printed without binary
// noise (51.5, not 51.50000000000001).
func grid(v, step float64) float64 {
	c := math.Round(v/step) * step
	return math.Round(c*1e9) / 1e9
}

// digits returns the ASCII digits of a phone number, and its leading +.
func digits(s string) string {
	var buf [64]byte
	b := buf[:0]
	for i := range len(s) {
		if c := s[i]; isDigit(c) || c == '+' && i == 0 {
			b = append(b, c)
		}
	}
	if len(b) == len(s) {
		return s
	}
	return string(b)
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func isDigits(s string) bool {
	for i := range len(s) {
		if !isDigit(s[i]) {
			return false
		}
	}
	return true
}

// hasher is an HMAC under the policy's key with scratch space.
type hasher struct {
	h   hash.Hash
	buf []byte
	sum [sha256.Size]byte
}

// hash is HashPrefix and the first 128 bits of HMAC-SHA256(key, s), in hex;
// "" stays "".
func (p *Policy) hash(s string) string {
	if s == "" {
		return ""
	}
	h := p.pool.Get().(*hasher)
	h.h.Reset()
	h.buf = append(h.buf[:0], s...)
	h.h.Write(h.buf)
	sum := h.h.Sum(h.sum[:0])
	h.buf = append(h.buf[:0], HashPrefix...)
	h.buf = hex.AppendEncode(h.buf, sum[:16])
	out := string(h.buf)
	p.pool.Put(h)
	return out
}

// UserID returns a user id as the store holds it under this policy: hashed
// when the policy hashes user.id.
func (p *Policy) UserID(id string) string {
	if p.spec.Rule("user.id").Action == Hash {
		return p.hash(id)
	}
	return id
}

// UserIDs returns every form a user's id may be stored in: as given, and
// hashed under the policy's key when it has one (records stored while a
// policy hashed user.id), so that erasure finds them whatever the policy
// was when they were written.
func (p *Policy) UserIDs(id string) []string {
	out := []string{id}
	if len(p.key) > 0 {
		if h := p.hash(id); h != id {
			out = append(out, h)
		}
	}
	return out
}
