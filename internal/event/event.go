// Package event defines skyjoin's records: the user event that enters the
// pipeline and the enriched record that leaves it.
//
// The Go types below are the single source of the schema. Their struct tags
// drive the JSON Schema that ingest publishes (see JSONSchema), the DuckDB
// table (see DuckDBDDL) and, through Columns, every other column-oriented
// sink. Field constraints live in the `schema` tag, and Validate enforces the
// same constraints in plain Go for speed; schema_test.go keeps the two in step.
package event

import (
	"encoding/json"
	"time"
)

// TypeUserObserved is the event type the collector emits for each user it sees.
const TypeUserObserved = "user.observed"

// Event is one user event as it arrives at ingest.
type Event struct {
	EventID    string            `json:"event_id" schema:"required,minLength=1,maxLength=128,pattern=^[A-Za-z0-9][A-Za-z0-9._:@/+=-]*$" desc:"Unique id of the event; the idempotency key: the same id stored twice leaves one record."`
	EventType  string            `json:"event_type" schema:"required,minLength=1,maxLength=128,pattern=^[^\\x00-\\x20\\x7f]([^\\x00-\\x1f\\x7f]*[^\\x00-\\x20\\x7f])?$" desc:"Name of the event as the sender names it, kept as sent (case, spaces and punctuation included; no normalisation): user.observed, page.view, Order Completed. No control characters, no space at either end."`
	OccurredAt time.Time         `json:"occurred_at" schema:"required" desc:"When the event happened (RFC 3339; from 2000-01-01T00:00:00Z to the receiver's clock plus its clock skew, 5 minutes by default); the weather is joined for this time."`
	User       User              `json:"user" schema:"required" desc:"The user the event is about."`
	Location   Location          `json:"location,omitzero" desc:"Where the user was. Optional: an event without coordinates is stored with enrichment status no_location (unless the receiver requires a location); latitude and longitude come both or neither."`
	Attributes map[string]string `json:"attributes,omitempty" schema:"maxProperties=64,keyMaxLength=64,maxLength=1024" desc:"String labels (source, campaign, ...): a flat object of short strings, kept as it was for the clients that send it. Typed or nested data goes in properties."`
	Properties json.RawMessage   `json:"properties,omitempty" schema:"maxBytes=16384,maxDepth=8,maxKeys=256,keyMaxLength=128,reserved=_segment,reservedMaxBytes=16384,reservedMaxKeys=256" desc:"Typed properties of the event: any JSON object (numbers, booleans, strings, arrays, nested objects), e.g. {\"amount\": 12.5, \"items\": [\"a\", \"b\"]}. At most 16384 bytes, 8 levels of nesting (the object itself is level 1) and 256 entries (member names and array elements) in all; names are 1 to 128 characters and appear once per object. A top-level member _segment (where the Segment-compatible endpoint keeps the message's own fields) is bounded on its own: its value may hold 16384 bytes and 256 entries, which do not count against the bounds above (its name is not an entry); the 8 levels hold for it too. Stored as JSON (DuckDB JSON, BigQuery JSON)."`
}

// User is the profile of the user an event is about.
type User struct {
	ID          string `json:"id" schema:"required,minLength=1,maxLength=128" desc:"Stable id of the user."`
	Username    string `json:"username,omitempty" schema:"maxLength=128" desc:"Login name."`
	Name        string `json:"name,omitempty" schema:"maxLength=256" desc:"Display name."`
	Title       string `json:"title,omitempty" schema:"maxLength=32" desc:"Form of address (Mr, Ms, Dr...)."`
	FirstName   string `json:"first_name,omitempty" schema:"maxLength=128" desc:"Given name."`
	LastName    string `json:"last_name,omitempty" schema:"maxLength=128" desc:"Family name."`
	Email       string `json:"email,omitempty" schema:"maxLength=256" desc:"E-mail address."`
	Phone       string `json:"phone,omitempty" schema:"maxLength=64" desc:"Phone number as given."`
	Cell        string `json:"cell,omitempty" schema:"maxLength=64" desc:"Mobile number as given."`
	Gender      string `json:"gender,omitempty" schema:"maxLength=32" desc:"Gender as given."`
	Nationality string `json:"nationality,omitempty" schema:"maxLength=8" desc:"Nationality code (ISO 3166-1 alpha-2 as randomuser gives it)."`
	BirthDate   string `json:"birth_date,omitempty" schema:"maxLength=32" desc:"Date of birth (YYYY-MM-DD or RFC 3339)."`
	PictureURL  string `json:"picture_url,omitempty" schema:"maxLength=1024" desc:"URL of the user's picture."`
}

