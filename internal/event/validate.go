package event

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"regexp/syntax"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/goccy/go-json/jsontext"
)

// FieldError names one invalid field of an event.
type FieldError struct {
	// Index is the event's position within a batch request (0 for a single
	// event); -1 when the error is about the request as a whole.
	Index   int    `json:"index"`
	Field   string `json:"field"` // JSON path, e.g. location.latitude
	Message string `json:"message"`
}

func (e FieldError) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("event %d: %s", e.Index, e.Message)
	}
	return fmt.Sprintf("event %d: %s: %s", e.Index, e.Field, e.Message)
}

// DefaultMaxClockSkew is how far in the future occurred_at may be.
const DefaultMaxClockSkew = 5 * time.Minute

var (
	eventIDPattern   = regexp.MustCompile(patternOf("EventID"))
	eventTypePattern = regexp.MustCompile(patternOf("EventType"))
	// The patterns' matchers: a table lookup a byte, for patterns of the
	// form ^[first][rest]*$ (see classMatcher); regexp otherwise.
	eventIDMatch, _ = classMatcher(eventIDPattern)
	eventTypeMatch  = matchEventType
)

// matchEventType is eventTypePattern's matcher: no control character (nor
// DEL), no space at either end; a test holds it to the pattern.
func matchEventType(s string) bool {
	if s == "" || s[0] <= ' ' || s[len(s)-1] <= ' ' || s[0] == 0x7f || s[len(s)-1] == 0x7f {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' || c == 0x7f {
			return false
		}
	}
	return true
}

// classMatcher returns a matcher of re equivalent to re.MatchString and
// faster, and true, when re is ^[A][B]*$ with A and B classes of ASCII
// characters, as the schema's patterns are; else re.MatchString and false.
// A test holds the two to the same answers.
func classMatcher(re *regexp.Regexp) (func(string) bool, bool) {
	prog, err := syntax.Parse(re.String(), syntax.Perl)
	if err != nil {
		return re.MatchString, false
	}
	prog = prog.Simplify()
	sub := prog.Sub
	if prog.Op != syntax.OpConcat || len(sub) != 4 || sub[0].Op != syntax.OpBeginText || sub[3].Op != syntax.OpEndText ||
		sub[1].Op != syntax.OpCharClass || sub[2].Op != syntax.OpStar || sub[2].Sub[0].Op != syntax.OpCharClass {
		return re.MatchString, false
	}
	table := func(ranges []rune) (*[256]bool, bool) {
		var t [256]bool
		for i := 0; i+1 < len(ranges); i += 2 {
			if ranges[i+1] >= utf8.RuneSelf {
				return nil, false
			}
			for r := ranges[i]; r <= ranges[i+1]; r++ {
				t[r] = true
			}
		}
		return &t, true
	}
	first, ok1 := table(sub[1].Rune)
	rest, ok2 := table(sub[2].Sub[0].Rune)
	if !ok1 || !ok2 {
		return re.MatchString, false
	}
	return func(s string) bool {
		if len(s) == 0 || !first[s[0]] {
			return false
		}
		for i := 1; i < len(s); i++ {
			if !rest[s[i]] {
				return false
			}
		}
		return true
	}, true
}

func patternOf(field string) string {
	f, _ := typeOfEvent.FieldByName(field)
	return parseSchemaTag(f.Tag.Get("schema")).pattern
}

