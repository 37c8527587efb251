package serve_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/platform"
	"github.com/skyjoin/skyjoin/internal/serve"
	"github.com/skyjoin/skyjoin/internal/store"
)

// numRecords is the size of the test data set; coprime with 37 so that
// occurred_at is a permutation of the insertion order.
const numRecords = 250

var (
	base      = time.Date(2026, 11, 5, 0, 0, 0, 0, time.UTC)
	users     = []string{"u0", "u1", "u2", "u3", "u4", "u5", "org/u6"}
	countries = []string{"Norway", "Japan", "Brazil", "United States"}
)

func ptr[T any](v T) *T { return &v }

// testRecords returns n records in insertion order. occurred_at is not in
// insertion order, so that the time filters and order are told apart; some
// event ids hold a '/'.
func testRecords(n int) []event.Record {
	recs := make([]event.Record, n)
	for i := range recs {
		id := fmt.Sprintf("evt-%04d", i)
		if i%50 == 7 {
			id = "src/" + id
		}
		at := base.Add(time.Duration((i*37)%n) * 10 * time.Minute)
		recs[i] = event.Record{
			Event: event.Event{
				EventID:    id,
				EventType:  event.TypeUserObserved,
				OccurredAt: at,
				User: event.User{
					ID: users[i%len(users)], Username: "user" + fmt.Sprint(i%len(users)),
					Name: "Ola Nordmann", FirstName: "Ola", LastName: "Nordmann",
					Email: "ola.nordmann@example.com", Gender: "male", Nationality: "NO",
				},
				Location: event.Location{
					Latitude: ptr(59.91 + float64(i)/1000), Longitude: ptr(10.75),
					City: "Oslo", State: "Oslo", Country: countries[i%len(countries)],
					Postcode: "0150", Timezone: "+1:00",
				},
				Attributes: map[string]string{"source": "test"},
			},
			Weather: &event.Weather{
				ObservedAt: at.Truncate(15 * time.Minute), TemperatureC: -2.5, ApparentTemperature: -6,
				RelativeHumidity: 81, PrecipitationMM: 0.2, WindSpeedKMH: 14.4, WindDirectionDeg: 220,
				WeatherCode: 71, Condition: "Slight snow fall", Provider: "sim",
				CellLatitude: 59.9, CellLongitude: 10.75,
			},
			Enrichment:  event.Enrichment{Status: event.StatusEnriched},
			IngestedAt:  at.Add(time.Second),
			ProcessedAt: at.Add(2 * time.Second),
		}
	}
	return recs
}

// syncBuffer is a log sink safe for concurrent handlers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type testEnv struct {
	h    *serve.Handler
	recs []event.Record // as stored, in insertion (Seq) order
	logs *syncBuffer
}

// matches is the reference for List's filters, as the store documents
// them; country is matched without regard to case, as the DuckDB store does.
func matches(q store.Query, r *event.Record) bool {
	return (q.UserID == "" || r.User.ID == q.UserID) &&
		(q.Country == "" || strings.EqualFold(r.Location.Country, q.Country)) &&
		(q.Since.IsZero() || !r.OccurredAt.Before(q.Since)) &&
		(q.Until.IsZero() || r.OccurredAt.Before(q.Until))
}

func newEnv(tb testing.TB, opts serve.Options) *testEnv {
	tb.Helper()
	r, stored := openStore(tb, testRecords(numRecords))
	logs := &syncBuffer{}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return &testEnv{h: serve.New(r, opts), recs: stored, logs: logs}
}

// newProbeEnv is a Handler for the probes, which do not read the store.
func newProbeEnv(opts serve.Options) *testEnv {
	logs := &syncBuffer{}
	opts.Logger = slog.New(slog.NewJSONHandler(logs, nil))
	return &testEnv{h: serve.New(failingReader{errors.New("probes do not read the store")}, opts), logs: logs}
}

type answer struct {
	status int
	header http.Header
	body   []byte
}

func do(tb testing.TB, h http.Handler, method, target string) answer {
	tb.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, target, nil))
	res := rec.Result()
	body, _ := io.ReadAll(res.Body)
	if ct := res.Header.Get("Content-Type"); ct != "application/json" && method != http.MethodHead {
		tb.Errorf("%s %s: Content-Type %q, want application/json", method, target, ct)
	}
	return answer{status: res.StatusCode, header: res.Header, body: body}
}

