package serve

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/skyjoin/skyjoin/internal/platform"
	"github.com/skyjoin/skyjoin/internal/store"
)

// MaxStatsBuckets bounds the time buckets of one GET /v1/stats?group_by=time
// answer: (until, or now, - since) / bucket.
const MaxStatsBuckets = 10_000

// StatsResponse is the answer of GET /v1/stats.
type StatsResponse struct {
	// GroupBy is country, city, time or prop.PATH, as asked.
	GroupBy string `json:"group_by"`
	// Bucket is the bucket width in seconds, for group_by=time.
	BucketSeconds int64        `json:"bucket_seconds,omitempty"`
	Groups        []StatsGroup `json:"groups"`
	// Count is the number of groups; Total the number of records in them.
	Count int   `json:"count"`
	Total int64 `json:"total"`
	// Truncated is true when there were more groups than limit: the
	// answer holds the largest ones, and Total counts only their records.
	Truncated bool `json:"truncated"`
}

// StatsGroup is one group of a StatsResponse (see store.StatsRow).
type StatsGroup struct {
	// Key is the country, the city, the bucket start (RFC 3339), or the
	// property's value as text (store.PropText).
	Key string `json:"key"`
	// NoValue marks the group of group_by=prop.PATH whose records do not
	// have the property, or have null, an object or an array there.
	NoValue bool `json:"no_value,omitempty"`
	// Country of a city group.
	Country string `json:"country,omitempty"`
	// Bucket is the start of a time bucket.
	Bucket      *time.Time `json:"bucket,omitempty"`
	Count       int64      `json:"count"`
	WithWeather int64      `json:"with_weather"`
	AvgTempC    *float64   `json:"avg_temp_c"`
	MinTempC    *float64   `json:"min_temp_c"`
	MaxTempC    *float64   `json:"max_temp_c"`
	// Conditions maps each weather condition to its share of with_weather.
	Conditions map[string]float64 `json:"conditions"`
}

// stats answers GET /v1/stats.
func (h *Handler) stats(w http.ResponseWriter, r *http.Request) {
	if h.agg == nil {
		platform.WriteError(w, http.StatusNotImplemented, "this store does not compute statistics", nil)
		return
	}
	values, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		platform.WriteError(w, http.StatusBadRequest, "query string: must be URL-encoded key=value pairs joined by '&'", nil)
		return
	}
	p, perrs := parseParams(values, statsParams)
	limit := p.q.Limit // the groups' bound; records are not limited
	p.q.Limit = 0
	bad := func(field, format string, args ...any) {
		perrs = append(perrs, ParamError{Field: field, Message: fmt.Sprintf(format, args...)})
	}
	switch {
	case p.groupBy == "" && !values.Has(paramGroupBy):
		bad(paramGroupBy, "is required: country, city, time or prop.PATH")
	case p.groupBy == store.GroupByTime:
		switch {
		case p.bucket == 0 && !values.Has(paramBucket):
			bad(paramBucket, "is required with group_by=time, e.g. bucket=5m")
		case !values.Has(paramSince):
			bad(paramSince, "is required with group_by=time (at most %d buckets from since to until or now)", MaxStatsBuckets)
		case p.bucket > 0 && !p.q.Since.IsZero():
			end, endName := p.q.Until, "until"
			if end.IsZero() {
				end, endName = h.now(), "now"
			}
			if n := end.Sub(p.q.Since)/p.bucket + 1; n > MaxStatsBuckets {
				bad(paramBucket, "makes %d buckets from since to %s, more than %d: widen the bucket or narrow the window",
					n, endName, MaxStatsBuckets)
			}
		}
	case p.groupBy != "" && values.Has(paramBucket):
		bad(paramBucket, "is only for group_by=time")
	}
	// The groups of one answer are bounded: the largest limit of them.
	maxGroups := store.MaxStatsGroups
	if values.Has(paramLimit) {
		switch {
		case p.groupBy == store.GroupByTime:
			bad(paramLimit, "is not for group_by=time: since, until and bucket bound its buckets")
		case limit > store.MaxStatsGroups:
			bad(paramLimit, "must be an integer from 1 to %d, got %d", store.MaxStatsGroups, limit)
		default:
			maxGroups = limit
		}
	}
	// The cost of a read: its window is bounded (BigQuery scans a
	// partition a day of it; DuckDB every row in it).
	if max := h.maxStatsRange; max > 0 && len(perrs) == 0 {
		end, endName := p.q.Until, "until"
		if end.IsZero() {
			end, endName = h.now(), "now"
		}
		switch {
		case !values.Has(paramSince):
			bad(paramSince, "is required: statistics cover a window of at most %s from since to until or now", days(max))
		case end.Sub(p.q.Since) > max:
			bad(paramSince, "the window from since to %s is longer than %s, the most one answer covers: narrow it, or ask for several windows",
				endName, days(max))
		}
	}
	if len(perrs) > 0 {
		writeParamErrors(w, perrs)
		return
	}
	sq := store.StatsQuery{Query: p.q, GroupBy: p.groupBy, Prop: p.prop, Bucket: p.bucket}
	if sq.GroupBy != store.GroupByTime {
		// One more than the answer holds, to know whether groups were cut.
		sq.MaxGroups = maxGroups + 1
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.timeout)
	defer cancel()
	rows, err := h.agg.Stats(ctx, sq)
	if err != nil {
		h.readError(w, r, ctx, fmt.Errorf("stats by %s: %w", sq.GroupBy, err), "no statistics")
		return
	}
	resp := StatsResponse{GroupBy: values.Get(paramGroupBy), BucketSeconds: int64(sq.Bucket / time.Second), Groups: make([]StatsGroup, len(rows)), Count: len(rows)}
	if sq.MaxGroups > 0 && len(rows) > maxGroups {
		rows, resp.Truncated = rows[:maxGroups], true
		resp.Groups, resp.Count = resp.Groups[:maxGroups], maxGroups
	}
	for i, row := range rows {
		g := StatsGroup{Key: row.Key, NoValue: row.NoValue, Country: row.Country, Count: row.Count, WithWeather: row.WithWeather,
			AvgTempC: row.AvgTemp, MinTempC: row.MinTemp, MaxTempC: row.MaxTemp, Conditions: row.Conditions}
		if !row.Bucket.IsZero() {
			g.Bucket = &row.Bucket
		}
		if g.Conditions == nil {
			g.Conditions = map[string]float64{}
		}
		resp.Groups[i] = g
		resp.Total += row.Count
	}
	platform.WriteJSON(w, http.StatusOK, &resp)
}

// days writes a duration in whole days when it is one (31d), else as Go does.
func days(d time.Duration) string {
	if d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	}
	return d.String()
}
