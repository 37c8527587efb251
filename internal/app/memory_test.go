//go:build !noduckdb

package app

import (
	"log/slog"
	"os"
	"regexp"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"

	"github.com/skyjoin/skyjoin/internal/platform"
	"github.com/skyjoin/skyjoin/internal/store/duckdb"
)

// TestMemoryBudgetLeavesDuckDBItsShare: `up --memory-limit` sets the Go
// heap's soft limit to the budget less twice the DuckDB store's memory
// limit, the row store's cache and memtables, and a tenth in reserve.
func TestMemoryBudgetLeavesDuckDBItsShare(t *testing.T) {
	keepMemoryLimit(t)
	_, stop := startInProcess(t, upHooks{}, "--memory-limit=1GiB", "--duckdb-memory-limit=128MB")
	got := debug.SetMemoryLimit(-1)
	stop()
	if want := int64(1<<30 - 2*128e6 - duckdb.RowStoreMemory - (1<<30)/10); got != want {
		t.Errorf("the Go heap's soft limit is %d, want %d (1 GiB less twice DuckDB's 128 MB, the row store's cache and memtables, and a tenth)", got, want)
	}
}

// TestMemoryBudgetTooSmallForDuckDB: a --memory-limit that DuckDB's
// memory limit, counted twice, does not fit in is refused with the flag to
// lower, the most it may be and what that risks; that value then fits and
// 1 MB more does not; a budget too small even for DuckDB's least asks for
// a larger budget.
func TestMemoryBudgetTooSmallForDuckDB(t *testing.T) {
	keepMemoryLimit(t)
	p := func(mem, duck string) *process {
		cfg := newConfig("up")
		cfg.Memory.Limit, cfg.DuckDB.MemoryLimit = mem, duck
		return &process{cfg: cfg, storeURL: "duckdb://data/skyjoin.duckdb", st: &flakyStore{}, log: slog.New(slog.DiscardHandler)}
	}
	err := p("400MiB", "").applyMemoryBudget()
	if err == nil {
		t.Fatal("--memory-limit 400MiB with DuckDB's default 256MB: no error")
	}
	m := regexp.MustCompile(`--duckdb-memory-limit 256MB counts twice in it: lower it to at most (\d+)MB \(the lower, the more the Go heap gets; below its default of 256MB a store of millions of records has run DuckDB out of memory\)`).FindStringSubmatch(err.Error())
	if m == nil {
		t.Fatalf("error %q: want it to name --duckdb-memory-limit and the most it may be", err)
	}
	if err := p("400MiB", m[1]+"MB").applyMemoryBudget(); err != nil {
		t.Errorf("--memory-limit 400MiB --duckdb-memory-limit %sMB, as the error advised: %v", m[1], err)
	}
	bigger, _ := strconv.Atoi(m[1])
	if err := p("400MiB", strconv.Itoa(bigger+1)+"MB").applyMemoryBudget(); err == nil {
		t.Errorf("--duckdb-memory-limit %dMB, above the advised %sMB, fits: the advice is not the most", bigger+1, m[1])
	}
	if err := p("300MiB", "").applyMemoryBudget(); err == nil || !strings.Contains(err.Error(), "give a larger budget") {
		t.Errorf("--memory-limit 300MiB: %v; want a larger budget asked for", err)
	}
}

