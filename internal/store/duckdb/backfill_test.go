//go:build !noduckdb

package duckdb

import (
	"testing"
	"time"

	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/store/storetest"
)

func TestUnavailableAndUpdateWeather(t *testing.T) {
	s := openPath(t, tempPath(t))
	ctx := t.Context()
	recs := storetest.Records(7, 50)
	var unavailable []string
	for i := range recs {
		if i%3 == 0 {
			recs[i].Weather = nil
			recs[i].Enrichment = event.Enrichment{Status: event.StatusUnavailable, Error: "weather open-meteo: HTTP 503: down"}
			unavailable = append(unavailable, recs[i].EventID)
		} else if recs[i].Enrichment.Status == event.StatusUnavailable {
			recs[i].Enrichment = event.Enrichment{Status: event.StatusEnriched}
			if recs[i].Weather == nil {
				recs[i].Weather = &event.Weather{Provider: "x", ObservedAt: time.Unix(0, 0).UTC()}
			}
		}
	}
	if err := s.Write(ctx, recs); err != nil {
		t.Fatal(err)
	}

	// Pages of 5, in seq order, with a cursor.
	var got []event.Record
	var after int64
	for pages := 0; ; pages++ {
		page, next, err := s.Unavailable(ctx, 5, after)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, page...)
		if next == 0 {
			break
		}
		if next <= after || pages > 10 {
			t.Fatalf("cursor %d after %d", next, after)
		}
		after = next
	}
	if len(got) != len(unavailable) {
		t.Fatalf("%d unavailable records, want %d", len(got), len(unavailable))
	}
	for i, r := range got {
		if r.EventID != unavailable[i] || r.Enrichment.Status != event.StatusUnavailable {
			t.Errorf("record %d: %s %+v, want %s", i, r.EventID, r.Enrichment, unavailable[i])
		}
	}
	if _, _, err := s.Unavailable(ctx, 0, 0); err == nil {
		t.Error("limit 0 accepted")
	}

	// Backfill the first 4; one of them twice in the batch is harmless, and
	// an enriched record passed along is left alone.
	processed := time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC)
	w := event.Weather{ObservedAt: time.Date(2026, 11, 26, 6, 0, 0, 0, time.UTC), TemperatureC: 4.5, ApparentTemperature: 1.5,
		RelativeHumidity: 80, PrecipitationMM: 0.2, WindSpeedKMH: 11, WindDirectionDeg: 200, WeatherCode: 61,
		Condition: "Slight rain", Provider: "open-meteo", CellLatitude: 52.55, CellLongitude: 13.45}
	var upd []event.Record
	for _, r := range got[:4] {
		r.Weather = &w
		r.Enrichment = event.Enrichment{Status: event.StatusEnriched}
		r.ProcessedAt = processed
		r.User.Name = "not to be written"
		upd = append(upd, r)
	}
	enriched := recs[1]
	enriched.Weather = &w
	upd = append(upd, enriched)
	n, err := s.UpdateWeather(ctx, upd)
	if err != nil {
		t.Fatal(err)
	}
	if n != 4 {
		t.Errorf("%d updated, want 4", n)
	}
	for _, r := range got[:4] {
		after, err := s.Get(ctx, r.EventID)
		if err != nil {
			t.Fatal(err)
		}
		want := r
		want.Weather = &w
		want.Enrichment = event.Enrichment{Status: event.StatusEnriched}
		want.ProcessedAt = processed
		if d := storetest.Diff(want, after); d != "" {
			t.Errorf("%s: %s", r.EventID, d)
		}
	}
	if after, err := s.Get(ctx, enriched.EventID); err != nil || storetest.Diff(recs[1], after) != "" {
		t.Errorf("an enriched record was changed: %v %s", err, storetest.Diff(recs[1], after))
	}
	left, _, err := s.Unavailable(ctx, 100, 0)
	if err != nil || len(left) != len(unavailable)-4 {
		t.Errorf("%d left unavailable (%v), want %d", len(left), err, len(unavailable)-4)
	}
	if n, err := s.UpdateWeather(ctx, upd); err != nil || n != 0 {
		t.Errorf("second update: %d, %v", n, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateWeather(ctx, upd); err == nil {
		t.Error("update after close succeeded")
	}
}