// Location is where the user was when the event happened.
type Location struct {
	Latitude  *float64 `json:"latitude,omitempty" schema:"minimum=-90,maximum=90" desc:"WGS84 latitude in degrees; with longitude, or neither."`
	Longitude *float64 `json:"longitude,omitempty" schema:"minimum=-180,maximum=180" desc:"WGS84 longitude in degrees; with latitude, or neither."`
	Street    string   `json:"street,omitempty" schema:"maxLength=256" desc:"Street address."`
	City      string   `json:"city,omitempty" schema:"maxLength=128" desc:"City."`
	State     string   `json:"state,omitempty" schema:"maxLength=128" desc:"State or region."`
	Country   string   `json:"country,omitempty" schema:"maxLength=128" desc:"Country name."`
	Postcode  string   `json:"postcode,omitempty" schema:"maxLength=32" desc:"Postal code, as a string."`
	Timezone  string   `json:"timezone,omitempty" schema:"maxLength=64" desc:"Time zone: an IANA name or a UTC offset such as +9:30."`
}

// HasCoordinates reports whether the location has a latitude and a
// longitude (Validate refuses one without the other).
func (l Location) HasCoordinates() bool { return l.Latitude != nil && l.Longitude != nil }

// Lat returns the latitude, or 0 if it is missing.
func (l Location) Lat() float64 {
	if l.Latitude == nil {
		return 0
	}
	return *l.Latitude
}

// Lon returns the longitude, or 0 if it is missing.
func (l Location) Lon() float64 {
	if l.Longitude == nil {
		return 0
	}
	return *l.Longitude
}

// Weather is the weather joined to an event.
type Weather struct {
	ObservedAt          time.Time `json:"observed_at" desc:"Start of the provider's time slot the values are for (UTC)."`
	TemperatureC        float64   `json:"temperature_c" desc:"Air temperature at 2 m, degrees Celsius."`
	ApparentTemperature float64   `json:"apparent_temperature_c" desc:"Apparent (feels-like) temperature, degrees Celsius."`
	RelativeHumidity    float64   `json:"relative_humidity_pct" desc:"Relative humidity at 2 m, percent."`
	PrecipitationMM     float64   `json:"precipitation_mm" desc:"Precipitation (rain, showers, snow) in the slot, millimetres."`
	WindSpeedKMH        float64   `json:"wind_speed_kmh" desc:"Wind speed at 10 m, km/h."`
	WindDirectionDeg    float64   `json:"wind_direction_deg" desc:"Wind direction at 10 m, degrees."`
	WeatherCode         int       `json:"code" desc:"WMO weather interpretation code (WMO 4677)."`
	Condition           string    `json:"condition" desc:"Text of the WMO weather code."`
	Provider            string    `json:"provider" desc:"Weather provider that answered (open-meteo, sim, ...)."`
	CellLatitude        float64   `json:"cell_latitude" desc:"Latitude of the provider's grid cell that answered."`
	CellLongitude       float64   `json:"cell_longitude" desc:"Longitude of the provider's grid cell that answered."`
}

// Enrichment statuses.
const (
	StatusEnriched    = "enriched"    // weather joined from a fresh answer
	StatusStale       = "stale"       // weather joined from an answer past its slot
	StatusUnavailable = "unavailable" // no weather could be had; see Enrichment.Error
	StatusNoLocation  = "no_location" // the event has no coordinates: no weather lookup
)

// Enrichment says how the weather join went.
type Enrichment struct {
	Status string `json:"status" desc:"enriched, stale, unavailable or no_location."`
	Error  string `json:"error,omitempty" desc:"Why weather is missing or stale."`
}

// Record is an enriched event: what the store keeps and the API serves.
type Record struct {
	Event
	Weather     *Weather   `json:"weather,omitempty" desc:"The weather at the event's place and time; absent when unavailable."`
	Enrichment  Enrichment `json:"enrichment" desc:"How the weather join went."`
	IngestedAt  time.Time  `json:"ingested_at" desc:"When ingest accepted the event (UTC)."`
	ProcessedAt time.Time  `json:"processed_at" desc:"When the worker enriched the event (UTC)."`
	// Seq is the store's insertion sequence: a cursor for pagination and the
	// live stream. It is assigned by the store; zero until stored.
	Seq int64 `json:"seq,omitempty" desc:"Store insertion sequence number." column:"-"`
}
