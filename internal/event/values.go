package event

import (
	"encoding/json"
	"fmt"
	"math"
	"time"
)

// Values returns the record's column values in the order of Columns: string,
// float64, int32, time.Time (UTC) or nil. It is hand-written for speed (it
// runs for every stored row); values_test.go checks it against Columns.
func (r *Record) Values() []any {
	v := make([]any, 0, 42)
	e := &r.Event
	var attrs any
	if len(e.Attributes) > 0 {
		b, err := json.Marshal(e.Attributes)
		if err != nil { // a map[string]string always marshals
			panic(err)
		}
		attrs = string(b)
	}
	v = append(v,
		e.EventID, e.EventType, e.OccurredAt.UTC(),
		e.User.ID, e.User.Username, e.User.Name, e.User.Title, e.User.FirstName, e.User.LastName,
		e.User.Email, e.User.Phone, e.User.Cell, e.User.Gender, e.User.Nationality, e.User.BirthDate, e.User.PictureURL,
		floatOrNil(e.Location.Latitude), floatOrNil(e.Location.Longitude),
		e.Location.Street, e.Location.City, e.Location.State, e.Location.Country, e.Location.Postcode, e.Location.Timezone,
		attrs, propsOrNil(e.Properties),
	)
	if w := r.Weather; w != nil {
		v = append(v, w.ObservedAt.UTC(), w.TemperatureC, w.ApparentTemperature, w.RelativeHumidity,
			w.PrecipitationMM, w.WindSpeedKMH, w.WindDirectionDeg, int32(w.WeatherCode), w.Condition, w.Provider,
			w.CellLatitude, w.CellLongitude)
	} else {
		v = append(v, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil)
	}
	v = append(v, r.Enrichment.Status, r.Enrichment.Error, r.IngestedAt.UTC(), r.ProcessedAt.UTC())
	return v
}

// propsOrNil is the properties column's value: the JSON text, or nil.
func propsOrNil(p json.RawMessage) any {
	if len(p) == 0 {
		return nil
	}
	return string(p)
}

func floatOrNil(f *float64) any {
	if f == nil {
		return nil
	}
	return *f
}

// FromValues builds a Record from column values in the order of Columns, as
// a database driver returns them (strings, float64, any integer type,
// time.Time, nil). It is the inverse of Values.
func FromValues(v []any) (Record, error) {
	var r Record
	if len(v) != len(Columns()) {
		return r, fmt.Errorf("event: %d values for %d columns", len(v), len(Columns()))
	}
	var err error
	i := 0
	str := func() string {
		x := v[i]
		i++
		switch s := x.(type) {
		case string:
			return s
		case []byte:
			return string(s)
		case nil:
			return ""
		}
		if err == nil {
			err = fmt.Errorf("event: column %s: want string, got %T", Columns()[i-1].Name, x)
		}
		return ""
	}
	flt := func() *float64 {
		x := v[i]
		i++
		switch f := x.(type) {
		case float64:
			return &f
		case float32:
			g := float64(f)
			return &g
		case nil:
			return nil
		}
		if err == nil {
			err = fmt.Errorf("event: column %s: want float, got %T", Columns()[i-1].Name, x)
		}
		return nil
	}
	integer := func() int {
		x := v[i]
		i++
		switch n := x.(type) {
		case int32:
			return int(n)
		case int64:
			return int(n)
		case int:
			return n
		case int16:
			return int(n)
		case int8:
			return int(n)
		case nil:
			return 0
		}
		if err == nil {
			err = fmt.Errorf("event: column %s: want int, got %T", Columns()[i-1].Name, x)
		}
		return 0
	}
	ts := func() time.Time {
		x := v[i]
		i++
		switch t := x.(type) {
		case time.Time:
			return t.UTC()
		case nil:
			return time.Time{}
		}
		if err == nil {
			err = fmt.Errorf("event: column %s: want timestamp, got %T", Columns()[i-1].Name, x)
		}
		return time.Time{}
	}
	e := &r.Event
	e.EventID, e.EventType, e.OccurredAt = str(), str(), ts()
	u := &e.User
	u.ID, u.Username, u.Name, u.Title, u.FirstName, u.LastName = str(), str(), str(), str(), str(), str()
	u.Email, u.Phone, u.Cell, u.Gender, u.Nationality, u.BirthDate, u.PictureURL = str(), str(), str(), str(), str(), str(), str()
	l := &e.Location
	l.Latitude, l.Longitude = flt(), flt()
	l.Street, l.City, l.State, l.Country, l.Postcode, l.Timezone = str(), str(), str(), str(), str(), str()
	if a := str(); a != "" {
		if jerr := json.Unmarshal([]byte(a), &e.Attributes); jerr != nil && err == nil {
			err = fmt.Errorf("event: column attributes: %w", jerr)
		}
	}
	switch p := v[i].(type) {
	case nil:
	case string:
		e.Properties = json.RawMessage(p)
	case []byte:
		e.Properties = json.RawMessage(append([]byte(nil), p...))
	default: // a driver that decodes JSON columns (map[string]any)
		b, jerr := json.Marshal(p)
		if jerr != nil && err == nil {
			err = fmt.Errorf("event: column properties: %w", jerr)
		}
		e.Properties = b
	}
	i++
	if v[i] != nil {
		w := &Weather{}
		w.ObservedAt = ts()
		w.TemperatureC = deref(flt())
		w.ApparentTemperature = deref(flt())
		w.RelativeHumidity = deref(flt())
		w.PrecipitationMM = deref(flt())
		w.WindSpeedKMH = deref(flt())
		w.WindDirectionDeg = deref(flt())
		w.WeatherCode = integer()
		w.Condition, w.Provider = str(), str()
		w.CellLatitude, w.CellLongitude = deref(flt()), deref(flt())
		r.Weather = w
	} else {
		i += 12
	}
	r.Enrichment.Status, r.Enrichment.Error = str(), str()
	r.IngestedAt, r.ProcessedAt = ts(), ts()
	return r, err
}

func deref(f *float64) float64 {
	if f == nil {
		return math.NaN()
	}
	return *f
}
