package bench

import (
	"strings"
	"testing"
)

// TestMemoryRow: the Markdown row of what held the memory puts each part
// in its column, the DuckDB tags largest first, and the rest as RSS less
// the parts.
func TestMemoryRow(t *testing.T) {
	const mib = 1 << 20
	m := &Memory{RSS: 900 * mib, GoHeapObjects: 200 * mib, GoHeapFree: 100 * mib, GoOther: 20 * mib}
	m.C = &CHeap{InUse: 300 * mib, Free: 50 * mib, Mmapped: 100 * mib}
	m.DuckDB = &DuckDB{Bytes: 256 * mib, ByTag: map[string]int64{"BASE_TABLE": 40 * mib, "IN_MEMORY_TABLE": 200 * mib, "ART_INDEX": 1 * mib, "HASH_TABLE": 15 * mib}}
	m.DuckDB.Allocator = &struct {
		Allocated int64 `json:"allocated_bytes"`
		Resident  int64 `json:"resident_bytes"`
	}{Allocated: 300 * mib, Resident: 360 * mib}
	m.DuckDB.IDIndexBytes = 30 * mib
	m.DuckDB.RowStoreBytes = 24 * mib
	got := memoryRow("saturation", m)
	// the rest: 900 - 200 - 100 - 20 - 300 - 60 - 30 - (300+100+50) = -260
	want := "| saturation | 900 | 200 | 100 | 20 | 300 | 256 (IN_MEMORY_TABLE 200, BASE_TABLE 40, HASH_TABLE 15) | 60 | 30 | 450 (row store 24) | -260 |\n"
	if got != want {
		t.Errorf("memoryRow =\n%s want\n%s", got, want)
	}
	r := Result{Ingest: []IngestResult{{BatchSize: 1000, RSS: PhaseRSS{PeakMB: 900, AtPeak: m}}}}
	if md := r.Markdown(); !strings.Contains(md, "| ingest, batches of 1000 | 900 |") || !strings.Contains(md, memoryHeader) {
		t.Errorf("Markdown has no memory table:\n%s", md)
	}
}
