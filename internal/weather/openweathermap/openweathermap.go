// Package openweathermap is a weather.Provider over OpenWeatherMap's current
// weather API (https://openweathermap.org/current):
//
//	GET {BaseURL}/data/2.5/weather?lat=..&lon=..&appid=KEY&units=metric
//
// One location per call and current conditions only (no past hours: the
// Service answers events older than the current slot with
// weather.ErrNoHistory). OpenWeatherMap's condition ids are mapped to the
// nearest WMO 4677 code, and the record keeps OpenWeatherMap's own
// description as the condition text.
package openweathermap

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/platform"
	"github.com/skyjoin/skyjoin/internal/retry"
	"github.com/skyjoin/skyjoin/internal/weather"
)

// ProviderName is the name the client puts on weather records.
const ProviderName = "openweathermap"

// DefaultBaseURL is the public API.
const DefaultBaseURL = "https://api.openweathermap.org"

// Config configures a Client.
type Config struct {
	BaseURL    string        // default DefaultBaseURL
	APIKey     string        // required (appid); never logged
	Timeout    time.Duration // per HTTP request when HTTPClient is nil; default 10s
	HTTPClient *http.Client
}

// Validate reports every problem with the configuration.
func (c Config) Validate() error {
	var errs []error
	if c.APIKey == "" {
		errs = append(errs, errors.New("openweathermap: an API key is required"))
	}
	if c.BaseURL != "" {
		u, err := url.Parse(c.BaseURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("openweathermap base URL %q: want http(s)://host[/path]", c.BaseURL))
		}
	}
	if c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("openweathermap timeout: %s, want >= 0", c.Timeout))
	}
	return errors.Join(errs...)
}

// Client is an OpenWeatherMap client, safe for concurrent use.
type Client struct {
	base string
	key  string
	hc   *http.Client
}

var (
	_ weather.Provider = (*Client)(nil)
	_ weather.Batcher  = (*Client)(nil)
)

// New returns a Client.
func New(cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := &Client{base: strings.TrimRight(cfg.BaseURL, "/"), key: cfg.APIKey, hc: cfg.HTTPClient}
	if c.base == "" {
		c.base = DefaultBaseURL
	}
	if c.hc == nil {
		t := cfg.Timeout
		if t == 0 {
			t = 10 * time.Second
		}
		c.hc = &http.Client{Timeout: t}
	}
	return c, nil
}

// Name returns "openweathermap".
func (c *Client) Name() string { return ProviderName }

// MaxPointsPerCall is 1: the API answers one location per request.
func (c *Client) MaxPointsPerCall() int { return 1 }

// Current asks for each point in turn (the Service gives one at a time).
func (c *Client) Current(ctx context.Context, points []weather.Point) ([]event.Weather, error) {
	out := make([]event.Weather, len(points))
	for i, p := range points {
		w, err := c.current(ctx, p)
		if err != nil {
			return nil, err
		}
		out[i] = w
	}
	return out, nil
}

// answer is the part of the API's answer the client reads.
type answer struct {
	Coord struct {
		Lat *float64 `json:"lat"`
		Lon *float64 `json:"lon"`
	} `json:"coord"`
	Weather []struct {
		ID          int    `json:"id"`
		Main        string `json:"main"`
		Description string `json:"description"`
	} `json:"weather"`
	Main *struct {
		Temp      float64 `json:"temp"`
		FeelsLike float64 `json:"feels_like"`
		Humidity  float64 `json:"humidity"`
	} `json:"main"`
	Wind struct {
		Speed float64 `json:"speed"` // m/s with units=metric
		Deg   float64 `json:"deg"`
	} `json:"wind"`
	Rain struct {
		H1 float64 `json:"1h"`
	} `json:"rain"`
	Snow struct {
		H1 float64 `json:"1h"`
	} `json:"snow"`
	Dt int64 `json:"dt"`
}

