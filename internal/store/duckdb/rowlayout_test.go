//go:build !noduckdb

package duckdb

import (
	"bytes"
	"encoding/binary"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/store/storetest"
)

// BenchmarkRowKeyLayout weighs the row store's key (docs/benchmarks.md,
// twenty-second round): by seq, as it was until the twenty-third round,
// against by user then seq (20 bits of a hash of the user above 44 of the
// seq; the row store's rowRef has 19 of them, below the sign bit), which
// keeps a user's records together. Each layout is filled with SKYJOIN_BENCH_LAYOUT_RECORDS
// records (200,000 unless set; the records of storetest, 200 a user) in
// seq order, in batches of 1,000 as the writer puts them, with the row
// store's options, and left to settle; then, with the page cache dropped
// (as root; otherwise warm), pages of 100 consecutive records of a random
// user are read, each by one iterator as a part of a page is. It reports
// the rate of the puts, Pebble's write amplification and the pages'
// p50 and p99:
//
//	SKYJOIN_BENCH_LAYOUT_RECORDS=4000000 go test -run '^$' -bench RowKeyLayout -benchtime 1x ./internal/store/duckdb/
func BenchmarkRowKeyLayout(b *testing.B) {
	n := benchEnvInt(b, "SKYJOIN_BENCH_LAYOUT_RECORDS", 200_000, 1)
	vals := rowBenchValues(b)
	users := max(1, n/200)
	rng := rand.New(rand.NewPCG(7, 7))
	userOf := make([]uint32, n+1)
	seqsOf := make([][]int64, users)
	for seq := 1; seq <= n; seq++ {
		u := uint32(rng.IntN(users))
		userOf[seq] = u
		seqsOf[u] = append(seqsOf[u], int64(seq))
	}
	for _, layout := range []struct {
		name string
		key  func(user uint32, seq int64) []byte
	}{
		{"seq", func(_ uint32, seq int64) []byte { return binary.BigEndian.AppendUint64(nil, uint64(seq)) }},
		{"user_seq", func(user uint32, seq int64) []byte {
			h := uint64(user) * 0x9E3779B97F4A7C15 >> 44
			return binary.BigEndian.AppendUint64(nil, h<<44|uint64(seq))
		}},
	} {
		b.Run(layout.name, func(b *testing.B) {
			for b.Loop() {
				dir := b.TempDir()
				log := slog.New(slog.DiscardHandler)
				r, err := openPebble(dir, log)
				if err != nil {
					b.Fatal(err)
				}
				start := time.Now()
				for seq := 1; seq <= n; seq += 1000 {
					putRows(b, r.db, seq, min(seq+1000, n+1), func(s int) []byte { return layout.key(userOf[s], int64(s)) }, vals)
				}
				b.ReportMetric(float64(n)/time.Since(start).Seconds(), "puts/s")
				settleRows(r.db, 3*time.Second)
				reportLSM(b, r.db, n)
				if err := r.close(); err != nil {
					b.Fatal(err)
				}
				syscall.Sync()
				os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0) // root only
				if r, err = openPebble(dir, log); err != nil {
					b.Fatal(err)
				}
				var lat []time.Duration
				for len(lat) < 300 {
					u := rng.IntN(users)
					seqs := seqsOf[u]
					if len(seqs) < 100 {
						continue
					}
					off := rng.IntN(len(seqs) - 99)
					lat = append(lat, readRowPage(b, r.db, seqs[off:off+100], func(seq int64) []byte { return layout.key(uint32(u), seq) }))
				}
				slices.Sort(lat)
				b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "page-p50-ms")
				b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "page-p99-ms")
				if err := r.close(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// rowBenchValues are the row store's values of storetest's records, to be
// put by a benchmark.
func rowBenchValues(b *testing.B) [][]byte {
	pool := storetest.Records(1, 20_000)
	enc := event.NewLineEncoder()
	vals := make([][]byte, len(pool))
	for i := range pool {
		v, err := rowValue(enc, &pool[i], true)
		if err != nil {
			b.Fatal(err)
		}
		vals[i] = slices.Clone(v)
	}
	return vals
}

// putRows puts the records from seq to end (not included) in one batch,
// as the row store's writer does, each at key(seq) with a value of vals.
func putRows(b *testing.B, db *pebble.DB, seq, end int, key func(int) []byte, vals [][]byte) {
	batch := db.NewBatch()
	defer batch.Close()
	for s := seq; s < end; s++ {
		if err := batch.Set(key(s), vals[s%len(vals)], nil); err != nil {
			b.Fatal(err)
		}
	}
	if err := batch.Commit(pebble.NoSync); err != nil {
		b.Fatal(err)
	}
}

// settleRows waits until db has run no flush or compaction for quiet.
func settleRows(db *pebble.DB, quiet time.Duration) {
	const every = 250 * time.Millisecond
	for q := time.Duration(0); q < quiet; time.Sleep(every) {
		if m := db.Metrics(); m.Compact.NumInProgress == 0 && m.Flush.NumInProgress == 0 {
			q += every
		} else {
			q = 0
		}
	}
}

// reportLSM reports db's write amplification and its disk a record of n.
func reportLSM(b *testing.B, db *pebble.DB, n int) {
	m := db.Metrics()
	tot := m.Total()
	b.ReportMetric(float64(tot.TableBytesFlushed+tot.TableBytesCompacted)/float64(tot.TableBytesFlushed), "w-amp")
	b.ReportMetric(float64(m.DiskSpaceUsage())/float64(n), "disk-B/record")
}

// readRowPage reads the records at seqs, keyed by key, as a part of a page
// is read: by one iterator, seeking each by its whole key. It returns the
// time it took.
func readRowPage(b *testing.B, db *pebble.DB, seqs []int64, key func(int64) []byte) time.Duration {
	t0 := time.Now()
	it, err := db.NewIter(nil)
	if err != nil {
		b.Fatal(err)
	}
	for _, seq := range seqs {
		k := key(seq)
		if !it.SeekPrefixGE(k) || !bytes.Equal(it.Key(), k) {
			b.Fatalf("seq %d not found", seq)
		}
		if _, err := it.ValueAndErr(); err != nil {
			b.Fatal(err)
		}
	}
	if err := it.Close(); err != nil {
		b.Fatal(err)
	}
	return time.Since(t0)
}

// benchEnvInt is the whole number in the environment variable name, at
// least least, or def if it is not set; anything else ends the benchmark.
func benchEnvInt(b *testing.B, name string, def, least int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < least {
		b.Fatalf("%s=%q: want a whole number of at least %d", name, v, least)
	}
	return n
}