// Limits from the schema tags, read once so that Validate and the JSON Schema
// cannot disagree.
var (
	limits = func() map[string]schemaTag {
		m := map[string]schemaTag{}
		for _, t := range []any{Event{}, User{}, Location{}} {
			rt := typeOf(t)
			for i := 0; i < rt.NumField(); i++ {
				f := rt.Field(i)
				m[rt.Name()+"."+f.Name] = parseSchemaTag(f.Tag.Get("schema"))
			}
		}
		return m
	}()
	// Each field's, looked up once rather than on every event.
	lim = struct {
		eventID, eventType                                                     *schemaTag
		userID, userUsername, userName, userTitle, userFirstName, userLastName *schemaTag
		userEmail, userPhone, userCell, userGender, userNationality            *schemaTag
		userBirthDate, userPictureURL                                          *schemaTag
		locationStreet, locationCity, locationState, locationCountry           *schemaTag
		locationPostcode, locationTimezone, latitude, longitude, attributes    *schemaTag
		properties                                                             *schemaTag
	}{
		eventID:          limitOf("Event.EventID"),
		eventType:        limitOf("Event.EventType"),
		userID:           limitOf("User.ID"),
		userUsername:     limitOf("User.Username"),
		userName:         limitOf("User.Name"),
		userTitle:        limitOf("User.Title"),
		userFirstName:    limitOf("User.FirstName"),
		userLastName:     limitOf("User.LastName"),
		userEmail:        limitOf("User.Email"),
		userPhone:        limitOf("User.Phone"),
		userCell:         limitOf("User.Cell"),
		userGender:       limitOf("User.Gender"),
		userNationality:  limitOf("User.Nationality"),
		userBirthDate:    limitOf("User.BirthDate"),
		userPictureURL:   limitOf("User.PictureURL"),
		locationStreet:   limitOf("Location.Street"),
		locationCity:     limitOf("Location.City"),
		locationState:    limitOf("Location.State"),
		locationCountry:  limitOf("Location.Country"),
		locationPostcode: limitOf("Location.Postcode"),
		locationTimezone: limitOf("Location.Timezone"),
		latitude:         limitOf("Location.Latitude"),
		longitude:        limitOf("Location.Longitude"),
		attributes:       limitOf("Event.Attributes"),
		properties:       limitOf("Event.Properties"),
	}
)

func limitOf(key string) *schemaTag {
	t, ok := limits[key]
	if !ok {
		panic("event: no field " + key)
	}
	return &t
}

