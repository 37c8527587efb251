// Package openmeteo is a weather.Provider over the Open-Meteo forecast API
// (https://open-meteo.com/en/docs), or anything that speaks its wire format,
// such as the built-in simulator (package sim).
package openmeteo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/platform"
	"github.com/skyjoin/skyjoin/internal/retry"
	"github.com/skyjoin/skyjoin/internal/weather"
)

// ProviderName is the name the client puts on weather records.
const ProviderName = "open-meteo"

// DefaultBaseURL is the free API; the commercial one is
// https://customer-api.open-meteo.com (with an API key).
const DefaultBaseURL = "https://api.open-meteo.com"

// Variables are the weather variables the client asks for, current and hourly.
const Variables = "temperature_2m,relative_humidity_2m,apparent_temperature,precipitation,weather_code,wind_speed_10m,wind_direction_10m"

// localTime is the layout of Open-Meteo's times (local to the timezone
// parameter, GMT by default, no offset).
const localTime = "2006-01-02T15:04"

// DefaultArchiveURL is the free historical weather API (ERA5 and others,
// from 1940 to a few days ago).
const DefaultArchiveURL = "https://archive-api.open-meteo.com"

// ForecastPastDays is how far back the forecast API serves past hours
// (past_days up to 92); Hourly asks the archive API for older hours.
const ForecastPastDays = 92

// Config configures a Client. The zero value talks to the free API.
type Config struct {
	BaseURL string // default DefaultBaseURL; the client requests {BaseURL}/v1/forecast
	// ArchiveURL serves hours older than ForecastPastDays ({ArchiveURL}/v1/archive).
	// Default: DefaultArchiveURL with the default BaseURL, else BaseURL itself
	// (a stand-in such as the simulator serves both paths).
	ArchiveURL   string
	APIKey       string           // sent as apikey= for the commercial API; never logged
	Clock        func() time.Time // decides forecast or archive for past hours; default time.Now
	MaxLocations int              // locations per HTTP request; default 100
	Concurrency  int              // HTTP requests in flight for one Current call; default 2
	Timeout      time.Duration    // per HTTP request; default 10s
	Retries      int              // retries of an HTTP request after a 5xx or network error (a longer Retry-After honoured up to retry.DefaultMaxHint); default 2, -1 for none
	RetryBackoff time.Duration    // ceiling of the first retry delay, doubled each time (full jitter); default 250ms
	HTTPClient   *http.Client     // default: a client with Timeout
}

// Validate reports every problem with the configuration.
func (c Config) Validate() error {
	var errs []error
	for _, u := range []struct{ name, v string }{{"base URL", c.BaseURL}, {"archive URL", c.ArchiveURL}} {
		if u.v == "" {
			continue
		}
		pu, err := url.Parse(u.v)
		if err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
			errs = append(errs, fmt.Errorf("open-meteo %s %q: want http(s)://host[/path]", u.name, u.v))
		}
	}
	if c.MaxLocations < 0 || c.MaxLocations > 1000 {
		errs = append(errs, fmt.Errorf("open-meteo max locations per request: %d, want 1..1000 (0 for the default 100)", c.MaxLocations))
	}
	if c.Concurrency < 0 {
		errs = append(errs, fmt.Errorf("open-meteo concurrency: %d, want >= 0", c.Concurrency))
	}
	if c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("open-meteo timeout: %s, want >= 0", c.Timeout))
	}
	if c.Retries < -1 {
		errs = append(errs, fmt.Errorf("open-meteo retries: %d, want >= -1", c.Retries))
	}
	if c.RetryBackoff < 0 {
		errs = append(errs, fmt.Errorf("open-meteo retry backoff: %s, want >= 0", c.RetryBackoff))
	}
	return errors.Join(errs...)
}

// Client is an Open-Meteo client. It is safe for concurrent use.
type Client struct {
	base    string
	archive string
	clock   func() time.Time
	key     string
	maxLoc  int
	conc    int
	retries int
	backoff time.Duration
	hc      *http.Client
}

