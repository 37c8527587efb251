package app

import (
	"context"
	"io"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/skyjoin/skyjoin/internal/enrich"
	"github.com/skyjoin/skyjoin/internal/ingest"
	"github.com/skyjoin/skyjoin/internal/platform"
	"github.com/skyjoin/skyjoin/internal/platform/cmem"
	"github.com/skyjoin/skyjoin/internal/store/duckdb"
	"github.com/skyjoin/skyjoin/internal/weather"
)

// pipelineDebug is the answer of GET /debug/pipeline: the process's
// counters and resources, read by `skyjoin bench`.
type pipelineDebug struct {
	PID       int          `json:"pid"`
	MaxRSS    int64        `json:"max_rss_bytes"`  // getrusage's peak: on Linux the higher of VmHWM and the peak of the process that exec'd this one, which the kernel keeps across exec and reset_peak does not reset
	PeakRSS   int64        `json:"peak_rss_bytes"` // VmHWM: the peak since the last reset_peak
	RSS       int64        `json:"rss_bytes"`      // VmRSS now
	PeakReset bool         `json:"peak_reset"`     // reset_peak was asked for and done
	UserCPU   float64      `json:"user_cpu_seconds"`
	SystemCPU float64      `json:"system_cpu_seconds"`
	Stored    int64        `json:"stored"`
	Messages  int64        `json:"messages"`
	Dead      int64        `json:"dead_lettered"`
	Unavail   int64        `json:"unavailable"`
	Failed    int64        `json:"failed_batches"`
	Procs     int          `json:"gomaxprocs"` // the processors Go runs goroutines on (--procs)
	Backlog   int64        `json:"backlog"`
	BacklogB  int64        `json:"backlog_bytes"`
	Refused   int64        `json:"ingest_refused"`
	Weather   weatherDebug `json:"weather"`
	// Memory is what holds the RSS, with ?memory=1.
	Memory *memoryDebug `json:"memory,omitempty"`
}

// memoryDebug is what holds this process's memory: Go's heap and runtime
// (runtime/metrics), the C library's heap (mallinfo2: cgo code's, and
// DuckDB's objects that do not go through its own allocator), and the
// DuckDB store's: its buffer manager by tag, its allocator (jemalloc) and
// the event id index's mapped arrays. RSS less these is mostly the
// binary's pages.
type memoryDebug struct {
	GoHeapObjects int64          `json:"go_heap_objects_bytes"` // live and not yet swept objects
	GoHeapFree    int64          `json:"go_heap_free_bytes"`    // heap spans' free space and free spans not returned to the kernel
	GoOther       int64          `json:"go_other_bytes"`        // stacks, GC and runtime metadata, profiling buckets
	GoHeapGoal    int64          `json:"go_heap_goal_bytes"`    // the heap size the GC aims for
	GoLimit       int64          `json:"go_memory_limit_bytes"` // the soft limit (--memory-limit, GOMEMLIMIT); math.MaxInt64 for none
	C             *cmem.Stats    `json:"c_heap,omitempty"`
	DuckDB        *duckdb.Memory `json:"duckdb,omitempty"`
	Error         string         `json:"error,omitempty"` // the store's memory could not be read
}

// goMemoryMetrics are the runtime/metrics memoryDebug reads, in order.
var goMemoryMetrics = []string{
	"/memory/classes/total:bytes",
	"/memory/classes/heap/released:bytes",
	"/memory/classes/heap/objects:bytes",
	"/memory/classes/heap/unused:bytes",
	"/memory/classes/heap/free:bytes",
	"/gc/heap/goal:bytes",
	"/gc/gomemlimit:bytes",
}

// readMemory fills a memoryDebug; st, if not nil, is the store's.
func readMemory(ctx context.Context, st memoryReporter) *memoryDebug {
	samples := make([]metrics.Sample, len(goMemoryMetrics))
	for i, name := range goMemoryMetrics {
		samples[i].Name = name
	}
	metrics.Read(samples)
	v := func(i int) int64 {
		if samples[i].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return int64(samples[i].Value.Uint64())
	}
	m := &memoryDebug{GoHeapObjects: v(2), GoHeapFree: v(3) + v(4), GoHeapGoal: v(5), GoLimit: v(6)}
	m.GoOther = v(0) - v(1) - m.GoHeapObjects - m.GoHeapFree
	if c, ok := cmem.Read(); ok {
		m.C = &c
	}
	if st != nil {
		if d, err := st.Memory(ctx); err != nil {
			m.Error = err.Error()
		} else {
			m.DuckDB = &d
		}
	}
	return m
}

