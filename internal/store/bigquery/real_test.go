package bigquery

import (
	"errors"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/store"
	"github.com/skyjoin/skyjoin/internal/store/storetest"
)

// TestRealProject runs migrate, writes and reads back through the real
// BigQuery APIs. It runs only when SKYJOIN_GCP_PROJECT is set, with
// Application Default Credentials; SKYJOIN_BQ_DATASET (default
// skyjoin_test, created if missing) and SKYJOIN_BQ_LOCATION (default EU)
// choose where. It creates a table and view of its own and deletes them.
// See docs/gcp.md.
func TestRealProject(t *testing.T) {
	cfg, ctx := realTable(t, "events_test", 400*24*time.Hour)
	if changes, err := Migrate(ctx, cfg, MigrateOptions{}); err != nil || len(changes) != 0 {
		t.Fatalf("second migrate: %q, %v; want no changes", changes, err)
	}

	s, err := Open(ctx, cfg, slog.New(slog.NewTextHandler(os.Stderr, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// Dated from now: the table keeps its partitions for the retention of
	// cfg (400 days by default), so rows with fixed old dates would one day
	// land in expired partitions and be dropped.
	recs := datedFromNow(roundTripRecords(), time.Now())
	if err := s.Write(ctx, recs); err != nil {
		t.Fatal(err)
	}
	// A redelivery: the view still shows one copy of each.
	if err := s.Write(ctx, recs[:10]); err != nil {
		t.Fatal(err)
	}
	for _, want := range recs {
		got, err := s.Get(ctx, want.EventID)
		if err != nil {
			t.Fatalf("Get(%s): %v", want.EventID, err)
		}
		if d := storetest.Diff(want, got); d != "" {
			t.Errorf("%s: %s", want.EventID, d)
		}
	}
	seen := map[string]bool{}
	q := store.Query{Limit: 7}
	for {
		p, err := s.List(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range p.Records {
			if seen[r.EventID] {
				t.Errorf("%s listed twice", r.EventID)
			}
			seen[r.EventID] = true
		}
		if p.NextCursor == "" {
			break
		}
		q.Cursor = p.NextCursor
	}
	if len(seen) != len(recs) {
		t.Errorf("listed %d records, want %d", len(seen), len(recs))
	}
	want := recs[0]
	if p, err := s.List(ctx, store.Query{UserID: want.User.ID, Country: want.Location.Country, Since: want.OccurredAt, Until: want.OccurredAt.Add(time.Second)}); err != nil || len(p.Records) == 0 {
		t.Errorf("List(filters of %s): %d records, %v", want.EventID, len(p.Records), err)
	}
	if _, err := s.LatestForUser(ctx, want.User.ID); err != nil {
		t.Errorf("LatestForUser: %v", err)
	}
	for _, id := range []string{"missing", "' OR 1=1 --"} {
		if _, err := s.Get(ctx, id); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Get(%q): %v, want ErrNotFound", id, err)
		}
	}
	rows, err := s.Stats(ctx, store.StatsQuery{GroupBy: store.GroupByCountry})
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, r := range rows {
		n += r.Count
	}
	if n != int64(len(recs)) {
		t.Errorf("Stats counted %d records, want %d", n, len(recs))
	}

	// Erasure right after the write (rows written through the Storage
	// Write API moments ago): every copy of the user goes, the rest stays.
	victim := recs[0].User.ID
	copies := 0
	for i, r := range recs {
		if r.User.ID == victim {
			copies++
			if i < 10 {
				copies++ // written twice above
			}
		}
	}
	if deleted, err := s.DeleteUsers(ctx, []string{victim}); err != nil || deleted != int64(copies) {
		t.Errorf("DeleteUsers = %d, %v; want %d rows", deleted, err, copies)
	}
	if _, err := s.LatestForUser(ctx, victim); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("LatestForUser after the erasure: %v", err)
	}
	// A row BigQuery itself refuses comes back as a row error.
	bad := rowErrorRecords(time.Now())
	err = s.Write(ctx, bad)
	var rowErrs *RowErrors
	if !errors.As(err, &rowErrs) || len(rowErrs.Rows) != 1 || rowErrs.Rows[0].Index != 1 {
		t.Errorf("Write(out-of-range timestamp): %v, want a row error for record 1", err)
	}
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// datedFromNow moves every timestamp of recs by the same amount, so that the
// first record's occurred_at is an hour before now (truncated to the
// second, so that the records keep their sub-second parts).
func datedFromNow(recs []event.Record, now time.Time) []event.Record {
	shift := now.Add(-time.Hour).Truncate(time.Second).Sub(recs[0].OccurredAt.Truncate(time.Second))
	for i := range recs {
		r := &recs[i]
		r.OccurredAt = r.OccurredAt.Add(shift)
		r.IngestedAt = r.IngestedAt.Add(shift)
		r.ProcessedAt = r.ProcessedAt.Add(shift)
		if r.Weather != nil {
			w := *r.Weather
			w.ObservedAt = w.ObservedAt.Add(shift)
			r.Weather = &w
		}
	}
	return recs
}

// rowErrorRecords are the records of TestRealProject's row error: the
// first valid and, as every row the test writes, dated from now (the
// table keeps 400 days), the second dated before TIMESTAMP's range, which
// BigQuery refuses.
func rowErrorRecords(now time.Time) []event.Record {
	bad := datedFromNow(storetest.Records(99, 2), now)
	bad[1].OccurredAt = time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC).Add(-time.Hour)
	return bad
}

func TestRowErrorRecords(t *testing.T) {
	now := time.Date(2031, 5, 6, 7, 8, 9, 0, time.UTC)
	bad := rowErrorRecords(now)
	if age := now.Sub(bad[0].OccurredAt); age < 0 || age > 24*time.Hour {
		t.Errorf("the valid record occurred %s before now, want within a day", age)
	}
	if !bad[1].OccurredAt.Before(time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("the refused record occurred at %s, want before TIMESTAMP's range", bad[1].OccurredAt)
	}
}

func TestDatedFromNow(t *testing.T) {
	now := time.Date(2031, 5, 6, 7, 8, 9, 0, time.UTC)
	recs := datedFromNow(roundTripRecords(), now)
	for _, r := range recs {
		if age := now.Sub(r.OccurredAt); age < 0 || age > 24*time.Hour {
			t.Errorf("%s occurred %s before now", r.EventID, age)
		}
		if r.ProcessedAt.Before(r.IngestedAt) {
			t.Errorf("%s: processed before ingested", r.EventID)
		}
	}
}