var (
	_ weather.HistoryProvider = (*Client)(nil)
	_ weather.Batcher         = (*Client)(nil)
)

// New returns a Client.
func New(cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("open-meteo client: %w", err)
	}
	c := &Client{
		base: strings.TrimRight(cfg.BaseURL, "/"), key: cfg.APIKey, maxLoc: cfg.MaxLocations,
		conc: cfg.Concurrency, retries: cfg.Retries, backoff: cfg.RetryBackoff, hc: cfg.HTTPClient,
	}
	if c.base == "" {
		c.base = DefaultBaseURL
	}
	c.archive = strings.TrimRight(cfg.ArchiveURL, "/")
	if c.archive == "" {
		c.archive = c.base
		if c.base == DefaultBaseURL {
			c.archive = DefaultArchiveURL
		}
	}
	c.clock = cfg.Clock
	if c.clock == nil {
		c.clock = time.Now
	}
	if c.maxLoc == 0 {
		c.maxLoc = 100
	}
	if c.conc == 0 {
		c.conc = 2
	}
	switch c.retries {
	case 0:
		c.retries = 2
	case -1:
		c.retries = 0
	}
	if c.backoff == 0 {
		c.backoff = 250 * time.Millisecond
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

// Name returns "open-meteo".
func (c *Client) Name() string { return ProviderName }

// APIError is an error answer of the API: HTTP 400 or 429 with
// {"error":true,"reason":"..."}, or any other non-200 status.
type APIError = weather.APIError

// IsRetryable reports whether err is an APIError that is retryable, or a
// network error (anything but an APIError or a context error).
func IsRetryable(err error) bool {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Retryable()
	}
	return err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)
}

// MaxPointsPerCall returns MaxLocations: the Service then makes one HTTP
// request per Current or Hourly call.
func (c *Client) MaxPointsPerCall() int { return c.maxLoc }

// Current returns the current conditions at each point, in order, asking
// for up to MaxLocations points per HTTP request. An answer that lacks some
// locations (told by location_id) gives the others and a
// *weather.PartialError; members out of order are put back in order.
func (c *Client) Current(ctx context.Context, points []weather.Point) ([]event.Weather, error) {
	out := make([]event.Weather, len(points))
	err := c.chunked(ctx, points, func(ctx context.Context, start int, chunk []weather.Point) ([]int, error) {
		q := c.query(chunk)
		q.Set("current", Variables)
		locs, missing, err := c.get(ctx, c.base+"/v1/forecast", q, len(chunk))
		if err != nil {
			return nil, err
		}
		for i, l := range locs {
			if l == nil {
				continue
			}
			w, err := l.current()
			if err != nil {
				return nil, fmt.Errorf("open-meteo current: location %d: %w", start+i, err)
			}
			out[start+i] = w
		}
		return missing, nil
	})
	if err != nil {
		var pe *weather.PartialError
		if errors.As(err, &pe) {
			return out, err
		}
		return nil, err
	}
	return out, nil
}

