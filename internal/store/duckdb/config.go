package duckdb

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"

	"github.com/skyjoin/skyjoin/internal/platform"
)

// Defaults applied to zero fields of Config.
const (
	// DefaultMemoryLimit bounds DuckDB's buffer manager (its own default is
	// 80% of the machine's RAM, which it fills with cached pages of the
	// table). The store keeps no DuckDB index on its records (the event id
	// and user indexes live in the Go heap, see the package documentation).
	DefaultMemoryLimit = "256MB"
	// DefaultThreads is DuckDB's worker threads (its default: one per core).
	// The store's statements are small; more threads cost memory, not speed.
	DefaultThreads = 2
	// RowStoreMemory is the most the row store holds in memory, outside
	// Go's heap (the C heap): its block cache and two memtables.
	RowStoreMemory   = rowCacheBytes + 2*rowMemTableBytes
	rowCacheBytes    = 16 << 20
	rowMemTableBytes = 16 << 20
)

// Config configures the DuckDB store.
type Config struct {
	// Path is the database file. Its parent directory is created if needed.
	// DuckDB keeps its write-ahead log next to it (Path + ".wal").
	Path string
	// MemoryLimit is DuckDB's memory_limit, e.g. "256MB" or "1GB"; empty:
	// DefaultMemoryLimit.
	MemoryLimit string
	// Threads is DuckDB's threads setting; 0: DefaultThreads.
	Threads int
	// UserRuns keeps copies of the records sorted by user (runs.go), for
	// the reads of one user's records: on 23 M records, a page of a user
	// whose records spread over the file went from 369 to 23 ms idle, for
	// twice the disk and the CPU of sorting each record twice. Its sorts
	// need more of DuckDB's memory than DefaultMemoryLimit leaves under
	// load: run it with a MemoryLimit of 1GB (docs/benchmarks.md).
	UserRuns bool
	// NoRowStore turns off the row store (rows.go): each record again,
	// keyed by a hash of its user id then its seq, in a Pebble LSM in Path+".rows", from which a page of
	// one user's records is read (a user with a week of history: 670 ms at
	// p99 without it on 20 M records under load; see docs/benchmarks.md).
	// It takes about as much disk again as the DuckDB file and the CPU of
	// encoding each record once more. A store opened without it removes
	// the directory.
	NoRowStore bool
}

// RegisterFlags adds the DuckDB store's flags to fs.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.MemoryLimit, "duckdb-memory-limit", DefaultMemoryLimit, "memory limit of the embedded DuckDB store (its buffer manager), e.g. 256MB, 1GB; at 64MB a saturated writer runs DuckDB out of memory, which it may not survive")
	fs.IntVar(&c.Threads, "duckdb-threads", DefaultThreads, "worker threads of the embedded DuckDB store")
	fs.BoolFunc("duckdb-row-store", "keep each record also row-wise, keyed by user then seq, in "+"<path>.rows (Pebble), for fast reads of a user's records (default true; false removes the directory)", func(v string) error {
		on, err := strconv.ParseBool(v)
		if err != nil {
			return errors.New("want true or false")
		}
		c.NoRowStore = !on
		return nil
	})
	fs.BoolVar(&c.UserRuns, "duckdb-user-runs", false, "keep the records also sorted by user, for fast reads of a user's records (twice the disk, more CPU; give it --duckdb-memory-limit 1GB)")
}

// withDefaults returns c with zero fields set from the environment
// (SKYJOIN_DUCKDB_MEMORY_LIMIT, SKYJOIN_DUCKDB_THREADS: the variables of the
// flags, for the commands that open the store without registering them) or
// else to their defaults; UserRuns from SKYJOIN_DUCKDB_USER_RUNS if false,
// NoRowStore from SKYJOIN_DUCKDB_ROW_STORE=false if false.
// A variable that does not parse is an error naming it.
func (c Config) withDefaults() (Config, error) {
	var errs []error
	if c.MemoryLimit == "" {
		c.MemoryLimit = DefaultMemoryLimit
		if v := os.Getenv(platform.EnvName("duckdb-memory-limit")); v != "" {
			c.MemoryLimit = v
		}
	}
	if name := platform.EnvName("duckdb-row-store"); !c.NoRowStore && os.Getenv(name) != "" {
		on, err := strconv.ParseBool(os.Getenv(name))
		if err != nil {
			errs = append(errs, fmt.Errorf("duckdb: %s=%q: want true or false", name, os.Getenv(name)))
		}
		c.NoRowStore = err == nil && !on
	}
	if name := platform.EnvName("duckdb-user-runs"); !c.UserRuns && os.Getenv(name) != "" {
		var err error
		if c.UserRuns, err = strconv.ParseBool(os.Getenv(name)); err != nil {
			errs = append(errs, fmt.Errorf("duckdb: %s=%q: want true or false", name, os.Getenv(name)))
		}
	}
	if name := platform.EnvName("duckdb-threads"); c.Threads == 0 {
		c.Threads = DefaultThreads
		if v := os.Getenv(name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 {
				errs = append(errs, fmt.Errorf("duckdb: %s=%q: want a positive number", name, v))
			} else {
				c.Threads = n
			}
		}
	}
	return c, errors.Join(errs...)
}