// TestDebugMemory: GET /debug/pipeline?memory=1 says what holds the
// process's memory: Go's heap and its limit, the C heap, and the DuckDB
// store's buffer manager by tag, which holds the records not yet moved.
func TestDebugMemory(t *testing.T) {
	keepMemoryLimit(t)
	base, stop := startInProcess(t, upHooks{}, "--memory-limit=1GiB")
	defer stop()
	postEvents(t, base, 0, 100)
	waitFor(t, func() bool { n, _ := storedCount(t, base); return n >= 100 })
	get := func(query string) pipelineDebug { return debugOf(t, base, query) }
	if d := get(""); d.Memory != nil {
		t.Errorf("without ?memory=1 the answer has memory: %+v", d.Memory)
	}
	m := get("?memory=1").Memory
	if m == nil {
		t.Fatal("?memory=1: no memory in the answer")
	}
	t.Logf("go objects %d, free %d, other %d, goal %d, limit %d; C %+v; DuckDB %+v",
		m.GoHeapObjects, m.GoHeapFree, m.GoOther, m.GoHeapGoal, m.GoLimit, m.C, m.DuckDB)
	if m.GoHeapObjects <= 0 || m.GoOther <= 0 || m.GoHeapGoal <= 0 {
		t.Errorf("Go's memory: objects %d, other %d, goal %d: want each above 0", m.GoHeapObjects, m.GoOther, m.GoHeapGoal)
	}
	if m.GoLimit >= 1<<30 || m.GoLimit <= 0 {
		t.Errorf("Go's memory limit = %d, want the budget's share of 1 GiB", m.GoLimit)
	}
	if m.Error != "" || m.DuckDB == nil {
		t.Fatalf("DuckDB's memory: %+v, error %q", m.DuckDB, m.Error)
	}
	if m.DuckDB.ByTag["IN_MEMORY_TABLE"] <= 0 {
		t.Errorf("DuckDB's memory by tag = %v: want the hot segment's rows (IN_MEMORY_TABLE)", m.DuckDB.ByTag)
	}
	if runtime.GOOS == "linux" && m.C == nil {
		t.Error("no C heap figures on Linux")
	}
	if a := m.DuckDB.Allocator; runtime.GOOS == "linux" && runtime.GOARCH == "amd64" && (a == nil || a.Allocated < m.DuckDB.Bytes) {
		t.Errorf("DuckDB's allocator: %+v, want jemalloc's figures, allocated at least the buffer manager's %d bytes", a, m.DuckDB.Bytes)
	}
}

// TestProcsOneMoreWithTheStore: a process that holds the embedded DuckDB
// store runs Go on one processor more than the runtime's default (where
// no CPU limit set that below the CPUs), and says so on /debug/pipeline;
// --procs sets the figure.
func TestProcsOneMoreWithTheStore(t *testing.T) {
	prev := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.GOMAXPROCS(prev) })
	t.Setenv("GOMAXPROCS", "")
	t.Setenv(platform.EnvName("procs"), "")
	os.Unsetenv(platform.EnvName("procs"))
	runtime.SetDefaultGOMAXPROCS()
	def := runtime.GOMAXPROCS(0)
	want := def + 1
	if def != runtime.NumCPU() {
		want = def // a CPU limit below the CPUs: no extra
	}
	procsOf := func(base string) int { return debugOf(t, base, "").Procs }
	base, stop := startInProcess(t, upHooks{})
	got, now := procsOf(base), runtime.GOMAXPROCS(0)
	stop()
	if got != want || now != want {
		t.Errorf("with the embedded store: /debug/pipeline says %d, GOMAXPROCS is %d; want %d (the default %d, %d CPUs)", got, now, want, def, runtime.NumCPU())
	}
	base, stop = startInProcess(t, upHooks{}, "--procs", "1")
	got = procsOf(base)
	stop()
	if got != 1 {
		t.Errorf("--procs 1: /debug/pipeline says %d", got)
	}
}

// TestProcsExtraOnlyForTheEmbeddedStore: the extra processor is for a
// process that opened the embedded DuckDB store, not one that opened
// BigQuery or no store.
func TestProcsExtraOnlyForTheEmbeddedStore(t *testing.T) {
	for _, c := range []struct {
		p    *process
		want int
	}{
		{&process{storeURL: "duckdb://data/skyjoin.duckdb", st: &flakyStore{}}, 1},
		{&process{storeURL: "duckdb://data/skyjoin.duckdb"}, 0}, // not opened by this process's stages
		{&process{storeURL: "bigquery://p/d", st: &flakyStore{}}, 0},
	} {
		if got := c.p.procsExtra(); got != c.want {
			t.Errorf("store %s, opened %v: extra processors %d, want %d", c.p.storeURL, c.p.st != nil, got, c.want)
		}
	}
}
