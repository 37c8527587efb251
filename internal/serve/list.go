package serve

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	json "github.com/goccy/go-json"

	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/platform"
	"github.com/skyjoin/skyjoin/internal/store"
)

// Query parameters. Each endpoint accepts the set listed for it below.
const (
	paramUserID    = "user_id"
	paramCountry   = "country"
	paramCity      = "city"
	paramEventType = "event_type"
	paramCondition = "condition"
	paramMinTemp   = "min_temp"
	paramMaxTemp   = "max_temp"
	paramSince     = "since"
	paramUntil     = "until"
	paramLimit     = "limit"
	paramCursor    = "cursor"
	paramOrder     = "order"
	paramGroupBy   = "group_by"
	paramBucket    = "bucket"
	paramAfter     = "after"
)

// filterParams select records, alike for every endpoint.
var filterParams = []string{paramCity, paramCondition, paramCountry, paramEventType, paramMaxTemp, paramMinTemp,
	paramSince, paramUntil, paramUserID}

// Parameters of each endpoint, sorted (they are listed in errors).
var (
	listParams   = sorted(filterParams, paramCursor, paramLimit, paramOrder)
	statsParams  = sorted(filterParams, paramBucket, paramGroupBy, paramLimit)
	streamParams = sorted(filterParams, paramAfter)
)

func sorted(a []string, more ...string) []string {
	out := append(slices.Clone(a), more...)
	slices.Sort(out)
	return out
}

// ParamError names one bad query parameter; a 400 answer lists them all in
// its details.
type ParamError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

func (e ParamError) Error() string { return e.Field + ": " + e.Message }

// ListResponse is the answer of GET /v1/events.
type ListResponse struct {
	Events []event.Record `json:"events"`
	// NextCursor continues the listing with the same parameters; absent
	// when there was nothing more at the time of the call.
	NextCursor string `json:"next_cursor,omitempty"`
	Count      int    `json:"count"`
}

// list answers GET /v1/events.
func (h *Handler) list(w http.ResponseWriter, r *http.Request) {
	values, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		platform.WriteError(w, http.StatusBadRequest, "query string: must be URL-encoded key=value pairs joined by '&'", nil)
		return
	}
	q, perrs := parseListQuery(values)
	if len(perrs) > 0 {
		writeParamErrors(w, perrs)
		return
	}
	bound := queryFingerprint(&q)
	if q.Cursor != "" {
		c, perr := unbindCursor(q.Cursor, bound)
		if perr != nil {
			writeParamErrors(w, []ParamError{*perr})
			return
		}
		q.Cursor = c
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.timeout)
	defer cancel()
	var (
		page    store.Page
		encoded store.EncodedPage
	)
	enc, isEnc := h.reader.(store.EncodedReader)
	if isEnc {
		encoded, err = enc.ListEncoded(ctx, q)
		page.NextCursor = encoded.NextCursor
	} else {
		page, err = h.reader.List(ctx, q)
	}
	if err != nil {
		h.readError(w, r, ctx, fmt.Errorf("list events: %w", err), "no events")
		return
	}
	if page.NextCursor != "" {
		page.NextCursor = bound + cursorSep + page.NextCursor
		next := url.Values{}
		for k, v := range values {
			if k != paramCursor {
				next[k] = v
			}
		}
		next.Set(paramCursor, page.NextCursor)
		w.Header().Set("Link", "<"+r.URL.EscapedPath()+"?"+next.Encode()+`>; rel="next"`)
	}
	if isEnc {
		platform.WriteJSONBytes(w, http.StatusOK, encodeListResponse(encoded.Records, page.NextCursor))
		return
	}
	resp := ListResponse{Events: page.Records, NextCursor: page.NextCursor, Count: len(page.Records)}
	if resp.Events == nil {
		resp.Events = []event.Record{}
	}
	platform.WriteJSON(w, http.StatusOK, &resp)
}

// encodeListResponse is the JSON of the ListResponse of records already
// encoded (each a JSON object), byte for byte what the encoding of the
// ListResponse of those records gives, with room for a newline after it.
func encodeListResponse(recs [][]byte, next string) []byte {
	n := len(`{"events":[],"next_cursor":"","count":}`) + 2*len(next) + 20 + len(recs)
	for _, r := range recs {
		n += len(r)
	}
	b := make([]byte, 0, n+1)
	b = append(b, `{"events":[`...)
	for i, r := range recs {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, r...)
	}
	b = append(b, ']')
	if next != "" {
		c, _ := json.Marshal(next) // a string always encodes
		b = append(b, `,"next_cursor":`...)
		b = append(b, c...)
	}
	b = append(b, `,"count":`...)
	b = strconv.AppendInt(b, int64(len(recs)), 10)
	return append(b, '}')
}

// params are the parsed query parameters of a request.
type params struct {
	q        store.Query // filters, and for GET /v1/events limit, cursor, order
	groupBy  string      // country, city, time or prop (store.GroupBy*)
	prop     []string    // the property path of group_by=prop.PATH
	bucket   time.Duration
	after    int64 // resume point of GET /v1/stream
	hasAfter bool
}