// Hourly returns, for each point, the hourly values from the hour of start
// to the hour of end (both included, UTC): out[i][h] is point i at hour h,
// with ObservedAt the start of that hour. Hours within ForecastPastDays come
// from the forecast API (start_hour/end_hour), older ones from the archive
// API (start_date/end_date, cut to the hours asked). Partial answers as
// Current.
func (c *Client) Hourly(ctx context.Context, points []weather.Point, start, end time.Time) ([][]event.Weather, error) {
	start, end = start.UTC().Truncate(time.Hour), end.UTC().Truncate(time.Hour)
	if end.Before(start) {
		return nil, fmt.Errorf("open-meteo hourly: end %s before start %s", end.Format(localTime), start.Format(localTime))
	}
	archive := start.Before(c.clock().UTC().Truncate(24*time.Hour).AddDate(0, 0, -ForecastPastDays))
	out := make([][]event.Weather, len(points))
	err := c.chunked(ctx, points, func(ctx context.Context, first int, chunk []weather.Point) ([]int, error) {
		q := c.query(chunk)
		q.Set("hourly", Variables)
		u := c.base + "/v1/forecast"
		if archive {
			u = c.archive + "/v1/archive"
			q.Set("start_date", start.Format(time.DateOnly))
			q.Set("end_date", end.Format(time.DateOnly))
		} else {
			q.Set("start_hour", start.Format(localTime))
			q.Set("end_hour", end.Format(localTime))
		}
		locs, missing, err := c.get(ctx, u, q, len(chunk))
		if err != nil {
			return nil, err
		}
		for i, l := range locs {
			if l == nil {
				continue
			}
			ws, err := l.hourly()
			if err != nil {
				return nil, fmt.Errorf("open-meteo hourly: location %d: %w", first+i, err)
			}
			if archive { // whole days: keep the hours asked
				kept := ws[:0]
				for _, w := range ws {
					if !w.ObservedAt.Before(start) && !w.ObservedAt.After(end) {
						kept = append(kept, w)
					}
				}
				ws = kept
			}
			out[first+i] = ws
		}
		return missing, nil
	})
	if err != nil {
		var pe *weather.PartialError
		if errors.As(err, &pe) {
			return out, err
		}
		return nil, err
	}
	return out, nil
}

// chunked runs fn over chunks of points of at most maxLoc, conc at a time,
// and returns the first error, or a *weather.PartialError naming the points
// (indices into points) the answers lacked.
func (c *Client) chunked(ctx context.Context, points []weather.Point, fn func(ctx context.Context, start int, chunk []weather.Point) ([]int, error)) error {
	if len(points) == 0 {
		return nil
	}
	partial := func(missing []int) error {
		if len(missing) == 0 {
			return nil
		}
		sort.Ints(missing)
		return &weather.PartialError{Missing: missing, Asked: len(points)}
	}
	if len(points) <= c.maxLoc {
		missing, err := fn(ctx, 0, points)
		if err != nil {
			return err
		}
		return partial(missing)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sem := make(chan struct{}, c.conc)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	var missing []int
	for start := 0; start < len(points); start += c.maxLoc {
		end := min(start+c.maxLoc, len(points))
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			m, err := fn(ctx, start, points[start:end])
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if first == nil {
					first = err
					cancel()
				}
				return
			}
			for _, i := range m {
				missing = append(missing, start+i)
			}
		})
	}
	wg.Wait()
	if first == nil && ctx.Err() != nil {
		first = fmt.Errorf("open-meteo: %w", ctx.Err())
	}
	if first != nil {
		return first
	}
	return partial(missing)
}

func formatCoord(v float64) string {
	return strconv.FormatFloat(math.Round(v*1e6)/1e6, 'f', -1, 64)
}

func (c *Client) query(points []weather.Point) url.Values {
	lats := make([]string, len(points))
	lons := make([]string, len(points))
	for i, p := range points {
		lats[i], lons[i] = formatCoord(p.Lat), formatCoord(p.Lon)
	}
	q := url.Values{}
	q.Set("latitude", strings.Join(lats, ","))
	q.Set("longitude", strings.Join(lons, ","))
	q.Set("timezone", "GMT")
	if c.key != "" {
		q.Set("apikey", c.key)
	}
	return q
}

