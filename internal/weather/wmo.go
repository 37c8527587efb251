package weather

import (
	"strconv"
	"time"
)

// SlotDuration is the length of a provider time slot: Open-Meteo's current
// conditions are 15-minutely.
const SlotDuration = 15 * time.Minute

// Slot returns the start of the 15-minute slot (UTC) that t falls in.
func Slot(t time.Time) time.Time { return t.UTC().Truncate(SlotDuration) }

// wmoText is the text of every WMO weather interpretation code (WMO 4677)
// that Open-Meteo uses, with Open-Meteo's wording.
var wmoText = map[int]string{
	0:  "Clear sky",
	1:  "Mainly clear",
	2:  "Partly cloudy",
	3:  "Overcast",
	45: "Fog",
	48: "Depositing rime fog",
	51: "Light drizzle",
	53: "Moderate drizzle",
	55: "Dense drizzle",
	56: "Light freezing drizzle",
	57: "Dense freezing drizzle",
	61: "Slight rain",
	63: "Moderate rain",
	65: "Heavy rain",
	66: "Light freezing rain",
	67: "Heavy freezing rain",
	71: "Slight snow fall",
	73: "Moderate snow fall",
	75: "Heavy snow fall",
	77: "Snow grains",
	80: "Slight rain showers",
	81: "Moderate rain showers",
	82: "Violent rain showers",
	85: "Slight snow showers",
	86: "Heavy snow showers",
	95: "Thunderstorm",
	96: "Thunderstorm with slight hail",
	99: "Thunderstorm with heavy hail",
}

// Codes lists the WMO codes Open-Meteo uses, in ascending order.
var Codes = []int{0, 1, 2, 3, 45, 48, 51, 53, 55, 56, 57, 61, 63, 65, 66, 67, 71, 73, 75, 77, 80, 81, 82, 85, 86, 95, 96, 99}

// Condition returns the text of a WMO weather code, e.g. 61 -> "Slight rain".
// A code Open-Meteo does not use gives "Unknown (WMO code N)".
func Condition(code int) string {
	if s, ok := wmoText[code]; ok {
		return s
	}
	return "Unknown (WMO code " + strconv.Itoa(code) + ")"
}

// KnownCode reports whether code is one of Codes.
func KnownCode(code int) bool {
	_, ok := wmoText[code]
	return ok
}
