package sim

import (
	"math"
	"time"

	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/weather"
)

// CellDegrees is the size of the simulator's weather grid.
const CellDegrees = 0.1

// ProviderName is the Provider of the records Conditions returns. Clients
// put their own name on what they parse (the Open-Meteo client says
// "open-meteo"), so compare records with SameValues, which ignores it.
const ProviderName = "sim"

// Cell returns the centre of the 0.1-degree grid cell that holds (lat, lon):
// the latitude and longitude the simulated Open-Meteo answers with. Cells
// are [k/10, (k+1)/10) in both axes, latitude 90 belongs to the top row and
// longitude 180 is -180.
func Cell(lat, lon float64) (cellLat, cellLon float64) {
	i := math.Floor(lat * 10)
	if i >= 900 {
		i = 899
	}
	if lon >= 180 {
		lon -= 360
	}
	j := math.Floor(lon * 10)
	if j < -1800 {
		j = -1800
	}
	return (i*10 + 5) / 100, (j*10 + 5) / 100
}

// Conditions returns the simulated weather of a grid cell in the 15-minute
// slot that holds t. It is a pure function of (cellLat, cellLon, the slot):
//
//   - ObservedAt is the slot start, t.UTC().Truncate(15 * time.Minute);
//   - the values are rounded as the API prints them (temperatures and wind
//     speed to 0.1, humidity and wind direction to whole numbers,
//     precipitation to 0.01), so a value that went through the JSON answer
//     and a client compares equal to the one returned here;
//   - CellLatitude/CellLongitude are the arguments, Provider is "sim".
//
// The simulated API answers a location with Conditions(Cell(lat, lon),
// now): `current` for the current slot, and each hour of `hourly` with the
// conditions of that hour's first slot. A record enriched through the API
// therefore satisfies, for its own cell and observed_at:
//
//	SameValues(*rec.Weather, Conditions(rec.Weather.CellLatitude, rec.Weather.CellLongitude, rec.Weather.ObservedAt))
//
// The model: temperature from latitude (annual mean), season (by
// hemisphere), local solar time (daily cycle), cell elevation, and smooth
// space-time noise (weather systems); a moisture field drives humidity,
// cloud and precipitation; the WMO code follows from them (drizzle, rain,
// showers, freezing rain, snow by temperature; fog when saturated and calm;
// thunderstorms, sometimes with hail, in warm convective rain). Apparent
// temperature is the Australian BoM formula on the rounded values.
func Conditions(cellLat, cellLon float64, t time.Time) event.Weather {
	slot := weather.Slot(t)
	secs := float64(slot.Unix())
	hours := secs / 3600

	// Season: day of year as an angle, warmest about 20 July in the north.
	doy := float64(slot.YearDay()-1) + float64(slot.Hour())/24
	season := math.Cos(2 * math.Pi * (doy - 200) / 365.25)
	if cellLat < 0 {
		season = -season
	}
	// Local solar hour.
	solar := math.Mod(float64(slot.Hour())+float64(slot.Minute())/60+cellLon/15+48, 24)
	diurnal := math.Cos(2 * math.Pi * (solar - 15) / 24) // +1 at 15:00, -1 at 03:00

	absLat := math.Abs(cellLat)
	mean := 27 - 0.0075*absLat*absLat
	amplitude := 0.22 * absLat
	elev := Elevation(cellLat, cellLon)

	// Smooth noise fields in [-1, 1] or [0, 1].
	system := noise3(cellLat/3, cellLon/3, hours/18, 1)         // warm/cold spells
	moist := 0.5 + 0.5*noise3(cellLat/2, cellLon/2, hours/9, 2) // 0 dry .. 1 wet
	conv := 0.5 + 0.5*noise3(cellLat, cellLon, hours/3, 3)      // convective activity
	windN := 0.5 + 0.5*noise3(cellLat/4, cellLon/4, hours/12, 4)
	dirN := noise3(cellLat/6, cellLon/6, hours/24, 5)

	cloud := clamp((moist-0.25)/0.5, 0, 1) // 0 clear .. 1 overcast
	temp := mean + amplitude*season + 5*(1-0.6*cloud)*diurnal + 4*system - 0.0065*elev

	rh := 40 + 55*moist - 8*diurnal*(1-cloud)
	precip := 0.0
	if moist > 0.72 {
		precip = math.Pow((moist-0.72)/0.28, 1.5) * (1.2 + 2.5*conv)
	}
	precip = round(precip, 100)
	if precip > 0 {
		rh = math.Max(rh, 86+10*(moist-0.72)/0.28)
	}
	wind := 3 + 28*windN*windN
	if conv > 0.8 && precip > 0 {
		wind += 15 * (conv - 0.8) / 0.2
	}

	tempR := round(temp, 10)
	code := 0
	switch {
	case precip > 0:
		code = precipCode(tempR, precip, conv, moist)
	case moist > 0.6 && diurnal < -0.2 && wind < 12 && conv < 0.4: // calm, moist night: fog
		code = 45
		if tempR < 0 {
			code = 48
		}
	case cloud < 0.2:
		code = 0
	case cloud < 0.45:
		code = 1
	case cloud < 0.75:
		code = 2
	default:
		code = 3
	}
	if code == 45 || code == 48 {
		rh = math.Max(rh, 98)
	}
	rhR := math.Min(100, math.Max(8, math.Round(rh)))
	windR := round(wind, 10)
	// Prevailing westerlies at mid latitudes, easterlies in the trades and
	// near the poles, turned by the noise.
	base := 270.0
	if absLat < 30 || absLat > 65 {
		base = 90
	}
	dirR := math.Mod(math.Round(base+150*dirN)+720, 360)

	return event.Weather{
		ObservedAt:          slot,
		TemperatureC:        tempR,
		ApparentTemperature: apparent(tempR, rhR, windR),
		RelativeHumidity:    rhR,
		PrecipitationMM:     precip,
		WindSpeedKMH:        windR,
		WindDirectionDeg:    dirR,
		WeatherCode:         code,
		Condition:           weather.Condition(code),
		Provider:            ProviderName,
		CellLatitude:        cellLat,
		CellLongitude:       cellLon,
	}
}