func decode[T any](tb testing.TB, a answer) T {
	tb.Helper()
	var v T
	if err := json.Unmarshal(a.body, &v); err != nil {
		tb.Fatalf("decode %T from %s: %v", v, a.body, err)
	}
	return v
}

type errorBody struct {
	Error struct {
		Code    int             `json:"code"`
		Status  string          `json:"status"`
		Message string          `json:"message"`
		Details json.RawMessage `json:"details"`
	} `json:"error"`
}

// wantError checks a is an ErrorBody answer of the given status whose
// message holds every string in contains.
func wantError(tb testing.TB, a answer, status int, contains ...string) errorBody {
	tb.Helper()
	if a.status != status {
		tb.Fatalf("status %d, want %d; body %s", a.status, status, a.body)
	}
	e := decode[errorBody](tb, a)
	if e.Error.Code != status || e.Error.Status == "" || e.Error.Message == "" {
		tb.Errorf("error body %s: want code %d, a status name and a message", a.body, status)
	}
	for _, s := range contains {
		if !strings.Contains(e.Error.Message, s) {
			tb.Errorf("error message %q does not contain %q", e.Error.Message, s)
		}
	}
	return e
}

func ids(recs []event.Record) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = r.EventID
	}
	return out
}

// expect lists recs matching q in the order List gives them.
func expect(recs []event.Record, q store.Query) []string {
	var out []string
	for i := range recs {
		if matches(q, &recs[i]) {
			out = append(out, recs[i].EventID)
		}
	}
	if !q.Ascending {
		slices.Reverse(out)
	}
	return out
}

func TestListFilters(t *testing.T) {
	env := newEnv(t, serve.Options{})
	at := func(h int) time.Time { return base.Add(time.Duration(h) * time.Hour) }
	tests := []struct {
		name  string
		query string
		want  store.Query // filters and order the answer must match
	}{
		{"none", "", store.Query{}},
		{"user", "user_id=u3", store.Query{UserID: "u3"}},
		{"user with slash", "user_id=org%2Fu6", store.Query{UserID: "org/u6"}},
		{"unknown user", "user_id=nobody", store.Query{UserID: "nobody"}},
		{"country", "country=Japan", store.Query{Country: "Japan"}},
		{"country with space", "country=United+States", store.Query{Country: "United States"}},
		{"country ignores case", "country=japan", store.Query{Country: "japan"}},
		{"since", "since=2026-11-05T20:00:00Z", store.Query{Since: at(20)}},
		{"since is inclusive", "since=2026-11-05T20:10:00Z", store.Query{Since: at(20).Add(10 * time.Minute)}},
		{"until is exclusive", "until=2026-11-05T20:10:00Z", store.Query{Until: at(20).Add(10 * time.Minute)}},
		{"since and until", "since=2026-11-05T10:00:00Z&until=2026-11-05T14:00:00Z", store.Query{Since: at(10), Until: at(14)}},
		{"since date", "since=2026-11-06", store.Query{Since: at(24)}},
		{"until date", "until=2026-11-06", store.Query{Until: at(24)}},
		{"offset encoded", "since=2026-11-05T22:00:00%2B02:00", store.Query{Since: at(20)}},
		{"offset plus as space", "since=2026-11-05T22:00:00+02:00", store.Query{Since: at(20)}},
		{"fractional seconds", "until=2026-11-05T20:00:00.000001Z", store.Query{Until: at(20).Add(time.Microsecond)}},
		{"asc", "order=asc", store.Query{Ascending: true}},
		{"desc", "order=desc", store.Query{}},
		{"all filters asc", "user_id=u1&country=Brazil&since=2026-11-05T06:00:00Z&until=2026-11-06T12:00:00Z&order=asc",
			store.Query{UserID: "u1", Country: "Brazil", Since: at(6), Until: at(36), Ascending: true}},
		{"empty cursor is the first page", "cursor=&user_id=u2", store.Query{UserID: "u2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := do(t, env.h, http.MethodGet, "/v1/events?limit=1000&"+tt.query)
			if a.status != http.StatusOK {
				t.Fatalf("status %d: %s", a.status, a.body)
			}
			got := decode[serve.ListResponse](t, a)
			want := expect(env.recs, tt.want)
			if !slices.Equal(ids(got.Events), want) {
				t.Errorf("events %v,\nwant %v", ids(got.Events), want)
			}
			if got.Count != len(got.Events) || got.NextCursor != "" || a.header.Get("Link") != "" {
				t.Errorf("count %d of %d events, next_cursor %q, Link %q; want count = events and no next page",
					got.Count, len(got.Events), got.NextCursor, a.header.Get("Link"))
			}
		})
	}
	// The filters above must not be vacuous.
	if n := len(expect(env.recs, store.Query{UserID: "u1", Country: "Brazil", Since: at(6), Until: at(36)})); n == 0 || n == numRecords {
		t.Errorf("combined filter selects %d of %d records; the test data does not exercise it", n, numRecords)
	}
}

