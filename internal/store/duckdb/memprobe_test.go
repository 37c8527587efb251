//go:build !noduckdb

package duckdb

import (
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

func rss(t *testing.T) string {
	b, _ := os.ReadFile("/proc/self/status")
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS") || strings.HasPrefix(l, "VmHWM") {
			out = append(out, strings.Join(strings.Fields(l), " "))
		}
	}
	return strings.Join(out, ", ")
}

func TestMemProbe(t *testing.T) {
	path := os.Getenv("SKYJOIN_MEM_PROBE")
	if path == "" {
		t.Skip()
	}
	s := openPath(t, path)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	t.Logf("after open: %s; go heap alloc %d MB sys %d MB", rss(t), ms.HeapAlloc>>20, ms.Sys>>20)
	debug.FreeOSMemory()
	runtime.ReadMemStats(&ms)
	t.Logf("after FreeOSMemory: %s; go heap alloc %d MB sys %d MB", rss(t), ms.HeapAlloc>>20, ms.Sys>>20)
	rows, err := s.db.QueryContext(t.Context(), `SELECT tag, memory_usage_bytes>>20, temporary_storage_bytes>>20 FROM duckdb_memory() WHERE memory_usage_bytes > 0`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var tag string
		var m, tmp int64
		rows.Scan(&tag, &m, &tmp)
		t.Logf("duckdb %s: %d MB (temp %d MB)", tag, m, tmp)
	}
	rows.Close()
}