// Validate checks an event against the schema and returns every problem, in
// a stable order; index is copied into each FieldError. now and maxSkew bound
// occurred_at: an event from the future beyond maxSkew is invalid.
func (e *Event) Validate(index int, now time.Time, maxSkew time.Duration) []FieldError {
	var errs []FieldError
	add := func(field, format string, args ...any) {
		errs = append(errs, FieldError{Index: index, Field: field, Message: fmt.Sprintf(format, args...)})
	}
	str := func(field string, t *schemaTag, v string) {
		n := utf8.RuneCountInString(v)
		switch {
		case t.required && v == "":
			add(field, "is required")
		case n < t.minLength:
			add(field, "must be at least %d characters", t.minLength)
		case t.hasLengthLimit && n > t.maxLength:
			add(field, "must be at most %d characters, got %d", t.maxLength, n)
		}
	}
	str("event_id", lim.eventID, e.EventID)
	if e.EventID != "" && !eventIDMatch(e.EventID) {
		add("event_id", "must match %s", eventIDPattern)
	}
	str("event_type", lim.eventType, e.EventType)
	if e.EventType != "" && !eventTypeMatch(e.EventType) {
		add("event_type", "must match %s", eventTypePattern)
	}
	switch {
	case e.OccurredAt.IsZero():
		add("occurred_at", "is required (RFC 3339 timestamp)")
	case e.OccurredAt.Before(MinOccurredAt):
		add("occurred_at", "must be on or after %s, got %s", MinOccurredAt.Format(time.RFC3339), e.OccurredAt.Format(time.RFC3339Nano))
	case !now.IsZero() && e.OccurredAt.After(now.Add(maxSkew)):
		// Not as a duration: year 9999 is further away than a Duration holds.
		add("occurred_at", "is in the future: got %s, the latest accepted is %s (the receiver's clock plus %s of clock skew)",
			e.OccurredAt.Format(time.RFC3339Nano), now.Add(maxSkew).UTC().Format(time.RFC3339), maxSkew)
	}

	u := &e.User
	str("user.id", lim.userID, u.ID)
	str("user.username", lim.userUsername, u.Username)
	str("user.name", lim.userName, u.Name)
	str("user.title", lim.userTitle, u.Title)
	str("user.first_name", lim.userFirstName, u.FirstName)
	str("user.last_name", lim.userLastName, u.LastName)
	str("user.email", lim.userEmail, u.Email)
	str("user.phone", lim.userPhone, u.Phone)
	str("user.cell", lim.userCell, u.Cell)
	str("user.gender", lim.userGender, u.Gender)
	str("user.nationality", lim.userNationality, u.Nationality)
	str("user.birth_date", lim.userBirthDate, u.BirthDate)
	str("user.picture_url", lim.userPictureURL, u.PictureURL)

	l := &e.Location
	coord := func(field string, t *schemaTag, v *float64) {
		switch {
		case v == nil:
			add(field, "is required")
		case math.IsNaN(*v) || math.IsInf(*v, 0):
			add(field, "must be a finite number")
		case *v < *t.minimum || *v > *t.maximum:
			add(field, "must be between %g and %g, got %g", *t.minimum, *t.maximum, *v)
		}
	}
	switch {
	case l.Latitude == nil && l.Longitude == nil:
		// No coordinates: stored with status no_location, unless the
		// receiver requires a location (ValidateLocation).
	case l.Latitude == nil:
		add("location.latitude", "is required with location.longitude: give both coordinates or neither")
	case l.Longitude == nil:
		add("location.longitude", "is required with location.latitude: give both coordinates or neither")
	default:
		coord("location.latitude", lim.latitude, l.Latitude)
		coord("location.longitude", lim.longitude, l.Longitude)
	}
	str("location.street", lim.locationStreet, l.Street)
	str("location.city", lim.locationCity, l.City)
	str("location.state", lim.locationState, l.State)
	str("location.country", lim.locationCountry, l.Country)
	str("location.postcode", lim.locationPostcode, l.Postcode)
	str("location.timezone", lim.locationTimezone, l.Timezone)

	if len(e.Attributes) > 0 {
		t := lim.attributes
		if len(e.Attributes) > t.maxProperties {
			add("attributes", "must have at most %d entries, got %d", t.maxProperties, len(e.Attributes))
		}
		keys := make([]string, 0, len(e.Attributes))
		for k := range e.Attributes {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			field := "attributes." + k
			if n := utf8.RuneCountInString(k); n == 0 || n > t.keyMaxLength {
				add(field, "attribute names must be 1 to %d characters", t.keyMaxLength)
			}
			if n := utf8.RuneCountInString(e.Attributes[k]); n > t.maxLength {
				add(field, "must be at most %d characters, got %d", t.maxLength, n)
			}
		}
	}
	if e.Properties != nil {
		if field, msg := checkProperties(e.Properties, lim.properties); msg != "" {
			add(field, "%s", msg)
		}
	}
	return errs
}

// Properties limits, from the schema tag of Event.Properties.
var (
	PropertiesMaxBytes = lim.properties.maxBytes
	PropertiesMaxDepth = lim.properties.maxDepth
	PropertiesMaxKeys  = lim.properties.maxKeys
	// PropertiesReserved is the top-level member of properties bounded on
	// its own (_segment: the Segment endpoint's message fields), by
	// PropertiesReservedMaxBytes and PropertiesReservedMaxKeys; it does
	// not count against the bounds above.
	PropertiesReserved         = lim.properties.reserved
	PropertiesReservedMaxBytes = lim.properties.reservedMaxBytes
	PropertiesReservedMaxKeys  = lim.properties.reservedMaxKeys
)

