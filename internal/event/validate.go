package event

import (
	"fmt"
	"math"
	"regexp"
	"sort"
	"strings"
	"time"
	"unicode/utf8"
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
)

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
)

// Validate checks an event against the schema and returns every problem, in
// a stable order; index is copied into each FieldError. now and maxSkew bound
// occurred_at: an event from the future beyond maxSkew is invalid.
func (e *Event) Validate(index int, now time.Time, maxSkew time.Duration) []FieldError {
	var errs []FieldError
	add := func(field, format string, args ...any) {
		errs = append(errs, FieldError{Index: index, Field: field, Message: fmt.Sprintf(format, args...)})
	}
	str := func(field, key, v string) {
		t := limits[key]
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
	str("event_id", "Event.EventID", e.EventID)
	if e.EventID != "" && !eventIDPattern.MatchString(e.EventID) {
		add("event_id", "must match %s", eventIDPattern)
	}
	str("event_type", "Event.EventType", e.EventType)
	if e.EventType != "" && !eventTypePattern.MatchString(e.EventType) {
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
	str("user.id", "User.ID", u.ID)
	str("user.username", "User.Username", u.Username)
	str("user.name", "User.Name", u.Name)
	str("user.title", "User.Title", u.Title)
	str("user.first_name", "User.FirstName", u.FirstName)
	str("user.last_name", "User.LastName", u.LastName)
	str("user.email", "User.Email", u.Email)
	str("user.phone", "User.Phone", u.Phone)
	str("user.cell", "User.Cell", u.Cell)
	str("user.gender", "User.Gender", u.Gender)
	str("user.nationality", "User.Nationality", u.Nationality)
	str("user.birth_date", "User.BirthDate", u.BirthDate)
	str("user.picture_url", "User.PictureURL", u.PictureURL)

	l := &e.Location
	coord := func(field, key string, v *float64) {
		t := limits[key]
		switch {
		case v == nil:
			add(field, "is required")
		case math.IsNaN(*v) || math.IsInf(*v, 0):
			add(field, "must be a finite number")
		case *v < *t.minimum || *v > *t.maximum:
			add(field, "must be between %g and %g, got %g", *t.minimum, *t.maximum, *v)
		}
	}
	coord("location.latitude", "Location.Latitude", l.Latitude)
	coord("location.longitude", "Location.Longitude", l.Longitude)
	str("location.street", "Location.Street", l.Street)
	str("location.city", "Location.City", l.City)
	str("location.state", "Location.State", l.State)
	str("location.country", "Location.Country", l.Country)
	str("location.postcode", "Location.Postcode", l.Postcode)
	str("location.timezone", "Location.Timezone", l.Timezone)

	if len(e.Attributes) > 0 {
		t := limits["Event.Attributes"]
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
	return errs
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
