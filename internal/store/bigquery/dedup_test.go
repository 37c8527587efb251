package bigquery

import (
	"testing"
	"time"

	"github.com/skyjoin/skyjoin/internal/store/bigquery/bqtest"
	"github.com/skyjoin/skyjoin/internal/store/storetest"
)

// TestDedupSQLOnWrittenRows writes records, some of them twice (a
// redelivery, enriched again later), through the Storage Write API fake,
// and runs the view's query (DedupSQL) on the rows the fake received: one
// row per event, the copy processed last.
func TestDedupSQLOnWrittenRows(t *testing.T) {
	fw := &bqtest.Write{}
	s := openFake(t, fw, nil, nil)
	recs := storetest.Records(7, 40)
	if err := s.Write(t.Context(), recs); err != nil {
		t.Fatal(err)
	}
	again := append(recs[:0:0], recs[:15]...)
	later := recs[0].ProcessedAt.Add(time.Minute)
	for i := range again {
		again[i].ProcessedAt = later
	}
	if err := s.Write(t.Context(), again); err != nil {
		t.Fatal(err)
	}
	if got := len(fw.Rows()); got != 55 {
		t.Fatalf("the fake holds %d rows, want 55 (40 + 15 copies)", got)
	}
	rows := bqtest.Query(t, fw.Rows(), func(table string) string { return DedupSQL(table) })
	if len(rows) != len(recs) {
		t.Fatalf("the view's query keeps %d rows, want %d", len(rows), len(recs))
	}
	seen := map[string]int64{}
	for _, r := range rows {
		id := r["event_id"].(string)
		if _, dup := seen[id]; dup {
			t.Fatalf("event %s twice through the view", id)
		}
		seen[id] = r["processed_at"].(int64)
	}
	for i, rec := range recs {
		want := rec.ProcessedAt.UnixMicro()
		if i < len(again) {
			want = later.UnixMicro()
		}
		if got, ok := seen[rec.EventID]; !ok || got != want {
			t.Errorf("event %s: processed_at %d through the view, want %d (the latest copy)", rec.EventID, got, want)
		}
	}
}