// checkProperties checks that raw is one JSON object within t's bounds, as
// strictly as the decoder reads an event (a name given twice in an object,
// invalid UTF-8 and anything but exactly one object are refused), and
// returns the first problem: the field it is about (properties.a.b) and the
// message, or "" if there is none. Events built in Go (the Segment mapping)
// go through it as well as decoded ones. The top-level member t.reserved
// is bounded on its own: its value's bytes and the entries within it count
// against t.reservedMaxBytes and t.reservedMaxKeys (its name against
// neither), everything else against t.maxBytes and t.maxKeys.
func checkProperties(raw []byte, t *schemaTag) (field, msg string) {
	const name = "properties"
	trimmed := bytes.TrimSpace(raw)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		got := "nothing"
		if len(trimmed) > 0 {
			got = kindName(jsontext.Kind(kindByte(trimmed[0])))
		}
		return name, "must be a JSON object, got " + got
	}
	tooBig := func(n int) string {
		msg := fmt.Sprintf("must be at most %d bytes of JSON, got %d (the limit of properties in bytes)", t.maxBytes, n)
		if t.reserved != "" && n != len(raw) {
			msg = fmt.Sprintf("must be at most %d bytes of JSON, got %d without %s (the limit of properties in bytes; %s is bounded on its own)", t.maxBytes, n, t.reserved, t.reserved)
		}
		return msg
	}
	if len(raw) > t.maxBytes+t.reservedMaxBytes {
		return name, tooBig(len(raw))
	}
	pd := propDecoders.Get().(*propDecoder)
	defer propDecoders.Put(pd)
	pd.r.Reset(trimmed)
	d := pd.d
	d.Reset(&pd.r)
	// open holds a frame for each object or array open around the next
	// token: '[' for an array, '{' for an object whose next token is a
	// name, ':' for one whose next token is a member's value. The decoder
	// keeps the same state, but asking it for each token was a third of
	// the walk's cost.
	var frames [16]byte
	open := frames[:0]
	keys := 0
	// The reserved member: whether the walk is within its value, where
	// that value starts in trimmed, its bytes and the entries within it.
	inReserved := false
	resStart, resBytes, resKeys := 0, 0, 0
	reservedAt := func() string { return propertiesAt(jsontext.Pointer("/" + t.reserved)) }
	endReserved := func() string {
		inReserved = false
		resBytes = int(d.InputOffset()) - resStart
		if resBytes > t.reservedMaxBytes {
			return fmt.Sprintf("must be at most %d bytes of JSON, got %d (the limit of %s, bounded on its own)", t.reservedMaxBytes, resBytes, t.reserved)
		}
		return ""
	}
	for {
		tok, err := d.ReadToken()
		if err != nil {
			if errors.Is(err, io.EOF) {
				if n := len(raw) - resBytes; n > t.maxBytes {
					return name, tooBig(n)
				}
				return "", ""
			}
			var xerr *jsontext.SyntacticError
			if errors.As(err, &xerr) {
				switch {
				case errors.Is(xerr.Err, jsontext.ErrDuplicateName):
					return propertiesAt(xerr.JSONPointer), "is given more than once: each name may appear once in an object"
				case xerr.Err != nil && xerr.Err.Error() == invalidUTF8:
					return propertiesAt(xerr.JSONPointer), "is not valid UTF-8 (a name or a value within it)"
				}
				return propertiesAt(xerr.JSONPointer), "invalid JSON: " + cleanJSONError(err)
			}
			return name, "invalid JSON: " + cleanJSONError(err)
		}
		kind := tok.Kind()
		if kind == '}' || kind == ']' {
			open = open[:len(open)-1]
			if inReserved && len(open) == 1 {
				if msg := endReserved(); msg != "" {
					return reservedAt(), msg
				}
			}
			continue
		}
		if kind == '{' || kind == '[' {
			if depth := len(open) + 1; depth > t.maxDepth {
				return propertiesAt(d.StackPointer().Parent()), fmt.Sprintf("is nested too deep: properties may nest at most %d levels (the object itself is level 1)", t.maxDepth)
			}
		}
		// Every member (counted at its name) and every array element is an
		// entry: so no object or array within properties holds more than
		// maxKeys, which CEL's cost estimator relies on. The pointer (the
		// field an error names) is built only for an error: building it
		// for every entry was most of the walk's cost.
		isName, entry := false, false
		if n := len(open); n > 0 {
			switch open[n-1] {
			case '{':
				isName, entry = true, true
				open[n-1] = ':'
			case ':':
				open[n-1] = '{'
			case '[':
				entry = true
			}
		}
		if isName && len(open) == 1 && t.reserved != "" && tok.String() == t.reserved {
			// The reserved member: its name counts against neither bound;
			// its value starts after the colon.
			inReserved, entry = true, false
			resStart = int(d.InputOffset())
			for resStart < len(trimmed) && (trimmed[resStart] == ':' || trimmed[resStart] == ' ' ||
				trimmed[resStart] == '\t' || trimmed[resStart] == '\n' || trimmed[resStart] == '\r') {
				resStart++
			}
		}
		if entry {
			if inReserved {
				resKeys++
				if resKeys > t.reservedMaxKeys {
					return propertiesAt(d.StackPointer()), fmt.Sprintf("is one entry too many: %s may hold at most %d entries (names and array elements) in all, at every level (it is bounded on its own)", t.reserved, t.reservedMaxKeys)
				}
			} else {
				keys++
				if keys > t.maxKeys {
					return propertiesAt(d.StackPointer()), fmt.Sprintf("is one entry too many: properties may hold at most %d entries (names and array elements) in all, at every level", t.maxKeys)
				}
			}
		}
		if kind == '0' {
			// A number beyond float64 is valid JSON, but no reader of the
			// record (Go, JavaScript, BigQuery's JSON) takes it back. Only
			// a number with an exponent, or of over 300 digits, can be; the
			// others are not parsed (String does not allocate here).
			if n := tok.String(); (len(n) > 300 || strings.ContainsAny(n, "eE")) && !finite(tok) {
				return propertiesAt(d.StackPointer()), "is a number out of range: numbers in properties must fit a 64-bit float (at most about 1.8e308 in size)"
			}
		}
		if isName {
			if l := utf8.RuneCountInString(tok.String()); l == 0 || l > t.keyMaxLength {
				return propertiesAt(d.StackPointer()), fmt.Sprintf("names in properties must be 1 to %d characters, got %d", t.keyMaxLength, l)
			}
			continue
		}
		if kind == '{' || kind == '[' {
			open = append(open, byte(kind))
		} else if inReserved && len(open) == 1 {
			// A scalar value of the reserved member.
			if msg := endReserved(); msg != "" {
				return reservedAt(), msg
			}
		}
	}
}

