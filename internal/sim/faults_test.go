package sim_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/skyjoin/skyjoin/internal/sim"
)

func TestOpenMeteoInject(t *testing.T) {
	const three = "/v1/forecast?latitude=52.52,48.85,40.42&longitude=13.41,2.35,-3.7&current=temperature_2m"
	tests := []struct {
		name       string
		fault      sim.Fault
		target     string
		wantStatus int
		wantHeader string // Retry-After
		wantIDs    []int  // location_id of each member (-1: none)
		wantBody   string
	}{
		{"none", sim.Fault{}, three, 200, "", []int{-1, 1, 2}, ""},
		{"503", sim.Fault{Status: 503}, three, 503, "", nil, `"error":true`},
		{"429 default Retry-After", sim.Fault{Status: 429}, three, 429, "60", nil, "Minutely API request limit"},
		{"429 Retry-After", sim.Fault{Status: 429, RetryAfter: 5 * time.Second}, three, 429, "5", nil, ""},
		{"malformed", sim.Fault{Malformed: true}, three, 200, "", nil, `"time":"2026-`},
		{"missing", sim.Fault{Missing: []int{1}}, three, 200, "", []int{-1, 2}, ""},
		{"reversed", sim.Fault{Reverse: true}, three, 200, "", []int{2, 1, -1}, ""},
		{"archive", sim.Fault{}, "/v1/archive?latitude=52.52&longitude=13.41&hourly=temperature_2m&start_date=1999-01-01&end_date=1999-01-02", 200, "", []int{-1}, `"1999-01-02T23:00"`},
		{"archive without dates", sim.Fault{}, "/v1/archive?latitude=52.52&longitude=13.41&hourly=temperature_2m", 400, "", nil, "start_date"},
		{"archive with current", sim.Fault{}, "/v1/archive?latitude=52.52&longitude=13.41&current=temperature_2m&start_date=1999-01-01&end_date=1999-01-01", 400, "", nil, "not supported"},
		{"archive in the future", sim.Fault{}, "/v1/archive?latitude=52.52&longitude=13.41&hourly=temperature_2m&start_date=2026-11-01&end_date=2026-12-30", 400, "", nil, "out of allowed range"},
		{"forecast too far back", sim.Fault{}, "/v1/forecast?latitude=52.52&longitude=13.41&hourly=temperature_2m&start_hour=2026-01-01T00:00&end_hour=2026-01-01T05:00", 400, "", nil, "out of allowed range"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := sim.New(sim.Options{Clock: clock, Users: 1, Inject: func(api string, r *http.Request) sim.Fault {
				if api != sim.APIOpenMeteo {
					t.Errorf("api %s", api)
				}
				return tt.fault
			}})
			rec := httptest.NewRecorder()
			s.OpenMeteo().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, tt.target, nil))
			if rec.Code != tt.wantStatus || rec.Header().Get("Retry-After") != tt.wantHeader || !strings.Contains(rec.Body.String(), tt.wantBody) {
				t.Fatalf("status %d, Retry-After %q, body %.300s", rec.Code, rec.Header().Get("Retry-After"), rec.Body.String())
			}
			if tt.wantIDs == nil {
				return
			}
			var members []struct {
				LocationID *int `json:"location_id"`
			}
			body := strings.TrimSpace(rec.Body.String())
			if !strings.HasPrefix(body, "[") {
				body = "[" + body + "]"
			}
			if err := json.Unmarshal([]byte(body), &members); err != nil {
				t.Fatal(err)
			}
			if len(members) != len(tt.wantIDs) {
				t.Fatalf("%d members, want %d", len(members), len(tt.wantIDs))
			}
			for i, m := range members {
				id := -1
				if m.LocationID != nil {
					id = *m.LocationID
				}
				if id != tt.wantIDs[i] {
					t.Errorf("member %d: location_id %d, want %d", i, id, tt.wantIDs[i])
				}
			}
		})
	}
}
