package storetest

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/skyjoin/skyjoin/internal/event"
)

// Base is the occurred_at of the first record Records builds.
var Base = time.Date(2026, 1, 14, 21, 0, 0, 0, time.UTC)

// Countries are the countries Records draws from, as stored.
var Countries = []string{"Germany", "Brazil", "New Zealand", "Türkiye", "Canada", "India", "Norway", "Australia"}

var (
	firstNames = []string{"Ava", "Noah", "Zoë", "Mateus", "Aarav", "Ingrid", "Chloé", "Kemal", "Liam", "Mia", "Søren", "Ana"}
	lastNames  = []string{"Schmidt", "Silva", "Ngata", "Yılmaz", "Tremblay", "Sharma", "Hansen", "Smith", "O'Brien", "García"}
	cities     = []string{"Berlin", "São Paulo", "Auckland", "İzmir", "Montréal", "Pune", "Tromsø", "Perth"}
	timezones  = []string{"+1:00", "-3:00", "+12:00", "+3:00", "-5:00", "+5:30", "Europe/Oslo", "+8:00"}
	eventTypes = []string{event.TypeUserObserved, event.TypeUserObserved, event.TypeUserObserved, "user.signup", "page.view"}
	conditions = []struct {
		code int
		text string
	}{{0, "Clear sky"}, {1, "Mainly clear"}, {3, "Overcast"}, {45, "Fog"}, {61, "Slight rain"}, {71, "Slight snow fall"}, {95, "Thunderstorm"}}
	attrValues = []string{"collect", "1.4.2", "ios", "android", "web", "campaign=winter-sale", "naïve café ☕", ""}
)

