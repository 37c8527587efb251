// Package cmem reports the C heap of this process: the memory that cgo
// code takes from the C library's allocator, outside Go's heap. (The
// embedded DuckDB store has an allocator of its own on Linux amd64,
// jemalloc, which the store reports itself.)
//
// On Linux with glibc 2.33 or later it reads mallinfo2(3), which sums every malloc
// arena: the bytes in use, the bytes freed but kept by the allocator
// (which RSS still counts until they are trimmed), and the bytes of large
// allocations mapped on their own. Elsewhere, or built without cgo (the
// cloud image), Read reports ok false.
package cmem

import (
	"sync"
	"time"
)

// Stats is the C heap as the allocator sees it.
type Stats struct {
	InUse   int64 `json:"in_use_bytes"`  // allocated and not freed, in the arenas
	Free    int64 `json:"free_bytes"`    // freed, kept by the arenas (RSS until trimmed)
	Mmapped int64 `json:"mmapped_bytes"` // large allocations, mapped on their own
}

// Read returns the C heap's figures, and whether this build can read them.
// The figures are at most MaxAge old: mallinfo2 walks every arena's free
// lists with the arena locked, 4.5 ms of CPU a call on the 20 M-record
// store under load, where the bench samples memory four times a second
// (1.7 % of the server's CPU, docs/benchmarks.md, nineteenth round).
func Read() (Stats, bool) {
	mu.Lock()
	defer mu.Unlock()
	if now := time.Now(); last.IsZero() || now.Sub(last) >= MaxAge {
		cached, cachedOK = read()
		last = now
	}
	return cached, cachedOK
}

// MaxAge is how old Read's figures may be.
const MaxAge = time.Second

var (
	mu       sync.Mutex
	last     time.Time
	cached   Stats
	cachedOK bool
)