func TestListFullRecord(t *testing.T) {
	env := newEnv(t, serve.Options{})
	a := do(t, env.h, http.MethodGet, "/v1/events?limit=1000&order=asc")
	got := decode[serve.ListResponse](t, a)
	if !reflect.DeepEqual(got.Events, env.recs) {
		t.Errorf("records do not survive the API unchanged; first got %+v\nwant %+v", got.Events[0], env.recs[0])
	}
	raw := decode[map[string]json.RawMessage](t, a)
	for _, k := range []string{"events", "count"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("answer lacks %q: %s", k, a.body[:min(len(a.body), 200)])
		}
	}
}

func TestListEmpty(t *testing.T) {
	env := newEnv(t, serve.Options{})
	a := do(t, env.h, http.MethodGet, "/v1/events?user_id=nobody")
	if a.status != http.StatusOK {
		t.Fatalf("status %d: %s", a.status, a.body)
	}
	if want := `{"events":[],"count":0}`; strings.TrimSpace(string(a.body)) != want {
		t.Errorf("body %s, want %s", a.body, want)
	}
}

func TestListPagination(t *testing.T) {
	env := newEnv(t, serve.Options{})
	tests := []struct {
		query string
		q     store.Query
	}{
		{"limit=1&order=asc&user_id=u3", store.Query{Ascending: true, UserID: "u3"}},
		{"limit=1&country=Japan", store.Query{Country: "Japan"}},
		{"limit=7&order=asc", store.Query{Ascending: true}},
		{"limit=7&order=desc", store.Query{}},
		{"", store.Query{}}, // default limit 100
		{"limit=3&user_id=u4&country=Norway", store.Query{UserID: "u4", Country: "Norway"}},
		{"limit=10&order=asc&since=2026-11-05T12:00:00Z&until=2026-11-06T00:00:00Z",
			store.Query{Ascending: true, Since: base.Add(12 * time.Hour), Until: base.Add(24 * time.Hour)}},
		{"limit=1000", store.Query{}},
	}
	for _, tt := range tests {
		for _, via := range []string{"next_cursor", "Link"} {
			t.Run(tt.query+"/"+via, func(t *testing.T) {
				want := expect(env.recs, tt.q)
				limit := 100
				if v := must(url.ParseQuery(tt.query)).Get("limit"); v != "" {
					fmt.Sscan(v, &limit)
				}
				var got []string
				target := "/v1/events?" + tt.query
				for pages := 0; ; pages++ {
					if pages > numRecords+1 {
						t.Fatalf("more than %d pages", pages)
					}
					a := do(t, env.h, http.MethodGet, target)
					if a.status != http.StatusOK {
						t.Fatalf("GET %s: status %d: %s", target, a.status, a.body)
					}
					page := decode[serve.ListResponse](t, a)
					if page.Count != len(page.Events) || page.Count > limit {
						t.Fatalf("GET %s: count %d, %d events, limit %d", target, page.Count, len(page.Events), limit)
					}
					got = append(got, ids(page.Events)...)
					link := a.header.Get("Link")
					if (page.NextCursor == "") != (link == "") {
						t.Fatalf("GET %s: next_cursor %q but Link %q", target, page.NextCursor, link)
					}
					if page.NextCursor == "" {
						break
					}
					if via == "Link" {
						target = parseNextLink(t, link)
						// The next link keeps every parameter of the request.
						nq, q := must(url.ParseQuery(strings.SplitN(target, "?", 2)[1])), must(url.ParseQuery(tt.query))
						nq.Del("cursor")
						if !reflect.DeepEqual(nq, q) && !(len(nq) == 0 && len(q) == 0) {
							t.Fatalf("next link %s drops or changes parameters of %q", link, tt.query)
						}
					} else {
						target = "/v1/events?" + tt.query + "&cursor=" + url.QueryEscape(page.NextCursor)
					}
				}
				if !slices.Equal(got, want) {
					t.Errorf("walked %d events %v,\nwant %d %v", len(got), got, len(want), want)
				}
			})
		}
	}
}