// Records returns n realistic enriched records, the same for the same seed
// and different (different event ids) for different seeds. They are ready to
// Write: Seq is zero, every timestamp is UTC with microsecond precision,
// occurred_at grows by about 2 s per record with jitter (so it is not in the
// order of the slice), about n/4 users share the records, about 10% have no
// weather (status unavailable, with an error) and 10% stale weather (with an
// error), and about half have attributes.
func Records(seed uint64, n int) []event.Record {
	rng := rand.New(rand.NewPCG(seed, 0x5ca1ab1e))
	// Properties draw from their own source, so that the other fields are
	// what they were before records had properties.
	prng := rand.New(rand.NewPCG(seed, 0x9e0be7))
	users := max(1, n/4)
	recs := make([]event.Record, n)
	for i := range recs {
		u := rng.IntN(users)
		// A user lives in one place, so country filters and users agree.
		place := (int(seed) + u) % len(Countries)
		first, last := firstNames[(u+int(seed))%len(firstNames)], lastNames[(u*7+int(seed))%len(lastNames)]
		lat := round(rng.Float64()*170-85, 4)
		lon := round(rng.Float64()*350-175, 4)
		occurred := Base.Add(time.Duration(i)*2*time.Second + time.Duration(rng.IntN(4_000_000))*time.Microsecond - 2*time.Second)
		ingested := occurred.Add(time.Duration(50+rng.IntN(2_000_000)) * time.Microsecond)
		processed := ingested.Add(time.Duration(200+rng.IntN(500_000)) * time.Microsecond)
		r := event.Record{
			Event: event.Event{
				EventID:    fmt.Sprintf("ev-%d-%06d-%08x", seed, i, rng.Uint32()),
				EventType:  eventTypes[rng.IntN(len(eventTypes))],
				OccurredAt: occurred,
				User: event.User{
					ID:          fmt.Sprintf("user-%d-%04d", seed, u),
					Username:    strings.ToLower(first) + fmt.Sprint(u),
					Name:        first + " " + last,
					Title:       []string{"Mr", "Ms", "Mx", "Dr"}[u%4],
					FirstName:   first,
					LastName:    last,
					Email:       fmt.Sprintf("%s.%d@example.com", strings.ToLower(first), u),
					Phone:       fmt.Sprintf("(%03d) %03d-%04d", rng.IntN(1000), rng.IntN(1000), rng.IntN(10000)),
					Cell:        fmt.Sprintf("0%d-%07d", rng.IntN(10), rng.IntN(10_000_000)),
					Gender:      []string{"female", "male", ""}[u%3],
					Nationality: []string{"DE", "BR", "NZ", "TR", "CA", "IN", "NO", "AU"}[place],
					BirthDate:   fmt.Sprintf("19%02d-%02d-%02d", 50+rng.IntN(50), 1+rng.IntN(12), 1+rng.IntN(28)),
					PictureURL:  fmt.Sprintf("https://randomuser.me/api/portraits/women/%d.jpg", u%100),
				},
				Location: event.Location{
					Latitude:  &lat,
					Longitude: &lon,
					Street:    fmt.Sprintf("%d Main Street", 1+rng.IntN(9999)),
					City:      cities[place],
					State:     "State " + fmt.Sprint(place),
					Country:   Countries[place],
					Postcode:  fmt.Sprintf("%05d", rng.IntN(100000)),
					Timezone:  timezones[place],
				},
			},
			IngestedAt:  ingested,
			ProcessedAt: processed,
		}
		if rng.IntN(2) == 0 {
			r.Attributes = map[string]string{"source": attrValues[rng.IntN(len(attrValues))]}
			for k := range rng.IntN(3) {
				r.Attributes[fmt.Sprintf("attr_%d", k)] = attrValues[rng.IntN(len(attrValues))]
			}
		}
		r.Properties = properties(prng)
		switch p := rng.IntN(10); {
		case p == 0:
			r.Enrichment = event.Enrichment{Status: event.StatusUnavailable, Error: "open-meteo: 429 Too Many Requests: daily quota exceeded"}
		default:
			c := conditions[rng.IntN(len(conditions))]
			slot := occurred.Truncate(15 * time.Minute)
			r.Weather = &event.Weather{
				ObservedAt:          slot,
				TemperatureC:        round(rng.Float64()*60-25, 1),
				ApparentTemperature: round(rng.Float64()*60-30, 1),
				RelativeHumidity:    float64(rng.IntN(101)),
				PrecipitationMM:     round(rng.Float64()*5, 2),
				WindSpeedKMH:        round(rng.Float64()*80, 1),
				WindDirectionDeg:    float64(rng.IntN(360)),
				WeatherCode:         c.code,
				Condition:           c.text,
				Provider:            []string{"open-meteo", "sim"}[rng.IntN(2)],
				CellLatitude:        round(lat, 2),
				CellLongitude:       round(lon, 2),
			}
			r.Enrichment.Status = event.StatusEnriched
			if p == 1 {
				r.Enrichment = event.Enrichment{Status: event.StatusStale, Error: "open-meteo: timeout after 2s; using the answer for " + slot.Add(-15*time.Minute).Format(time.RFC3339)}
				r.Weather.ObservedAt = slot.Add(-15 * time.Minute)
			}
		}
		recs[i] = r
	}
	return recs
}

// Plans are the values of the plan property Records draws from.
var Plans = []string{"free", "pro", "team"}

// properties returns typed properties for about two records in three: an
// order (amount, items, nested shipping), or a plan and a flag.
func properties(rng *rand.Rand) json.RawMessage {
	switch rng.IntN(3) {
	case 0:
		return nil
	case 1:
		n := 1 + rng.IntN(3)
		items := make([]string, n)
		for i := range items {
			items[i] = fmt.Sprintf(`{"sku":"sku-%d","qty":%d}`, rng.IntN(100), 1+rng.IntN(4))
		}
		return json.RawMessage(fmt.Sprintf(`{"amount":%g,"currency":"EUR","items":[%s],"shipping":{"express":%v,"days":%d}}`,
			round(rng.Float64()*200, 2), strings.Join(items, ","), rng.IntN(2) == 0, 1+rng.IntN(5)))
	}
	return json.RawMessage(fmt.Sprintf(`{"plan":%q,"seats":%d,"trial":%v}`, Plans[rng.IntN(len(Plans))], 1+rng.IntN(50), rng.IntN(2) == 0))
}

func round(f float64, decimals int) float64 {
	p := math.Pow10(decimals)
	return math.Round(f*p) / p
}