// parseListQuery turns the parameters of GET /v1/events into a store.Query,
// or lists every problem found.
func parseListQuery(values url.Values) (store.Query, []ParamError) {
	p, errs := parseParams(values, listParams)
	return p.q, errs
}

// maxTextParam bounds the text filters (city, condition, ...).
const maxTextParam = 256

// parseParams parses the parameters known lists, or lists every problem
// found. Every parameter may be given once; unknown parameters are errors,
// so that a typo does not widen the query. Empty values are errors too,
// except cursor= (the first page).
func parseParams(values url.Values, known []string) (params, []ParamError) {
	p := params{q: store.Query{Limit: store.DefaultLimit}}
	q := &p.q
	var errs []ParamError
	bad := func(field, format string, args ...any) {
		errs = append(errs, ParamError{Field: field, Message: fmt.Sprintf(format, args...)})
	}
	// Visit keys in a fixed order so that the answer is stable.
	keys := make([]string, 0, len(values))
	for k := range values {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var since, until time.Time
	for _, k := range keys {
		vs := values[k]
		if strings.HasPrefix(k, store.PropParamPrefix) && slices.Contains(known, paramUserID) {
			// A property filter: prop.PATH=[OP:]VALUE (every endpoint
			// that filters takes them).
			// Given more than once, each is a filter: prop.amount=gte:10&prop.amount=lt:100.
			for _, v := range vs {
				if len(q.Props) == store.MaxPropFilters {
					bad(printable(k), "at most %d property filters", store.MaxPropFilters)
					break
				}
				if !utf8.ValidString(v) || len(v) > maxTextParam {
					bad(printable(k), "must be valid UTF-8, at most %d bytes", maxTextParam)
					continue
				}
				f, err := store.ParsePropFilter(k, v)
				if err != nil {
					bad(printable(k), "%v (syntax: prop.NAME[.NAME...]=VALUE, =gt:N, =gte:N, =lt:N, =lte:N or =exists:)", err)
					continue
				}
				q.Props = append(q.Props, f)
			}
			continue
		}
		if !slices.Contains(known, k) {
			// printable quotes what is not valid UTF-8.
			bad(printable(k), "unknown parameter; known: %s", strings.Join(known, ", "))
			continue
		}
		if len(vs) > 1 {
			bad(k, "must be given at most once, got %d values", len(vs))
			continue
		}
		v := vs[0]
		if !utf8.ValidString(v) {
			bad(k, "is not valid UTF-8 once percent-decoded")
			continue
		}
		if v == "" && k != paramCursor {
			bad(k, "must not be empty (leave the parameter out to not filter)")
			continue
		}
		switch k {
		case paramUserID:
			q.UserID = v
		case paramCountry, paramCity, paramEventType, paramCondition:
			if len(v) > maxTextParam {
				bad(k, "must be at most %d bytes, got %d", maxTextParam, len(v))
				continue
			}
			switch k {
			case paramCountry:
				q.Country = v
			case paramCity:
				q.City = v
			case paramEventType:
				q.EventType = v
			case paramCondition:
				q.Condition = v
			}
		case paramMinTemp, paramMaxTemp:
			f, err := strconv.ParseFloat(v, 64)
			if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
				bad(k, "must be a number of degrees Celsius (e.g. -3.5), got %s", quoteValue(v))
				continue
			}
			if k == paramMinTemp {
				q.MinTemp = &f
			} else {
				q.MaxTemp = &f
			}
		case paramSince, paramUntil:
			t, ok := parseTime(v)
			if !ok {
				bad(k, "must be an RFC 3339 timestamp (2026-11-05T14:30:00Z) or a date (2026-11-05), got %s", quoteValue(v))
				continue
			}
			if k == paramSince {
				since, q.Since = t, t
			} else {
				until, q.Until = t, t
			}
		case paramLimit:
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > store.MaxLimit {
				bad(k, "must be an integer from 1 to %d, got %s", store.MaxLimit, quoteValue(v))
				continue
			}
			q.Limit = n
		case paramCursor:
			q.Cursor = v
		case paramOrder:
			switch v {
			case "desc":
				q.Ascending = false
			case "asc":
				q.Ascending = true
			default:
				bad(k, "must be asc or desc, got %s", quoteValue(v))
			}
		case paramGroupBy:
			switch v {
			case store.GroupByCountry, store.GroupByCity, store.GroupByTime:
				p.groupBy = v
			default:
				path, ok := strings.CutPrefix(v, store.PropParamPrefix)
				if !ok {
					bad(k, "must be country, city, time or prop.PATH (a property, e.g. prop.plan), got %s", quoteValue(v))
					continue
				}
				names, err := store.ParsePropPath(path)
				if err != nil {
					bad(k, "%v (group_by=prop.NAME[.NAME...])", err)
					continue
				}
				p.groupBy, p.prop = store.GroupByProp, names
			}
		case paramBucket:
			d, ok := parseBucket(v)
			if !ok {
				bad(k, "must be a whole number of seconds, minutes, hours or days from 1s to %s, such as 30s, 5m, 1h or 1d; got %s",
					maxBucketText, quoteValue(v))
				continue
			}
			p.bucket = d
		case paramAfter:
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				bad(k, "must be a record seq: an integer >= 0, got %s", quoteValue(v))
				continue
			}
			p.after, p.hasAfter = n, true
		}
	}
	if !since.IsZero() && !until.IsZero() && !since.Before(until) {
		bad(paramSince, "must be before until (since is inclusive, until exclusive), got since %s, until %s",
			since.Format(time.RFC3339Nano), until.Format(time.RFC3339Nano))
	}
	if q.MinTemp != nil && q.MaxTemp != nil && *q.MinTemp > *q.MaxTemp {
		bad(paramMinTemp, "must not be above max_temp (both are inclusive), got min_temp %v, max_temp %v", *q.MinTemp, *q.MaxTemp)
	}
	return p, errs
}

