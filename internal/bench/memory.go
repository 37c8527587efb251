package bench

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// Memory is what held the server's memory at one moment: its GET
// /debug/pipeline?memory=1 answer, with the RSS of that moment.
type Memory struct {
	RSS           int64   `json:"rss_bytes"`
	GoHeapObjects int64   `json:"go_heap_objects_bytes"`
	GoHeapFree    int64   `json:"go_heap_free_bytes"`
	GoOther       int64   `json:"go_other_bytes"`
	GoHeapGoal    int64   `json:"go_heap_goal_bytes"`
	C             *CHeap  `json:"c_heap,omitempty"`
	DuckDB        *DuckDB `json:"duckdb,omitempty"`
}

// CHeap is the C allocator's memory (mallinfo2).
type CHeap struct {
	InUse   int64 `json:"in_use_bytes"`
	Free    int64 `json:"free_bytes"`
	Mmapped int64 `json:"mmapped_bytes"`
}

// DuckDB is the memory of DuckDB's buffer manager (duckdb_memory()), and
// of its allocator (jemalloc) where it has one.
type DuckDB struct {
	Bytes     int64            `json:"bytes"`
	TempBytes int64            `json:"temp_bytes"`
	ByTag     map[string]int64 `json:"by_tag"`
	Allocator *struct {
		Allocated int64 `json:"allocated_bytes"`
		Resident  int64 `json:"resident_bytes"`
	} `json:"allocator"`
	IDIndexBytes  int64 `json:"id_index_bytes"`  // the store's event id index, mapped outside both heaps
	RowStoreBytes int64 `json:"row_store_bytes"` // the row store's cache and memtables, in the C heap
}

// memoryEvery is how often a phase's memory sampler asks the server what
// holds its memory (a statement to its store each time, so less often than
// the watcher).
const memoryEvery = 250 * time.Millisecond

// memorySampler keeps, of a phase's samples, the one with the highest RSS:
// what held the memory near the phase's peak.
type memorySampler struct {
	top  Memory
	poll poller
}

func sampleMemory(ctx context.Context, c *Client) *memorySampler {
	s := &memorySampler{}
	s.poll = startPoller(ctx, memoryEvery, func(ctx context.Context) {
		if d, err := c.debug(ctx, "?memory=1"); err == nil && d.Memory != nil && d.RSS > s.top.RSS {
			s.top = *d.Memory
			s.top.RSS = d.RSS
		}
	}, nil)
	return s
}

// end stops the sampler and returns its highest sample, nil if none.
func (s *memorySampler) end() *Memory {
	s.poll.end()
	if s.top.RSS == 0 {
		return nil
	}
	return &s.top
}

// memoryRow is m as a row of the Markdown table memoryHeader heads.
func memoryRow(phase string, m *Memory) string {
	var cHeap, duckAlloc, duckFree, duck, ids, rows int64
	tags := "n/a"
	if m.C != nil {
		cHeap = m.C.InUse + m.C.Mmapped + m.C.Free
	}
	if m.DuckDB != nil {
		duck, ids, rows = m.DuckDB.Bytes, m.DuckDB.IDIndexBytes, m.DuckDB.RowStoreBytes
		byTag := m.DuckDB.ByTag
		names := slices.SortedFunc(maps.Keys(byTag), func(a, b string) int { return cmp.Compare(byTag[b], byTag[a]) })
		parts := make([]string, 0, 3)
		for _, n := range names[:min(3, len(names))] {
			parts = append(parts, fmt.Sprintf("%s %.0f", n, mb(byTag[n])))
		}
		tags = strings.Join(parts, ", ")
		if a := m.DuckDB.Allocator; a != nil {
			duckAlloc, duckFree = a.Allocated, a.Resident-a.Allocated
		}
	}
	rest := m.RSS - m.GoHeapObjects - m.GoHeapFree - m.GoOther - duckAlloc - duckFree - ids - cHeap
	return fmt.Sprintf("| %s | %.0f | %.0f | %.0f | %.0f | %.0f | %.0f (%s) | %.0f | %.0f | %.0f (row store %.0f) | %.0f |\n", phase, mb(m.RSS),
		mb(m.GoHeapObjects), mb(m.GoHeapFree), mb(m.GoOther), mb(duckAlloc), mb(duck), tags, mb(duckFree), mb(ids), mb(cHeap), mb(rows), mb(rest))
}

const memoryHeader = "\n| what held the memory at the phase's highest sample (MB) | RSS | Go heap: objects | Go heap: free, not returned | Go: stacks and runtime | DuckDB: allocated (jemalloc) | of which its buffer manager (largest tags) | DuckDB: freed, not yet purged | event id index (mapped) | C heap (malloc; of which the row store's cache and memtables) | the rest (binary, mapped files; negative: pages mapped, not resident) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