// propertiesAt is the field of the properties a JSON pointer into them
// names: properties.a.b.
func propertiesAt(p jsontext.Pointer) string {
	if f := fieldPath(p); f != "" {
		return "properties." + f
	}
	return "properties"
}

// propDecoder is a reusable decoder of properties: a new jsontext.Decoder
// allocates its buffers and name sets, which cost more than the walk.
type propDecoder struct {
	r bytes.Reader
	d *jsontext.Decoder
}

var propDecoders = sync.Pool{New: func() any {
	pd := &propDecoder{}
	pd.d = jsontext.NewDecoder(&pd.r)
	return pd
}}

func kindByte(c byte) byte {
	switch c {
	case 'n', 't', 'f', '"', '{', '[':
		return c
	}
	return '0'
}

// RequireLocation is the FieldError of an event without coordinates where
// the receiver requires them (--require-location), or nil.
func (e *Event) RequireLocation(index int) *FieldError {
	if e.Location.Latitude != nil || e.Location.Longitude != nil {
		return nil
	}
	return &FieldError{Index: index, Field: "location.latitude",
		Message: "is required: this receiver requires a location (--require-location); location.latitude and location.longitude are missing"}
}

// JoinErrors formats field errors as one line, for logs and dead letters.
func JoinErrors(errs []FieldError) string {
	parts := make([]string, len(errs))
	for i, e := range errs {
		if e.Field == "" {
			parts[i] = e.Message
		} else {
			parts[i] = e.Field + ": " + e.Message
		}
	}
	return strings.Join(parts, "; ")
}

// finite reports whether a JSON number token fits a float64.
func finite(tok jsontext.Token) bool {
	_, err := tok.Float()
	return err == nil
}
