package weather_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/skyjoin/skyjoin/internal/sim"
	"github.com/skyjoin/skyjoin/internal/weather"
	"github.com/skyjoin/skyjoin/internal/weather/openmeteo"
)

// simBench is a Service over the real Open-Meteo client and the simulator
// on loopback HTTP, with a fake clock.
func simBench(b testing.TB, clk *testClock, users int) (*weather.Service, *sim.Sim) {
	sm := sim.New(sim.Options{Clock: clk.Now, Users: users})
	srv := httptest.NewServer(sm.OpenMeteo())
	b.Cleanup(srv.Close)
	c, err := openmeteo.New(openmeteo.Config{BaseURL: srv.URL, Retries: -1, Clock: clk.Now})
	if err != nil {
		b.Fatal(err)
	}
	s := weather.NewService(c, weather.ServiceConfig{Clock: clk.Now, Sleep: clk.Sleep})
	b.Cleanup(func() { s.Close() })
	return s, sm
}

// cellRequests makes n requests in n distinct simulator cells (0.1 degree),
// a few points in each cell when per > 1.
func cellRequests(n, per int) []weather.Request {
	reqs := make([]weather.Request, 0, n*per)
	for i := range n {
		lat, lon := 30+float64(i/25)*0.3, -10+float64(i%25)*0.3
		for k := range per {
			reqs = append(reqs, weather.Request{Point: weather.Point{Lat: lat + 0.01 + float64(k)*0.013, Lon: lon + 0.01 + float64(k)*0.017}})
		}
	}
	return reqs
}

// BenchmarkLookupWarm500: a worker batch of 500 events in 50 cells, all in
// the cache, through the real client and the simulator (no HTTP at all).
func BenchmarkLookupWarm500(b *testing.B) {
	clk := newClock()
	s, sm := simBench(b, clk, 1)
	reqs := cellRequests(50, 10)
	mustOK(b, s.Lookup(context.Background(), reqs))
	start, simStart := s.Stats(), sm.Stats()
	b.ReportAllocs()
	for b.Loop() {
		s.Lookup(context.Background(), reqs)
	}
	st := s.Stats()
	b.ReportMetric(float64(sm.Stats().OpenMeteoRequests-simStart.OpenMeteoRequests)/float64(b.N), "http-requests/op")
	b.ReportMetric(float64(st.Hits-start.Hits)/float64(st.Requests-start.Requests), "hit-ratio")
	b.ReportMetric(float64(500*b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkLookupCold500: a batch of 500 events in 500 distinct cells, none
// cached (a new 15-minute slot each time), through the real client and the
// simulator over loopback HTTP: 5 requests of 100 locations.
func BenchmarkLookupCold500(b *testing.B) {
	clk := newClock()
	s, sm := simBench(b, clk, 1)
	reqs := cellRequests(500, 1)
	b.ReportAllocs()
	for b.Loop() {
		clk.Advance(weather.SlotDuration)
		mustOK(b, s.Lookup(context.Background(), reqs))
	}
	b.ReportMetric(float64(s.Stats().Calls)/float64(b.N), "calls/op")
	b.ReportMetric(float64(sm.Stats().OpenMeteoRequests)/float64(b.N), "http-requests/op")
	b.ReportMetric(float64(sm.Stats().OpenMeteoLocations)/float64(b.N), "locations/op")
	b.ReportMetric(float64(500*b.N)/b.Elapsed().Seconds(), "events/s")
}

// TestCallsPer1000Events measures a run of 100,000 events from the demo
// population (2,000 simulated users; each poll of the collector picks users
// at random, as randomuser without a seed), at three rates, through the real
// client and the simulator: provider calls and locations per 1,000 events,
// and the hit ratio. Calls follow the distinct (cell, slot) pairs, not the
// events. Run with -v to see the figures.
func TestCallsPer1000Events(t *testing.T) {
	const events = 100_000
	tests := []struct {
		name    string
		perPoll int           // users per collector poll = events per worker batch
		every   time.Duration // time between polls
	}{
		{"10x demo rate (1,000 users / 2 s)", 1000, 2 * time.Second},
		{"demo rate (100 users / 2 s, skyjoin up --demo)", 100, 2 * time.Second},
		{"1/10 demo rate (10 users / 2 s)", 10, 2 * time.Second},
	}
	var report strings.Builder
	fmt.Fprintf(&report, "\n%-48s %9s %8s %11s %11s %7s %9s %8s %10s %9s\n", "run of 100,000 events", "sim time", "slots",
		"cell-slots", "grid-slots", "calls", "calls/1k", "locs", "locs/1k", "hit ratio")
	for _, tt := range tests {
		clk := newClock()
		s, sm := simBench(t, clk, sim.DefaultUsers)
		users := sm.Users()
		r := rand.New(rand.NewPCG(1, 2))
		cellSlots, gridSlots, slots := map[string]bool{}, map[string]bool{}, map[int64]bool{}
		start := clk.Now()
		for done := 0; done < events; done += tt.perPoll {
			reqs := make([]weather.Request, min(tt.perPoll, events-done))
			slot := weather.Slot(clk.Now())
			slots[slot.Unix()] = true
			for i := range reqs {
				u := users[r.IntN(len(users))]
				reqs[i] = weather.Request{Point: weather.Point{Lat: u.Latitude, Lon: u.Longitude}, At: clk.Now()}
				g := s.GridPoint(reqs[i].Point)
				cl, cn := sim.Cell(g.Lat, g.Lon)
				cellSlots[fmt.Sprint(cl, cn, slot.Unix())] = true
				gridSlots[fmt.Sprint(g, slot.Unix())] = true
			}
			mustOK(t, s.Lookup(context.Background(), reqs))
			clk.Advance(tt.every)
		}
		st, ss := s.Stats(), sm.Stats()
		fmt.Fprintf(&report, "%-48s %9s %8d %11d %11d %7d %9.2f %8d %10.1f %9.4f\n", tt.name, clk.Now().Sub(start).Round(time.Second),
			len(slots), len(cellSlots), len(gridSlots), ss.OpenMeteoRequests, float64(ss.OpenMeteoRequests)*1000/events,
			ss.OpenMeteoLocations, float64(ss.OpenMeteoLocations)*1000/events, st.HitRatio())
		if st.Requests != events || st.Errors != 0 {
			t.Errorf("%s: stats %+v", tt.name, st)
		}
		// Locations asked: one per (cell, slot), plus the first sight of each
		// grid point (its cell is not known before the provider answers).
		if ss.OpenMeteoLocations > int64(len(cellSlots)+st.Cells) {
			t.Errorf("%s: %d locations asked for %d (cell, slot) pairs and %d grid points", tt.name, ss.OpenMeteoLocations, len(cellSlots), st.Cells)
		}
	}
	t.Log(report.String())
}