// parseNextLink returns the target of a Link: <...>; rel="next" header.
func parseNextLink(tb testing.TB, link string) string {
	tb.Helper()
	target, rel, ok := strings.Cut(link, ">; ")
	if !ok || !strings.HasPrefix(target, "</v1/events?") || rel != `rel="next"` {
		tb.Fatalf("Link %q, want </v1/events?...>; rel=\"next\"", link)
	}
	return target[1:]
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestListLimit(t *testing.T) {
	env := newEnv(t, serve.Options{})
	tests := []struct {
		limit  string
		status int
		events int
	}{
		{"", 200, 100}, // parameter absent: the default
		{"1", 200, 1},
		{"100", 200, 100},
		{"1000", 200, numRecords},
		{"0", 400, 0},
		{"1001", 400, 0},
		{"-1", 400, 0},
		{"abc", 400, 0},
		{"1.5", 400, 0},
		{"99999999999999999999", 400, 0},
	}
	for _, tt := range tests {
		t.Run("limit="+tt.limit, func(t *testing.T) {
			target := "/v1/events"
			if tt.limit != "" {
				target += "?limit=" + tt.limit
			}
			a := do(t, env.h, http.MethodGet, target)
			if tt.status != 200 {
				wantError(t, a, tt.status, "limit: must be an integer from 1 to 1000")
				return
			}
			if a.status != 200 {
				t.Fatalf("status %d: %s", a.status, a.body)
			}
			if got := decode[serve.ListResponse](t, a); len(got.Events) != tt.events || got.Count != tt.events {
				t.Errorf("%d events, count %d; want %d", len(got.Events), got.Count, tt.events)
			}
		})
	}
}

func TestListBadParameters(t *testing.T) {
	env := newEnv(t, serve.Options{})
	tests := []struct {
		name   string
		query  string
		fields []string // in the details, in this order
		msg    string   // part of the message
	}{
		{"since not a time", "since=yesterday", []string{"since"}, `since: must be an RFC 3339 timestamp`},
		{"since without zone", "since=2026-11-05T10:00:00", []string{"since"}, `got "2026-11-05T10:00:00"`},
		{"since bad date", "since=2026-13-01", []string{"since"}, `since: must be an RFC 3339 timestamp`},
		{"until not a time", "until=1730800000", []string{"until"}, `until: must be an RFC 3339 timestamp`},
		{"since equals until", "since=2026-11-05&until=2026-11-05T00:00:00Z", []string{"since"}, "since: must be before until"},
		{"since after until", "since=2026-11-06&until=2026-11-05", []string{"since"}, "since: must be before until"},
		{"order", "order=newest", []string{"order"}, `order: must be asc or desc, got "newest"`},
		{"order case", "order=ASC", []string{"order"}, "order: must be asc or desc"},
		{"unknown parameter", "userid=u1", []string{"userid"}, "userid: unknown parameter; known: city, condition, country, cursor"},
		{"unknown beside known", "user_id=u1&contry=Japan", []string{"contry"}, "contry: unknown parameter"},
		{"repeated", "user_id=u1&user_id=u2", []string{"user_id"}, "user_id: must be given at most once"},
		{"empty user", "user_id=", []string{"user_id"}, "user_id: must not be empty"},
		{"empty country", "country=", []string{"country"}, "country: must not be empty"},
		{"empty since", "since=", []string{"since"}, "since: must not be empty"},
		{"several at once", "limit=0&order=up&since=x", []string{"limit", "order", "since"}, "limit: must be"},
		{"bad cursor", "cursor=not-a-cursor", []string{}, "cursor: must be a next_cursor"},
		{"cursor of the other order", "cursor=djE6YToxMA&order=desc", []string{}, "cursor:"}, // v1:a:10
		{"bad query string", "user_id=%zz", []string{}, "query string:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := do(t, env.h, http.MethodGet, "/v1/events?"+tt.query)
			e := wantError(t, a, http.StatusBadRequest, tt.msg)
			if e.Error.Status != "INVALID_ARGUMENT" {
				t.Errorf("status name %q, want INVALID_ARGUMENT", e.Error.Status)
			}
			if len(tt.fields) == 0 {
				return
			}
			var details []serve.ParamError
			if err := json.Unmarshal(e.Error.Details, &details); err != nil {
				t.Fatalf("details %s: %v", e.Error.Details, err)
			}
			var fields []string
			for _, d := range details {
				fields = append(fields, d.Field)
				if d.Message == "" {
					t.Errorf("detail for %s has no message", d.Field)
				}
			}
			if !slices.Equal(fields, tt.fields) {
				t.Errorf("details name %v, want %v", fields, tt.fields)
			}
		})
	}
}