func (c *Client) current(ctx context.Context, p weather.Point) (event.Weather, error) {
	q := url.Values{}
	q.Set("lat", strconv.FormatFloat(math.Round(p.Lat*1e4)/1e4, 'f', -1, 64))
	q.Set("lon", strconv.FormatFloat(math.Round(p.Lon*1e4)/1e4, 'f', -1, 64))
	q.Set("units", "metric")
	q.Set("appid", c.key)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/data/2.5/weather?"+q.Encode(), nil)
	if err != nil {
		return event.Weather{}, fmt.Errorf("openweathermap: build request: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL holds the key
		}
		return event.Weather{}, fmt.Errorf("openweathermap: GET /data/2.5/weather: %w", platform.RedactError(err, c.key))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return event.Weather{}, fmt.Errorf("openweathermap: read answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return event.Weather{}, apiError(resp, body, c.key)
	}
	var a answer
	if err := json.Unmarshal(body, &a); err != nil {
		return event.Weather{}, fmt.Errorf("openweathermap: decode answer: %w", err)
	}
	if a.Main == nil || a.Coord.Lat == nil || a.Coord.Lon == nil || a.Dt == 0 {
		return event.Weather{}, errors.New("openweathermap: decode answer: no main, coord or dt")
	}
	w := event.Weather{
		ObservedAt:          time.Unix(a.Dt, 0).UTC(),
		TemperatureC:        a.Main.Temp,
		ApparentTemperature: a.Main.FeelsLike,
		RelativeHumidity:    a.Main.Humidity,
		PrecipitationMM:     math.Round((a.Rain.H1+a.Snow.H1)*100) / 100,
		WindSpeedKMH:        math.Round(a.Wind.Speed*3.6*10) / 10,
		WindDirectionDeg:    a.Wind.Deg,
		Provider:            ProviderName,
		CellLatitude:        *a.Coord.Lat,
		CellLongitude:       *a.Coord.Lon,
		WeatherCode:         -1,
		Condition:           "Unknown",
	}
	if len(a.Weather) > 0 {
		w.WeatherCode = WMOCode(a.Weather[0].ID)
		w.Condition = capitalise(a.Weather[0].Description)
	}
	return w, nil
}

// apiError reads an error answer: {"cod":401,"message":"..."} (cod may be
// a number or a string). Its Reason, copied into records, is capped and
// never holds the API key: OpenWeatherMap's 401 message quotes it
// (weather.Reason).
func apiError(resp *http.Response, body []byte, key string) *weather.APIError {
	e := &weather.APIError{Provider: ProviderName, StatusCode: resp.StatusCode}
	e.Wait, _ = retry.ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	var eb struct {
		Message string `json:"message"`
	}
	_ = json.Unmarshal(body, &eb)
	e.Reason = weather.Reason(eb.Message, body, resp.StatusCode, key)
	return e
}

func capitalise(s string) string {
	r, n := utf8.DecodeRuneInString(s)
	if n == 0 {
		return s
	}
	return string(unicode.ToUpper(r)) + s[n:]
}

// WMOCode maps an OpenWeatherMap condition id
// (https://openweathermap.org/weather-conditions) to the nearest WMO 4677
// code: Open-Meteo's subset where one fits, else the WMO code of the
// phenomenon (4 smoke or volcanic ash, 5 haze, 6 dust, 7 sand, 18 squalls,
// 19 funnel cloud / tornado). Unknown ids give -1.
func WMOCode(id int) int {
	switch {
	case id >= 200 && id < 300:
		return 95 // thunderstorm (OpenWeatherMap does not tell hail)
	}
	switch id {
	case 300, 310:
		return 51
	case 301, 311:
		return 53
	case 302, 312:
		return 55
	case 313, 321:
		return 80
	case 314:
		return 81
	case 500:
		return 61
	case 501:
		return 63
	case 502, 503, 504:
		return 65
	case 511:
		return 66
	case 520:
		return 80
	case 521, 531:
		return 81
	case 522:
		return 82
	case 600, 615:
		return 71
	case 601, 616:
		return 73
	case 602:
		return 75
	case 611:
		return 66
	case 612, 620, 621:
		return 85
	case 613, 622:
		return 86
	case 701, 741:
		return 45
	case 711, 762:
		return 4
	case 721:
		return 5
	case 731, 761:
		return 6
	case 751:
		return 7
	case 771:
		return 18
	case 781:
		return 19
	case 800:
		return 0
	case 801:
		return 1
	case 802:
		return 2
	case 803, 804:
		return 3
	}
	return -1
}