// precipCode picks the WMO code of a slot with precipitation.
func precipCode(t, p, conv, moist float64) int {
	switch {
	case t >= 16 && conv > 0.8:
		switch {
		case conv > 0.97:
			return 99
		case conv > 0.92:
			return 96
		}
		return 95
	case t <= -1 || (t <= 1 && moist > 0.9):
		if conv > 0.6 {
			if p < 0.8 {
				return 85
			}
			return 86
		}
		switch {
		case t > -2 && p < 0.05:
			return 77
		case p < 0.4:
			return 71
		case p < 1.2:
			return 73
		}
		return 75
	case t <= 1:
		if p < 0.3 {
			if p < 0.15 {
				return 56
			}
			return 57
		}
		if p < 1 {
			return 66
		}
		return 67
	case conv > 0.6:
		switch {
		case p < 0.8:
			return 80
		case p < 2:
			return 81
		}
		return 82
	case p < 0.25 && conv < 0.4:
		switch {
		case p < 0.08:
			return 51
		case p < 0.16:
			return 53
		}
		return 55
	case p < 0.6:
		return 61
	case p < 1.8:
		return 63
	}
	return 65
}

// apparent is the Australian Bureau of Meteorology apparent temperature.
func apparent(t, rh, windKMH float64) float64 {
	e := rh / 100 * 6.105 * math.Exp(17.27*t/(237.7+t))
	return round(t+0.33*e-0.70*(windKMH/3.6)-4, 10)
}

// Elevation is the simulated elevation of a cell in metres (0 to 1,200),
// which the API reports and the temperature takes into account.
func Elevation(cellLat, cellLon float64) float64 {
	n := 0.5 + 0.5*noise3(cellLat/1.5, cellLon/1.5, 0, 6)
	return math.Round(1200 * n * n * n)
}

func round(v, scale float64) float64 { return math.Round(v*scale) / scale }

func clamp(v, lo, hi float64) float64 { return math.Max(lo, math.Min(hi, v)) }

// mix64 is SplitMix64's finaliser.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// lattice returns a value in [-1, 1] for an integer lattice point.
func lattice(i, j, k int64, field uint64) float64 {
	h := mix64(uint64(i)*0x9e3779b97f4a7c15 ^ mix64(uint64(j)+0x632be59bd9b4e019) ^ mix64(uint64(k)*0xd6e8feb86659fd93+field))
	return float64(h>>11)/float64(1<<53)*2 - 1
}

func smooth(t float64) float64 { return t * t * (3 - 2*t) }

// noise3 is value noise in three dimensions, in [-1, 1], smooth in each.
func noise3(x, y, z float64, field uint64) float64 {
	fx, fy, fz := math.Floor(x), math.Floor(y), math.Floor(z)
	i, j, k := int64(fx), int64(fy), int64(fz)
	u, v, w := smooth(x-fx), smooth(y-fy), smooth(z-fz)
	lerp := func(a, b, t float64) float64 { return a + (b-a)*t }
	c := func(di, dj, dk int64) float64 { return lattice(i+di, j+dj, k+dk, field) }
	x00 := lerp(c(0, 0, 0), c(1, 0, 0), u)
	x10 := lerp(c(0, 1, 0), c(1, 1, 0), u)
	x01 := lerp(c(0, 0, 1), c(1, 0, 1), u)
	x11 := lerp(c(0, 1, 1), c(1, 1, 1), u)
	return lerp(lerp(x00, x10, v), lerp(x01, x11, v), w)
}

// SameValues reports whether two weather records carry the same values:
// every field but Provider (set by whichever client parsed the answer).
// ObservedAt is compared as an instant.
func SameValues(a, b event.Weather) bool {
	return a.ObservedAt.Equal(b.ObservedAt) &&
		a.TemperatureC == b.TemperatureC && a.ApparentTemperature == b.ApparentTemperature &&
		a.RelativeHumidity == b.RelativeHumidity && a.PrecipitationMM == b.PrecipitationMM &&
		a.WindSpeedKMH == b.WindSpeedKMH && a.WindDirectionDeg == b.WindDirectionDeg &&
		a.WeatherCode == b.WeatherCode && a.Condition == b.Condition &&
		a.CellLatitude == b.CellLatitude && a.CellLongitude == b.CellLongitude
}