func TestGetEvent(t *testing.T) {
	env := newEnv(t, serve.Options{})
	byID := map[string]event.Record{}
	for _, r := range env.recs {
		byID[r.EventID] = r
	}
	tests := []struct {
		path   string
		wantID string // "" for 404
	}{
		{"/v1/events/evt-0000", "evt-0000"},
		{"/v1/events/evt-0249", "evt-0249"},
		{"/v1/events/src/evt-0057", "src/evt-0057"},
		{"/v1/events/src%2Fevt-0107", "src/evt-0107"},
		{"/v1/events/evt-9999", ""},
		{"/v1/events/src", ""},
		{"/v1/events/", ""},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			a := do(t, env.h, http.MethodGet, tt.path)
			if tt.wantID == "" {
				wantError(t, a, http.StatusNotFound)
				return
			}
			if a.status != http.StatusOK {
				t.Fatalf("status %d: %s", a.status, a.body)
			}
			if got := decode[event.Record](t, a); !reflect.DeepEqual(got, byID[tt.wantID]) {
				t.Errorf("got %+v\nwant %+v", got, byID[tt.wantID])
			}
		})
	}
	wantError(t, do(t, env.h, http.MethodGet, "/v1/events/evt-9999"), http.StatusNotFound, `"evt-9999"`)
}

func TestLatestForUser(t *testing.T) {
	env := newEnv(t, serve.Options{})
	latest := map[string]event.Record{}
	for _, r := range env.recs {
		if l, ok := latest[r.User.ID]; !ok || r.OccurredAt.After(l.OccurredAt) {
			latest[r.User.ID] = r
		}
	}
	tests := []struct {
		path string
		user string // "" for 404
	}{
		{"/v1/users/u0/latest", "u0"},
		{"/v1/users/u5/latest", "u5"},
		{"/v1/users/org%2Fu6/latest", "org/u6"},
		{"/v1/users/nobody/latest", ""},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			a := do(t, env.h, http.MethodGet, tt.path)
			if tt.user == "" {
				wantError(t, a, http.StatusNotFound, `"nobody"`)
				return
			}
			if a.status != http.StatusOK {
				t.Fatalf("status %d: %s", a.status, a.body)
			}
			got := decode[event.Record](t, a)
			if want := latest[tt.user]; got.EventID != want.EventID || !got.OccurredAt.Equal(want.OccurredAt) {
				t.Errorf("got %s at %s, want %s at %s", got.EventID, got.OccurredAt, want.EventID, want.OccurredAt)
			}
		})
	}
}

// failingReader fails every read with err, or, if err is nil, waits for
// the context and returns its error.
type failingReader struct{ err error }

func (f failingReader) fail(ctx context.Context) error {
	if f.err != nil {
		return f.err
	}
	<-ctx.Done()
	return fmt.Errorf("query: %w", ctx.Err())
}

func (f failingReader) List(ctx context.Context, q store.Query) (store.Page, error) {
	return store.Page{}, f.fail(ctx)
}

func (f failingReader) Get(ctx context.Context, id string) (event.Record, error) {
	return event.Record{}, f.fail(ctx)
}

func (f failingReader) LatestForUser(ctx context.Context, id string) (event.Record, error) {
	return event.Record{}, f.fail(ctx)
}