// Bounds of the bucket parameter.
const (
	maxBucket     = 366 * 24 * time.Hour
	maxBucketText = "366d"
)

// parseBucket accepts a Go duration of whole seconds (30s, 5m, 1h30m) or a
// number of days (1d, 7d), from 1s to maxBucket.
func parseBucket(v string) (time.Duration, bool) {
	var d time.Duration
	if days, ok := strings.CutSuffix(v, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n < 1 || n > 366 {
			return 0, false
		}
		d = time.Duration(n) * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(v); err != nil {
			return 0, false
		}
	}
	return d, d >= time.Second && d <= maxBucket && d%time.Second == 0
}

// writeParamErrors answers 400 naming every bad parameter.
func writeParamErrors(w http.ResponseWriter, errs []ParamError) {
	msg := make([]string, len(errs))
	for i, e := range errs {
		msg[i] = e.Error()
	}
	platform.WriteError(w, http.StatusBadRequest, strings.Join(msg, "; "), errs)
}

// parseTime accepts an RFC 3339 timestamp or a date YYYY-MM-DD (midnight
// UTC). An offset's '+' that arrived as a space (an unencoded '+' in a query
// string) is taken back as '+'.
func parseTime(s string) (time.Time, bool) {
	if len(s) == len(time.DateOnly) {
		t, err := time.Parse(time.DateOnly, s)
		return t, err == nil
	}
	if i := strings.LastIndexByte(s, ' '); i > len("2006-01-02T15:04:05")-1 {
		s = s[:i] + "+" + s[i+1:]
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	return t, err == nil
}

// quoteValue quotes a parameter value for an error message, cut to a
// readable length.
func quoteValue(v string) string {
	const max = 64
	if len(v) > max {
		return strconv.Quote(v[:max]) + "..."
	}
	return strconv.Quote(v)
}

// printable bounds an unknown parameter name echoed in an answer.
func printable(k string) string {
	const max = 64
	if len(k) > max {
		k = k[:max] + "..."
	}
	q := strconv.Quote(k)
	return q[1 : len(q)-1]
}

// A cursor is bound to its query: the store's cursor, prefixed by a digest
// of the filters and the order it was issued for, so that a cursor used
// with other filters is refused rather than continuing some other listing
// from a position that means nothing there. The page size may change.
const cursorSep = "."

// queryFingerprint is the digest of the filters and the order of q: 12
// base64url characters (72 bits). The case-insensitive filters count in
// lower case.
func queryFingerprint(q *store.Query) string {
	var b []byte
	add := func(name, v string) {
		b = append(b, name...)
		b = append(b, '=')
		b = strconv.AppendQuote(b, v)
		b = append(b, '&')
	}
	num := func(name string, f *float64) {
		if f != nil {
			add(name, strconv.FormatFloat(*f, 'g', -1, 64))
		}
	}
	at := func(name string, t time.Time) {
		if !t.IsZero() {
			add(name, t.UTC().Format(time.RFC3339Nano))
		}
	}
	add("v", "1")
	add(paramUserID, q.UserID)
	add(paramCountry, strings.ToLower(q.Country))
	add(paramCity, strings.ToLower(q.City))
	add(paramEventType, q.EventType)
	add(paramCondition, strings.ToLower(q.Condition))
	num(paramMinTemp, q.MinTemp)
	num(paramMaxTemp, q.MaxTemp)
	at(paramSince, q.Since)
	at(paramUntil, q.Until)
	add(paramOrder, strconv.FormatBool(q.Ascending))
	for i := range q.Props { // in the order parsed: sorted by name, then as given
		add(q.Props[i].Param())
	}
	sum := sha256.Sum256(b)
	return base64.RawURLEncoding.EncodeToString(sum[:9])
}

// unbindCursor checks a cursor against the query's fingerprint and
// returns the store's cursor within it.
func unbindCursor(c, fingerprint string) (string, *ParamError) {
	fp, inner, ok := strings.Cut(c, cursorSep)
	switch {
	case !ok || inner == "" || len(fp) != len(fingerprint):
		return "", &ParamError{Field: paramCursor, Message: "must be a next_cursor returned by this API for the same query"}
	case fp != fingerprint:
		return "", &ParamError{Field: paramCursor, Message: "was issued for another query: use it with the filters and the order it was issued for " +
			"(the limit may change), or leave it out to start again"}
	}
	return inner, nil
}
