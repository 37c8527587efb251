//go:build !noduckdb && linux && amd64

package duckdb

/*
#include <stddef.h>
#include <stdint.h>

// DuckDB's Linux builds link jemalloc in, with its symbols prefixed; weak,
// so that a libduckdb without it (duckdb_use_lib) still links.
extern int duckdb_je_mallctl(const char *name, void *oldp, size_t *oldlenp, void *newp, size_t newlen) __attribute__((weak));

static int skyjoin_je_stats(size_t out[5]) {
	if (duckdb_je_mallctl == NULL) {
		return -1;
	}
	uint64_t epoch = 1;
	size_t len = sizeof(epoch);
	if (duckdb_je_mallctl("epoch", &epoch, &len, &epoch, len) != 0) {
		return -1;
	}
	const char *names[5] = {"stats.allocated", "stats.active", "stats.resident", "stats.mapped", "stats.retained"};
	for (int i = 0; i < 5; i++) {
		len = sizeof(size_t);
		if (duckdb_je_mallctl(names[i], &out[i], &len, NULL, 0) != 0) {
			return -1;
		}
	}
	return 0;
}
*/
import "C"

// readAllocator returns the figures of DuckDB's allocator, jemalloc.
func readAllocator() (*Allocator, bool) {
	var out [5]C.size_t
	if C.skyjoin_je_stats(&out[0]) != 0 {
		return nil, false
	}
	return &Allocator{Allocated: int64(out[0]), Active: int64(out[1]), Resident: int64(out[2]), Mapped: int64(out[3]), Retained: int64(out[4])}, true
}