func TestStoreErrors(t *testing.T) {
	paths := []string{"/v1/events", "/v1/events/evt-0001", "/v1/users/u1/latest"}
	tests := []struct {
		name     string
		err      error
		timeout  time.Duration
		status   int
		logLevel string // the one log line's level; "" for none at warn or above
	}{
		{"store failure", errors.New("duckdb: disk on fire"), 0, http.StatusInternalServerError, "ERROR"},
		{"wrapped not found", fmt.Errorf("get: %w", store.ErrNotFound), 0, http.StatusNotFound, ""},
		{"timeout", nil, time.Millisecond, http.StatusGatewayTimeout, "WARN"},
		{"over the cost cap", fmt.Errorf("query: %w: it would bill more than max_bytes_billed=10", store.ErrTooCostly), 0, http.StatusBadRequest, ""},
	}
	for _, tt := range tests {
		for _, path := range paths {
			t.Run(tt.name+path, func(t *testing.T) {
				logs := &syncBuffer{}
				h := serve.New(failingReader{tt.err}, serve.Options{
					Logger:       slog.New(slog.NewJSONHandler(logs, nil)),
					QueryTimeout: tt.timeout,
				})
				a := do(t, h, http.MethodGet, path)
				wantError(t, a, tt.status)
				if strings.Contains(string(a.body), "disk on fire") {
					t.Errorf("answer leaks the store error: %s", a.body)
				}
				lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
				if tt.logLevel == "" {
					if logs.String() != "" {
						t.Errorf("logged %s, want nothing", logs)
					}
					return
				}
				if len(lines) != 1 || !strings.Contains(lines[0], `"level":"`+tt.logLevel+`"`) {
					t.Fatalf("log %q, want one %s line", lines, tt.logLevel)
				}
				if tt.err != nil && !strings.Contains(lines[0], "disk on fire") {
					t.Errorf("log line %s lacks the store error", lines[0])
				}
			})
		}
	}
}