type weatherDebug struct {
	Requests   int64 `json:"requests"`
	Hits       int64 `json:"hits"`
	Misses     int64 `json:"misses"`
	Stale      int64 `json:"stale"`
	Errors     int64 `json:"errors"`
	Calls      int64 `json:"calls"`
	Points     int64 `json:"points"`
	QuotaWaits int64 `json:"quota_waits"`
	Entries    int   `json:"entries"`
}

// readStatus returns VmHWM and VmRSS of this process, in bytes.
func readStatus() (hwm, rss int64) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, 0
	}
	for line := range strings.Lines(string(b)) {
		name, v, ok := strings.Cut(line, ":")
		if !ok || (name != "VmHWM" && name != "VmRSS") {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			continue
		}
		if name == "VmHWM" {
			hwm = kb << 10
		} else {
			rss = kb << 10
		}
	}
	return hwm, rss
}

// resetPeak resets the kernel's VmHWM of this process to its current RSS
// (Linux: writing 5 to /proc/self/clear_refs), so that a benchmark phase
// can read its own peak.
func resetPeak() error {
	return os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
}

// registerDebug mounts GET /debug/pipeline and the pprof handlers.
// GET /debug/pipeline?reset_peak=1 first resets the peak RSS (VmHWM);
// ?memory=1 adds what holds the memory (a statement to the store, so the
// 50 ms watcher of `skyjoin bench` asks for it less often). storeMem
// returns the store once it is open, if it reports its memory.
func registerDebug(mux platform.Router, w *enrich.Worker, ws *weather.Service, gate *ingest.BacklogGate, storeMem func() memoryReporter, secretFlags []string) {
	mux.HandleFunc("GET /debug/pipeline", func(rw http.ResponseWriter, r *http.Request) {
		d := pipelineDebug{PID: os.Getpid(), Procs: runtime.GOMAXPROCS(0)}
		if r.URL.Query().Get("reset_peak") == "1" {
			if err := resetPeak(); err != nil {
				platform.WriteError(rw, http.StatusInternalServerError, "reset peak RSS: "+err.Error(), nil)
				return
			}
			d.PeakReset = true
		}
		d.PeakRSS, d.RSS = readStatus()
		var ru syscall.Rusage
		if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
			d.MaxRSS = ru.Maxrss * 1024 // kilobytes on Linux
			d.UserCPU = float64(ru.Utime.Sec) + float64(ru.Utime.Usec)/1e6
			d.SystemCPU = float64(ru.Stime.Sec) + float64(ru.Stime.Usec)/1e6
		}
		if w != nil {
			s := w.Stats()
			d.Stored, d.Messages, d.Dead, d.Unavail, d.Failed = s.Stored, s.Messages, s.DeadLettered, s.Unavailable, s.Failed
		}
		if ws != nil {
			s := ws.Stats()
			d.Weather = weatherDebug{Requests: s.Requests, Hits: s.Hits, Misses: s.Misses, Stale: s.Stale, Errors: s.Errors,
				Calls: s.Calls, Points: s.Points, Entries: s.Entries}
		}
		if gate != nil {
			d.Backlog, d.BacklogB, d.Refused = gate.Backlog(), gate.BacklogBytes(), gate.Refused()
		}
		if r.URL.Query().Get("memory") == "1" {
			d.Memory = readMemory(r.Context(), storeMem())
		}
		platform.WriteJSON(rw, http.StatusOK, d)
	})
	mux.HandleFunc("GET /debug/pprof/", pprof.Index) // serves heap, allocs, goroutine, ... by name
	mux.HandleFunc("GET /debug/pprof/cmdline", func(w http.ResponseWriter, r *http.Request) {
		// pprof.Cmdline's answer, with the values of secret flags redacted.
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, strings.Join(redactArgs(os.Args, secretFlags), "\x00"))
	})
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
}

// redactArgs returns args with the values of the named flags replaced by
// "REDACTED" (--name=value, -name=value, or --name value).
func redactArgs(args, secretFlags []string) []string {
	out := make([]string, len(args))
	copy(out, args)
	for i := 1; i < len(out); i++ {
		a := out[i]
		if a == "--" {
			break
		}
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || !slices.Contains(secretFlags, name) {
			continue
		}
		if hasValue {
			out[i] = a[:strings.Index(a, "=")+1] + "REDACTED"
		} else if i+1 < len(out) {
			out[i+1] = "REDACTED"
			i++
		}
	}
	return out
}
