//go:build !noduckdb

package duckdb

import (
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/sstable/block"
)

// BenchmarkRowStoreOptions weighs the row store's Pebble options
// (docs/benchmarks.md, twenty-sixth round): its own, and each of a few
// changes to them (rowTune): l0_4 is Pebble's default L0 thresholds, the
// row store's until that round; balanced is Pebble's profile it asked for
// until then, and got snappy (TestRowCompression). SKYJOIN_BENCH_ROWS records (1,000,000 unless
// set; the records of storetest, of 100,000 users, keyed as row refs are)
// are put in seq order, in batches of 1,000 as the writer puts them, as fast
// as Pebble takes them; every 20,000 a page of a user's newest records (up
// to 100) is read, each by one iterator as a part of a page is; then the
// LSM is left to settle. It reports the process's CPU a record (the puts,
// the flushes and the compactions, up to the settled LSM), Pebble's write
// amplification, the disk a record, the pages' p50 and p95 and the
// sublevels L0 held at the pages on average. SKYJOIN_BENCH_ROWOPT runs
// one variant:
//
//	SKYJOIN_BENCH_ROWS=2000000 go test -run '^$' -bench RowStoreOptions -benchtime 1x ./internal/store/duckdb/
func BenchmarkRowStoreOptions(b *testing.B) {
	n := benchEnvInt(b, "SKYJOIN_BENCH_ROWS", 1_000_000, 40_000)
	vals := rowBenchValues(b)
	const users = 100_000
	rng := rand.New(rand.NewPCG(7, 7))
	userOf := make([]uint32, n+1)
	for seq := 1; seq <= n; seq++ {
		userOf[seq] = uint32(rng.IntN(users))
	}
	key := func(user uint32, seq int64) []byte {
		return rowKey(rowRef("user-"+strconv.Itoa(int(user)), seq))
	}
	levels := func(p *block.CompressionProfile) func(*pebble.Options) {
		return func(o *pebble.Options) {
			for i := range o.Levels {
				o.Levels[i].Compression = func() *block.CompressionProfile { return p }
			}
		}
	}
	for _, v := range []struct {
		name string
		tune func(*pebble.Options)
	}{
		{"row_store", nil},
		{"l0_4", func(o *pebble.Options) { o.L0CompactionThreshold, o.L0StopWritesThreshold = 4, 12 }},
		{"l0_16", func(o *pebble.Options) { o.L0CompactionThreshold, o.L0StopWritesThreshold = 16, 40 }},
		{"memtable_32MB", func(o *pebble.Options) { o.MemTableSize = 32 << 20 }},
		{"lbase_256MB", func(o *pebble.Options) { o.LBaseMaxBytes = 256 << 20 }},
		{"zstd", levels(block.ZstdCompression)},
		{"none", levels(block.NoCompression)},
		{"balanced", levels(block.BalancedCompression)},
		{"upper_none", func(o *pebble.Options) { // snappy in the last level alone
			levels(block.NoCompression)(o)
			o.Levels[len(o.Levels)-1].Compression = func() *block.CompressionProfile { return rowCompression }
		}},
		{"columnar_minlz", func(o *pebble.Options) {
			o.FormatMajorVersion = pebble.FormatNewest
			levels(block.FastCompression)(o)
		}},
		{"columnar_none", func(o *pebble.Options) {
			o.FormatMajorVersion = pebble.FormatNewest
			levels(block.NoCompression)(o)
		}},
	} {
		if f := os.Getenv("SKYJOIN_BENCH_ROWOPT"); f != "" && f != v.name {
			continue
		}
		b.Run(v.name, func(b *testing.B) {
			defer func(t func(*pebble.Options)) { rowTune = t }(rowTune)
			rowTune = v.tune
			seqsOf := make([][]int64, users)
			for b.Loop() {
				for i := range seqsOf {
					seqsOf[i] = seqsOf[i][:0]
				}
				r, err := openPebble(b.TempDir(), slog.New(slog.DiscardHandler))
				if err != nil {
					b.Fatal(err)
				}
				var lat []time.Duration
				var l0 int
				c0, start := processCPU(), time.Now()
				for seq := 1; seq <= n; seq += 1000 {
					if seq%20_000 == 1 && seq > 1 {
						u := rng.IntN(users)
						page := seqsOf[u][max(0, len(seqsOf[u])-100):]
						lat = append(lat, readRowPage(b, r.db, page, func(seq int64) []byte { return key(uint32(u), seq) }))
						l0 += int(r.db.Metrics().Levels[0].Sublevels)
					}
					end := min(seq+1000, n+1)
					putRows(b, r.db, seq, end, func(s int) []byte { return key(userOf[s], int64(s)) }, vals)
					for s := seq; s < end; s++ {
						seqsOf[userOf[s]] = append(seqsOf[userOf[s]], int64(s))
					}
				}
				b.ReportMetric(float64(n)/time.Since(start).Seconds(), "puts/s")
				settleRows(r.db, time.Second)
				b.ReportMetric(float64((processCPU()-c0).Microseconds())/float64(n), "cpu-µs/record")
				reportLSM(b, r.db, n)
				slices.Sort(lat)
				b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "page-p50-ms")
				b.ReportMetric(float64(lat[len(lat)*95/100].Microseconds())/1000, "page-p95-ms")
				b.ReportMetric(float64(l0)/float64(len(lat)), "L0-sublevels")
				if err := r.close(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