func TestClientGone(t *testing.T) {
	logs := &syncBuffer{}
	h := serve.New(failingReader{}, serve.Options{Logger: slog.New(slog.NewJSONHandler(logs, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v1/events", nil).WithContext(ctx))
	if rec.Code == http.StatusOK || rec.Code == http.StatusInternalServerError {
		t.Errorf("status %d for a canceled request", rec.Code)
	}
	if logs.String() != "" {
		t.Errorf("logged %s for a client that went away, want nothing at info or above", logs)
	}
}

func TestHealthz(t *testing.T) {
	env := newProbeEnv(serve.Options{Checks: []serve.Check{{Name: "store", Check: func(context.Context) error { return errors.New("down") }}}})
	for _, draining := range []bool{false, true} {
		env.h.SetDraining(draining)
		a := do(t, env.h, http.MethodGet, "/healthz")
		if a.status != http.StatusOK || strings.TrimSpace(string(a.body)) != `{"status":"ok"}` {
			t.Errorf("draining %v: /healthz %d %s, want 200 {\"status\":\"ok\"}", draining, a.status, a.body)
		}
	}
}

type readyAnswer struct {
	Status string              `json:"status"`
	Checks []serve.CheckResult `json:"checks"`
}

func TestReadyz(t *testing.T) {
	ok := func(ctx context.Context) error {
		if _, has := ctx.Deadline(); !has {
			return errors.New("check called without a deadline")
		}
		return nil
	}
	failing := func(context.Context) error { return errors.New("connection refused to 10.0.0.7") }
	panicking := func(context.Context) error { panic("10.0.0.7 exploded") }
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	hanging := func(context.Context) error { <-release; return errors.New("10.0.0.7 too late") } // ignores its context
	tests := []struct {
		name     string
		checks   []serve.Check
		draining bool
		status   int
		failing  []string // named in the message
		results  []serve.CheckResult
		timeout  time.Duration // ReadyTimeout; 0 for the default
	}{
		{"no checks", nil, false, 200, nil, []serve.CheckResult{}, 0},
		{"all pass", []serve.Check{{"broker", ok}, {"store", ok}}, false, 200, nil,
			[]serve.CheckResult{{"broker", "ok"}, {"store", "ok"}}, 0},
		{"one fails", []serve.Check{{"broker", ok}, {"store", failing}}, false, 503, []string{"store"},
			[]serve.CheckResult{{"broker", "ok"}, {"store", "failing"}}, 0},
		{"two fail", []serve.Check{{"broker", failing}, {"store", failing}, {"weather", ok}}, false, 503, []string{"broker, store"},
			[]serve.CheckResult{{"broker", "failing"}, {"store", "failing"}, {"weather", "ok"}}, 0},
		{"panics", []serve.Check{{"broker", panicking}, {"store", ok}}, false, 503, []string{"broker"},
			[]serve.CheckResult{{"broker", "failing"}, {"store", "ok"}}, 0},
		{"ignores its deadline", []serve.Check{{"store", hanging}}, false, 503, []string{"store"},
			[]serve.CheckResult{{"store", "failing"}}, time.Millisecond},
		{"draining", []serve.Check{{"broker", ok}}, true, 503, []string{"draining"}, nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newProbeEnv(serve.Options{Checks: tt.checks, ReadyTimeout: tt.timeout})
			env.h.SetDraining(tt.draining)
			a := do(t, env.h, http.MethodGet, "/readyz")
			if tt.status == 200 {
				if a.status != 200 {
					t.Fatalf("status %d: %s", a.status, a.body)
				}
				got := decode[readyAnswer](t, a)
				if got.Status != "ok" || !reflect.DeepEqual(got.Checks, tt.results) {
					t.Errorf("got %+v, want status ok and %+v", got, tt.results)
				}
				return
			}
			e := wantError(t, a, tt.status, tt.failing...)
			if strings.Contains(string(a.body), "10.0.0.7") {
				t.Errorf("answer leaks a check's error: %s", a.body)
			}
			if tt.results != nil {
				var got readyAnswer
				if err := json.Unmarshal(e.Error.Details, &got); err != nil || !reflect.DeepEqual(got.Checks, tt.results) {
					t.Errorf("details %s, want checks %+v (%v)", e.Error.Details, tt.results, err)
				}
				nFailing := 0
				for _, r := range tt.results {
					if r.Status == "failing" {
						nFailing++
					}
				}
				if n := strings.Count(env.logs.String(), `"msg":"readiness check failed"`); n != nFailing {
					t.Errorf("check errors logged %d times: %s", n, env.logs)
				}
			}
		})
	}

	t.Run("drain and undrain", func(t *testing.T) {
		env := newProbeEnv(serve.Options{Checks: []serve.Check{{"store", ok}}})
		for _, step := range []struct {
			draining bool
			status   int
		}{{false, 200}, {true, 503}, {false, 200}} {
			env.h.SetDraining(step.draining)
			if a := do(t, env.h, http.MethodGet, "/readyz"); a.status != step.status || env.h.Draining() != step.draining {
				t.Errorf("draining %v: status %d, want %d", step.draining, a.status, step.status)
			}
		}
	})
}

func TestRouting(t *testing.T) {
	env := newEnv(t, serve.Options{})
	t.Run("alone", func(t *testing.T) {
		tests := []struct {
			method, path string
			status       int
			contains     string
		}{
			{http.MethodPost, "/v1/events", http.StatusMethodNotAllowed, "allowed: GET, HEAD"},
			{http.MethodDelete, "/v1/events/evt-0001", http.StatusMethodNotAllowed, "DELETE"},
			{http.MethodGet, "/v1/users/u1", http.StatusNotFound, "no route for GET /v1/users/u1"},
			{http.MethodGet, "/v2/events", http.StatusNotFound, "no route"},
		}
		for _, tt := range tests {
			a := do(t, env.h, tt.method, tt.path)
			wantError(t, a, tt.status, tt.contains)
		}
	})
	t.Run("beside ingest", func(t *testing.T) {
		mux := http.NewServeMux()
		mux.HandleFunc("POST /v1/events", func(w http.ResponseWriter, r *http.Request) {
			platform.WriteJSON(w, http.StatusAccepted, map[string]int{"accepted": 1})
		})
		env.h.Register(mux)
		h := serve.JSONErrors(mux)
		if a := do(t, h, http.MethodPost, "/v1/events"); a.status != http.StatusAccepted {
			t.Errorf("POST /v1/events: %d %s, want ingest's 202", a.status, a.body)
		}
		if a := do(t, h, http.MethodGet, "/v1/events?limit=2"); a.status != http.StatusOK {
			t.Errorf("GET /v1/events: %d %s", a.status, a.body)
		}
		a := do(t, h, http.MethodPut, "/v1/events")
		wantError(t, a, http.StatusMethodNotAllowed, "PUT")
		if allow := a.header.Get("Allow"); !strings.Contains(allow, "GET") || !strings.Contains(allow, "POST") {
			t.Errorf("Allow %q, want GET and POST", allow)
		}
	})
}

func TestOptionsValidate(t *testing.T) {
	bad := serve.Options{QueryTimeout: -1, ReadyTimeout: -1, Checks: []serve.Check{{}}}
	err := bad.Validate()
	for _, s := range []string{"query-timeout", "ready-timeout", "checks[0]: name", "check func"} {
		if err == nil || !strings.Contains(err.Error(), s) {
			t.Errorf("Validate() = %v, want it to name %q", err, s)
		}
	}
	if err := (&serve.Options{}).Validate(); err != nil {
		t.Errorf("zero Options: %v", err)
	}
}

// staticReader answers every List with the same page, to measure the
// handler and the JSON encoding alone.
type staticReader struct {
	failingReader
	page store.Page
}

func (s staticReader) List(context.Context, store.Query) (store.Page, error) { return s.page, nil }

// BenchmarkList measures GET /v1/events?limit=100 through the Handler, on
// the DuckDB store holding 1000 records and on a reader that returns a
// ready page (handler, query parsing and JSON encoding only).
func BenchmarkList(b *testing.B) {
	r, stored := openStore(b, testRecords(1000))
	readers := []struct {
		name string
		r    store.Reader
	}{
		{"duckdb", r},
		{"handler-only", staticReader{page: store.Page{Records: stored[:100], NextCursor: "djE6ZDo5MDE"}}},
	}
	for _, rd := range readers {
		b.Run(rd.name, func(b *testing.B) {
			h := serve.New(rd.r, serve.Options{Logger: platform.Discard})
			req := httptest.NewRequest(http.MethodGet, "/v1/events?limit=100", nil)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != http.StatusOK {
				b.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
			b.SetBytes(int64(rec.Body.Len()))
			b.ReportAllocs()
			for b.Loop() {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
			}
		})
	}
}

// plainReader is a Reader without its EncodedReader methods.
type plainReader struct{ r store.Reader }

func (p plainReader) List(ctx context.Context, q store.Query) (store.Page, error) {
	return p.r.List(ctx, q)
}
func (p plainReader) Get(ctx context.Context, id string) (event.Record, error) {
	return p.r.Get(ctx, id)
}
func (p plainReader) LatestForUser(ctx context.Context, id string) (event.Record, error) {
	return p.r.LatestForUser(ctx, id)
}

// TestEncodedReads: a store that answers with its records' JSON
// (store.EncodedReader; the DuckDB store's row store keeps them so) gets
// the same answers, byte for byte and header for header, as through its
// Reader methods: pages of a user's records (the row store's) and of
// others, their cursors and Link headers, single records, a user's latest,
// and what is not found.
func TestEncodedReads(t *testing.T) {
	r, stored := openStore(t, testRecords(numRecords))
	if _, ok := r.(store.EncodedReader); !ok {
		t.Fatalf("the DuckDB store (%T) is not a store.EncodedReader", r)
	}
	enc := serve.New(r, serve.Options{Logger: platform.Discard})
	plain := serve.New(plainReader{r}, serve.Options{Logger: platform.Discard})
	user := stored[len(stored)-1].User.ID
	targets := []string{
		"/v1/events?limit=3",
		"/v1/events?limit=1000",
		"/v1/events?user_id=" + url.QueryEscape(user),
		"/v1/events?user_id=" + url.QueryEscape(user) + "&limit=1&order=asc",
		"/v1/events?user_id=nobody",
		"/v1/events?user_id=" + url.QueryEscape(user) + "&country=" + url.QueryEscape(stored[len(stored)-1].Location.Country),
		"/v1/events/" + url.PathEscape(stored[0].EventID),
		"/v1/events/" + url.PathEscape(stored[len(stored)-1].EventID),
		"/v1/events/no-such-event",
		"/v1/users/" + url.PathEscape(user) + "/latest",
		"/v1/users/" + url.PathEscape(stored[0].User.ID) + "/latest",
		"/v1/users/nobody/latest",
	}
	for len(targets) > 0 {
		target := targets[0]
		targets = targets[1:]
		got, want := do(t, enc, http.MethodGet, target), do(t, plain, http.MethodGet, target)
		if got.status != want.status || string(got.body) != string(want.body) {
			t.Fatalf("GET %s: encoded %d %s\nplain %d %s", target, got.status, got.body, want.status, want.body)
		}
		for _, h := range []string{"Link", "Content-Type", "Content-Length"} {
			if got.header.Get(h) != want.header.Get(h) {
				t.Errorf("GET %s: %s %q, want %q", target, h, got.header.Get(h), want.header.Get(h))
			}
		}
		// Follow a user's pages to the end.
		if link := got.header.Get("Link"); strings.Contains(target, "user_id="+url.QueryEscape(user)) && link != "" {
			next := strings.TrimPrefix(strings.SplitN(link, ">", 2)[0], "<")
			targets = append(targets, next)
		}
	}
}