var memoryLimitRE = regexp.MustCompile(`^(?i)\s*[0-9]+(\.[0-9]+)?\s*(b|kb|mb|gb|tb|kib|mib|gib|tib)\s*$`)

// Validate reports every problem with the configuration at once.
func (c Config) Validate() error {
	var errs []error
	switch {
	case strings.TrimSpace(c.Path) == "":
		errs = append(errs, errors.New("duckdb: path is required"))
	case c.Path == ":memory:" || strings.HasPrefix(c.Path, ":memory:"):
		errs = append(errs, errors.New("duckdb: path must be a file, not :memory: (the store must be durable)"))
	case strings.ContainsAny(c.Path, "?#"):
		// The driver reads anything after '?' as DuckDB settings.
		errs = append(errs, errors.New("duckdb: path must not contain '?' or '#'"))
	}
	if strings.HasSuffix(c.Path, "/") {
		errs = append(errs, errors.New("duckdb: path must name a file, not a directory"))
	}
	if c.MemoryLimit != "" && !memoryLimitRE.MatchString(c.MemoryLimit) {
		errs = append(errs, fmt.Errorf("duckdb: memory limit %q: want a size such as 256MB or 1GB", c.MemoryLimit))
	}
	if c.Threads < 0 {
		errs = append(errs, fmt.Errorf("duckdb: threads must not be negative, got %d", c.Threads))
	}
	return errors.Join(errs...)
}

// Memory is what DuckDB's buffer manager holds, by tag (duckdb_memory():
// BASE_TABLE, the tables' blocks; IN_MEMORY_TABLE, the hot segments' rows
// not yet checkpointed; HASH_TABLE and ORDER_BY, queries' working memory;
// ...), with the bytes it spilled to temporary files. The buffer manager
// counts what it allocates for blocks and operators, up to memory_limit,
// through DuckDB's allocator (jemalloc on Linux amd64, else the C heap);
// DuckDB's other objects (C++ new) are in the C heap (package cmem).
type Memory struct {
	Bytes     int64            `json:"bytes"`
	TempBytes int64            `json:"temp_bytes"`
	ByTag     map[string]int64 `json:"by_tag"` // the tags holding any memory
	// Allocator is DuckDB's own allocator, where it has one (jemalloc, on
	// Linux amd64): the buffer manager's memory and what else DuckDB
	// allocates through it, and the freed pages it keeps.
	Allocator *Allocator `json:"allocator,omitempty"`
	// IDIndexBytes is the event id index's memory mapped outside Go's
	// heap and DuckDB's: 16 bytes an entry, about one a record (the
	// arrays are sized as they are loaded and merged; pages not yet
	// written are mapped but not resident).
	IDIndexBytes int64 `json:"id_index_bytes"`
	// RowStoreBytes is the row store's block cache and memtables, allocated
	// by Pebble with the C library's malloc (part of the C heap).
	RowStoreBytes int64 `json:"row_store_bytes"`
}

// Allocator is jemalloc's view of DuckDB's memory (its stats.* figures).
type Allocator struct {
	Allocated int64 `json:"allocated_bytes"` // in use by DuckDB
	Active    int64 `json:"active_bytes"`    // the pages of those allocations
	Resident  int64 `json:"resident_bytes"`  // physically resident: active, metadata, and freed pages not yet purged
	Mapped    int64 `json:"mapped_bytes"`
	Retained  int64 `json:"retained_bytes"` // returned to the kernel, address space kept
}