// get fetches u?q, retrying 5xx and network errors (Config.Retries, with
// retry.Call's backoff), and decodes the answer for n locations (see
// decodeLocations).
func (c *Client) get(ctx context.Context, u string, q url.Values, n int) ([]*location, []int, error) {
	u += "?" + q.Encode()
	var body []byte
	err := retry.Call(ctx, retry.Policy{
		Backoff:     retry.Backoff{Initial: c.backoff},
		MaxAttempts: c.retries + 1,
		Retryable: func(err error) bool {
			ae, ok := errors.AsType[*APIError](err)
			return !ok || ae.StatusCode >= 500
		},
	}, func(ctx context.Context) (err error) {
		body, err = c.do(ctx, u)
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	return decodeLocations(body, n)
}

func (c *Client) do(ctx context.Context, u string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("open-meteo: build request: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		// The URL may hold the API key: report the error without it.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("open-meteo: GET %s: %w", req.URL.Path, platform.RedactError(err, c.key))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("open-meteo: read answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, apiError(resp, body, c.key)
	}
	return body, nil
}

// apiError reads an error answer; its Reason, copied into records, is
// capped and never holds the API key (weather.Reason).
func apiError(resp *http.Response, body []byte, key string) *APIError {
	e := &APIError{Provider: ProviderName, StatusCode: resp.StatusCode}
	var eb struct {
		Error  bool   `json:"error"`
		Reason string `json:"reason"`
	}
	_ = json.Unmarshal(body, &eb)
	e.Reason = weather.Reason(eb.Reason, body, resp.StatusCode, key)
	e.Wait, _ = retry.ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	return e
}

// location is one element of an answer; unknown fields are ignored.
type location struct {
	LocationID       *int    `json:"location_id"`
	Latitude         float64 `json:"latitude"`
	Longitude        float64 `json:"longitude"`
	UTCOffsetSeconds int     `json:"utc_offset_seconds"`
	Current          *values `json:"current"`
	Hourly           *series `json:"hourly"`
}

type values struct {
	Time                string  `json:"time"`
	Interval            int     `json:"interval"`
	Temperature         float64 `json:"temperature_2m"`
	RelativeHumidity    float64 `json:"relative_humidity_2m"`
	ApparentTemperature float64 `json:"apparent_temperature"`
	Precipitation       float64 `json:"precipitation"`
	WeatherCode         int     `json:"weather_code"`
	WindSpeed           float64 `json:"wind_speed_10m"`
	WindDirection       float64 `json:"wind_direction_10m"`
}

type series struct {
	Time                []string   `json:"time"`
	Temperature         []*float64 `json:"temperature_2m"`
	RelativeHumidity    []*float64 `json:"relative_humidity_2m"`
	ApparentTemperature []*float64 `json:"apparent_temperature"`
	Precipitation       []*float64 `json:"precipitation"`
	WeatherCode         []*float64 `json:"weather_code"`
	WindSpeed           []*float64 `json:"wind_speed_10m"`
	WindDirection       []*float64 `json:"wind_direction_10m"`
}

// decodeLocations decodes an answer for n locations: a JSON array, or one
// object when n is 1. It returns the locations in the order asked, nil for
// those the answer lacks, with their indices.
//
// Open-Meteo answers in the order asked, and elements after the first may
// carry a location_id. When they do, the elements are placed by it (an
// element without one is location 0), so members out of order are put back
// and missing ones are named; without ids the order is relied on, and an
// answer of the wrong length is an error.
func decodeLocations(body []byte, n int) ([]*location, []int, error) {
	b := bytes.TrimSpace(body)
	var locs []location
	switch {
	case len(b) > 0 && b[0] == '[':
		if err := json.Unmarshal(b, &locs); err != nil {
			return nil, nil, fmt.Errorf("open-meteo: decode answer: %w", err)
		}
	case len(b) > 0 && b[0] == '{':
		var l location
		if err := json.Unmarshal(b, &l); err != nil {
			return nil, nil, fmt.Errorf("open-meteo: decode answer: %w", err)
		}
		locs = []location{l}
	default:
		return nil, nil, errors.New("open-meteo: decode answer: not a JSON object or array")
	}
	noID := 0
	for _, l := range locs {
		if l.LocationID == nil {
			noID++
		}
	}
	if len(locs) > n || (noID == len(locs) && len(locs) != n) {
		return nil, nil, fmt.Errorf("open-meteo: answer has %d locations for %d asked", len(locs), n)
	}
	out := make([]*location, n)
	for i := range locs {
		l := &locs[i]
		id := i
		switch {
		case l.LocationID != nil:
			id = *l.LocationID
		case noID == len(locs): // no ids at all: rely on the order
		case noID == 1:
			id = 0
		default:
			return nil, nil, fmt.Errorf("open-meteo: answer element %d has no location_id, nor have %d others", i, noID-1)
		}
		if id < 0 || id >= n || out[id] != nil {
			return nil, nil, fmt.Errorf("open-meteo: answer element %d has location_id %d (duplicate or out of 0..%d)", i, id, n-1)
		}
		out[id] = l
	}
	var missing []int
	for i, l := range out {
		if l == nil {
			missing = append(missing, i)
		}
	}
	return out, missing, nil
}

func (l *location) parseTime(s string) (time.Time, error) {
	t, err := time.Parse(localTime, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("time %q: want %s", s, localTime)
	}
	return t.Add(-time.Duration(l.UTCOffsetSeconds) * time.Second).UTC(), nil
}

func (l *location) base() event.Weather {
	return event.Weather{Provider: ProviderName, CellLatitude: l.Latitude, CellLongitude: l.Longitude}
}

func (l *location) current() (event.Weather, error) {
	v := l.Current
	if v == nil {
		return event.Weather{}, errors.New("no current block")
	}
	t, err := l.parseTime(v.Time)
	if err != nil {
		return event.Weather{}, fmt.Errorf("current: %w", err)
	}
	w := l.base()
	w.ObservedAt = t
	w.TemperatureC = v.Temperature
	w.ApparentTemperature = v.ApparentTemperature
	w.RelativeHumidity = v.RelativeHumidity
	w.PrecipitationMM = v.Precipitation
	w.WeatherCode = v.WeatherCode
	w.Condition = weather.Condition(v.WeatherCode)
	w.WindSpeedKMH = v.WindSpeed
	w.WindDirectionDeg = v.WindDirection
	return w, nil
}

func (l *location) hourly() ([]event.Weather, error) {
	s := l.Hourly
	if s == nil {
		return nil, errors.New("no hourly block")
	}
	n := len(s.Time)
	cols := []struct {
		name string
		v    []*float64
	}{
		{"temperature_2m", s.Temperature}, {"relative_humidity_2m", s.RelativeHumidity},
		{"apparent_temperature", s.ApparentTemperature}, {"precipitation", s.Precipitation},
		{"weather_code", s.WeatherCode}, {"wind_speed_10m", s.WindSpeed}, {"wind_direction_10m", s.WindDirection},
	}
	for _, c := range cols {
		if len(c.v) != n {
			return nil, fmt.Errorf("hourly.%s has %d values for %d times", c.name, len(c.v), n)
		}
	}
	at := func(v []*float64, i int) float64 {
		if v[i] == nil {
			return math.NaN()
		}
		return *v[i]
	}
	out := make([]event.Weather, n)
	for i := range n {
		t, err := l.parseTime(s.Time[i])
		if err != nil {
			return nil, fmt.Errorf("hourly: %w", err)
		}
		w := l.base()
		w.ObservedAt = t
		w.TemperatureC = at(s.Temperature, i)
		w.RelativeHumidity = at(s.RelativeHumidity, i)
		w.ApparentTemperature = at(s.ApparentTemperature, i)
		w.PrecipitationMM = at(s.Precipitation, i)
		w.WindSpeedKMH = at(s.WindSpeed, i)
		w.WindDirectionDeg = at(s.WindDirection, i)
		if s.WeatherCode[i] == nil {
			w.WeatherCode = -1
		} else {
			w.WeatherCode = int(*s.WeatherCode[i])
		}
		w.Condition = weather.Condition(w.WeatherCode)
		out[i] = w
	}
	return out, nil
}
