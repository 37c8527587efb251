//go:build !noduckdb

package duckdb

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/sstable/block"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/skyjoin/skyjoin/internal/event"
)

// The row store (on by default; Config.NoRowStore): each stored record
// again, row-wise, in a Pebble LSM in the directory Path+".rows": the
// access path of a page of one user's records. A record's key is its row
// ref (rowRef): a hash of its user id, then its seq, so that a user's
// records lie together, in a few blocks, rather than one block each.
//
// The user index gives a user's seqs, but DuckDB reads a record scattered
// over the file at the cost of the vector of 2,048 rows of each of its 43
// columns around it: 2-3.5 ms of CPU a record, so a page of a user with a
// week of history took 670 ms at p99 on the 20 M-record store under load
// (docs/benchmarks.md). In the row store a record is one key; a page is a
// hundred point reads of a few microseconds each, of neighbouring keys.
//
// It is a cache of the DuckDB file, never the record of truth: a seq it
// does not hold is read from DuckDB. So it only has to never hold a copy
// that differs from DuckDB's, which three rules keep:
//   - a record is put after the DuckDB commit that stored it (asynchronously:
//     a put that has not landed is a miss);
//   - a delete or an update of stored records drops their refs from it,
//     synced to disk, before the DuckDB commit that changes them (a crash
//     between leaves misses, never a stale copy);
//   - puts and drops go through one queue, in order, and every change of
//     stored records runs under the writer's semaphore, as do the puts of
//     Settle's fill, so no put of an old copy lands after its drop.
//
// A store opened without the row store removes the directory: its copies
// would miss the changes made meanwhile.
type rowStore struct {
	db    *pebble.DB
	cache *pebble.Cache
	log   *slog.Logger
	ops   chan rowOp
	done  chan struct{}
	// dropped counts the records of puts given up (the writer's context
	// ended while it waited for room), lost those of puts that failed:
	// they are read from DuckDB.
	dropped, lost atomic.Int64
	// hits and misses count the records get found and did not.
	hits, misses atomic.Int64
	// mu keeps reads apart from close; closed is set under it.
	mu     sync.RWMutex
	closed bool
	// failed is Pebble's failure, if any.
	failed *rowFailure
	// fs and dir are where its files are.
	fs  vfs.FS
	dir string
}

// rowFailure is set once Pebble has failed in a way it does not come back
// from, or is about to: one of its writes found the disk full (its ballast
// removed to let that write through, rowBallastBytes), or it stopped at a
// failed MANIFEST write (Fatalf). The row store is a cache, so the store
// goes on without it: from then on reads come from DuckDB, puts are given
// up, and drops fail (no delete or weather backfill commits in DuckDB
// while its files may keep a copy the change would make stale) until the
// store is opened again.
type rowFailure struct {
	once sync.Once
	ch   chan struct{} // closed on failure
	err  error
	log  *slog.Logger
}

func newRowFailure(log *slog.Logger) *rowFailure {
	return &rowFailure{ch: make(chan struct{}), log: log}
}

// set records the failure (the first one only).
func (f *rowFailure) set(err error) {
	f.once.Do(func() {
		f.err = err
		close(f.ch)
		f.log.Error("duckdb: the row store failed; until the store is opened again, a user's records are read from DuckDB, and deletes and weather backfills fail", "error", err.Error())
	})
}

// get is the failure, or nil.
func (f *rowFailure) get() error {
	select {
	case <-f.ch:
		return fmt.Errorf("duckdb: the row store failed (%w); open the store again", f.err)
	default:
		return nil
	}
}

// rowOp is a put of records read from the store (recs at seqs) or of
// records the writer encoded (users and vals at seqs), or a drop of seqs,
// answered on ack.
type rowOp struct {
	seqs []int64 // the records' seqs (a put), or the refs to drop
	recs []event.Record
	// A put of records the writer encoded (putLines): each one's user id
	// and row value (rowValue), in place of recs.
	users []string
	vals  [][]byte
	drop  bool
	ack   chan error
}

// rowQueue is how many puts may wait for the row store's goroutine: a
// writer that finds it full waits (the records it holds are Go heap).
const rowQueue = 16

// rowsDir is the row store's directory of the DuckDB file path.
func rowsDir(path string) string { return path + ".rows" }

// rowForm makes a record the writer stored what a read of the store
// returns (event.FromValues of storedValues): its times in UTC and in
// microseconds, DuckDB's precision; no empty attributes; its properties as
// the JSON column gives them back (storedProperties). TestRowStore and
// the conformance suite compare the pages of both.
func rowForm(r *event.Record) error {
	us := func(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }
	r.OccurredAt, r.IngestedAt, r.ProcessedAt = us(r.OccurredAt), us(r.IngestedAt), us(r.ProcessedAt)
	if r.Weather != nil {
		r.Weather.ObservedAt = us(r.Weather.ObservedAt)
	}
	if len(r.Attributes) == 0 {
		r.Attributes = nil
	}
	if len(r.Properties) > 0 {
		p, err := storedProperties(r.Properties)
		if err != nil {
			return err
		}
		r.Properties = p
	}
	return nil
}

// rowSchemaKey holds the form the copies were made in (rowFormat), above
// every record's key: a copy made in another is not what a read of the
// store returns, so the row store starts empty then. rowFilledKey holds
// the lowest seq down to which fillRows has put the main file's records
// (fillRows).
var (
	rowSchemaKey = []byte("\xffschema_version")
	rowFilledKey = []byte("\xfffilled_down_to")
)

// A row ref is a record's key in the row store, as an int64: the top
// rowUserBits bits (below the sign bit) are a hash of the record's user id,
// the low rowSeqBits its seq. A user's records sort together, by seq, and
// a page of them is read from a few blocks: on the 20 M-record store a
// page of a user's week of history read from disk took 0.97 ms at p50
// against 10.71 with the records keyed by seq alone, for compactions that
// write each record about 3 times rather than once (BenchmarkRowKeyLayout,
// docs/benchmarks.md). Users that share a hash share a range of keys; the
// reads check each record's user. The event id index keeps each record's
// ref (idIndex), so a read by event id finds its key too.
const (
	rowSeqBits  = 44 // seqs below 2^44: 17.6 T records
	rowUserBits = 63 - rowSeqBits
	rowSeqMask  = 1<<rowSeqBits - 1
	// rowRefEnd is above every ref's key, below the metadata's keys.
	rowRefEnd = 1<<63 - 1
)

// rowRef is the row ref of user's record at seq (seq < 2^rowSeqBits: Write
// hands out no more), and rowRefBytes the same of an id as bytes. The
// hash (xxHash64) is the same in every process: the refs are on disk.
func rowRef(user string, seq int64) int64 {
	return int64(xxhash.Sum64String(user)>>(64-rowUserBits))<<rowSeqBits | seq
}

func rowRefBytes(user []byte, seq int64) int64 {
	return int64(xxhash.Sum64(user)>>(64-rowUserBits))<<rowSeqBits | seq
}

// refSeq is the seq of a row ref.
func refSeq(ref int64) int64 { return ref & rowSeqMask }

// rowFormat is the form of the row store's copies: the store's
// SchemaVersion and a fingerprint of the JSON a record is encoded to. The
// copies are sent to clients as they are (store.EncodedReader), so a
// build that encodes a record otherwise (a field's name or omitempty, the
// JSON library's escaping or number format) must not send copies made by
// another: a page would mix both forms.
func rowFormat() string {
	lat, lon := 48.8566, 2.3522
	t := time.Date(2026, 1, 2, 3, 4, 5, 678901234, time.FixedZone("", 3600))
	r := event.Record{
		Event: event.Event{
			EventID: "ev-1<&>", EventType: "Order Completed", OccurredAt: t,
			User:       event.User{ID: "u-1", Name: "Zoë \u2028 \"Q\"", Email: "z@example.com", Nationality: "FR"},
			Location:   event.Location{Latitude: &lat, Longitude: &lon, City: "Paris", Country: "France"},
			Attributes: map[string]string{"b": "2", "a": "<1>"},
			Properties: []byte(`{"amount": 1e21, "small": 0.000001, "s": "\u00e9<", "n": [1, 2.5, true, null, {"x": {}}]}`),
		},
		Weather:     &event.Weather{ObservedAt: t, TemperatureC: -1.25, RelativeHumidity: 100, Condition: "Overcast"},
		Enrichment:  event.Enrichment{Status: "stale", Error: "provider: 503"},
		IngestedAt:  t,
		ProcessedAt: t.Add(time.Millisecond),
		Seq:         1,
	}
	b, err := rowValue(event.NewLineEncoder(), &r, true)
	sum := sha256.Sum256(b)
	if err != nil {
		sum = sha256.Sum256([]byte(err.Error()))
	}
	return strconv.Itoa(SchemaVersion) + "/" + hex.EncodeToString(sum[:8]) + "/" + rowLayout
}

// rowLayout names the row store's keys (rowRef) in rowFormat: a row store
// of another layout (keyed by seq alone, before) starts empty and is filled
// again.
var rowLayout = "user" + strconv.Itoa(rowUserBits) + "-seq" + strconv.Itoa(rowSeqBits)

func init() {
	if rowUserBits+rowSeqBits != 63 {
		panic("row refs must have 63 bits")
	}
}

// openRowStore opens or creates the row store at dir, emptied if its
// copies were made in another form, for a store whose last seq is lastSeq:
// a row store made now is to be filled (fillRows) with the records up to
// it, the writes put those after.
func openRowStore(dir string, log *slog.Logger, lastSeq int64) (*rowStore, error) {
	r, err := openPebble(dir, log)
	if err != nil {
		return nil, err
	}
	if r.failed.get() != nil {
		// No room for its ballast: it is not read, nor written to.
		return r, nil
	}
	want := rowFormat()
	v, closer, err := r.db.Get(rowSchemaKey)
	switch {
	case err == nil:
		have := string(v)
		closer.Close()
		if have == want {
			return r, nil
		}
		log.Info("duckdb: the row store's copies are of another schema version or JSON form; it starts empty", "dir", dir, "theirs", have, "ours", want)
	case !errors.Is(err, pebble.ErrNotFound):
		r.close()
		return nil, fmt.Errorf("open the row store %s: %w", dir, err)
	}
	b := r.db.NewBatch()
	defer b.Close()
	err = b.DeleteRange(rowKey(0), rowKey(rowRefEnd), nil)
	if err == nil {
		err = b.Set(rowFilledKey, rowKey(lastSeq+1), nil)
	}
	if err == nil {
		err = b.Set(rowSchemaKey, []byte(want), nil)
	}
	if err == nil {
		err = b.Commit(pebble.Sync)
	}
	if err != nil {
		r.close()
		return nil, fmt.Errorf("open the row store %s: %w", dir, err)
	}
	return r, nil
}

// rowCompression is the row store's blocks' compression, and
// rowAutoCompact whether Pebble compacts on its own: a test turns both off
// to find values in its files and to see what Compact alone removes.
//
// Snappy: it is what the row store always wrote, though until the
// twenty-sixth round it asked for Pebble's "balanced" profile (zstd at
// level 1 for data blocks), which needs MinLZ for its other blocks, which
// the sstable format Pebble writes by default cannot hold, so Pebble fell
// back to snappy for every block (TestRowCompression). Weighed by
// BenchmarkRowStoreOptions (1 M records): zstd (level 3) took 19.8 µs of
// CPU a record where snappy took 15.0, for 324 bytes a record on disk
// against 452; no compression 9.5 µs for 1,180 bytes; Pebble's newest
// format, whose blocks are columnar, 16.1 µs with MinLZ
// (docs/benchmarks.md, twenty-sixth round).
var (
	rowCompression = block.SnappyCompression
	rowAutoCompact = true
	// rowFS, if set, is the row store's file system (a test injects
	// errors with it).
	rowFS vfs.FS
	// rowMinFree is the free space the row store's disk must have for a
	// write to it: Pebble panics when its WAL cannot be written or a new
	// one made, with its lock in a state Go's runtime ends the process on,
	// so the row store stops short of a full disk (rowFailure).
	rowMinFree uint64 = 2 * rowMemTableBytes
	// rowBallastBytes is the size of the file the row store keeps in its
	// directory to be removed the moment one of Pebble's writes finds the
	// disk full, when something else filled it between the check of
	// rowMinFree and the write: that write is then tried again and
	// succeeds, and the row store fails (rowFailure) rather than the
	// process. It has room for what Pebble may still write then: the rest
	// of a WAL, a new one (preallocated to 1.1 memtables) and the flush of
	// a memtable.
	rowBallastBytes int64 = 2 * rowMemTableBytes
	// rowTune, if set, changes the row store's options before it opens (a
	// benchmark weighs them).
	rowTune func(*pebble.Options)
)

// rowL0Compaction and rowL0StopWrites are the row store's L0 thresholds
// (Pebble's L0CompactionThreshold and L0StopWritesThreshold). The keys
// begin with a hash of the user, so every memtable flushed to L0 holds keys
// all over the key space, and each compaction of L0 into the level below
// rewrites that whole level: twice Pebble's default L0 before a compaction
// means half as many rewrites. BenchmarkRowStoreOptions, records put as
// fast as Pebble takes them, a page of a user's records read every 20,000:
// 15.0 µs of CPU a record against 17.1 with Pebble's thresholds (1 M
// records) and 17.7 against 22.4 (4 M), the page's p50 0.65 ms against
// 0.52 and 0.81 against 0.56, with about 12-13 sublevels in L0 against 7.
// With 16 it was 13.4 µs and 0.74 ms (1 M). On the 20 M-record store at
// 5,000 events/s the server took 5.6 % less CPU and the pages' p50 rose by
// 0.4-0.9 ms, their p99 stayed within 2.7 ms of Pebble's thresholds'
// (docs/benchmarks.md, twenty-sixth round).
const (
	rowL0Compaction = 8
	rowL0StopWrites = 24
)

// rowOpenFiles is how many files the row store may keep open (Pebble's
// MaxOpenFiles, most of them its sstables, 1,000 unless set) for a
// process allowed limit (0: unknown): a quarter of it, from 1,000 to
// 16,384. A table that is not open is opened again to be read, its index
// and properties read and parsed: the 20 M-record store has 1,785
// sstables, and a page of a user's week of history, whose records are
// spread over them, took 5.9-10.4 ms and 6.9-12.6 ms of CPU with 1,000
// open against 5.1-6.0 and 5.6-7.0 with all of them open, the page cache
// dropped, for no more memory (docs/benchmarks.md, twenty-second round).
func rowOpenFiles(limit uint64) int {
	if limit == 0 {
		return 1000
	}
	return int(min(max(limit/4, 1000), 16384))
}

// rowBallast is the name of the ballast file (rowBallastBytes) in the row
// store's directory; Pebble leaves alone the files it did not name.
const rowBallast = "SKYJOIN_BALLAST"

func openPebble(dir string, log *slog.Logger) (*rowStore, error) {
	failed := newRowFailure(log)
	cache := pebble.NewCache(rowCacheBytes)
	fs := rowFS
	if fs == nil {
		fs = vfs.Default
	}
	ballast := fs.PathJoin(dir, rowBallast)
	opts := &pebble.Options{
		Cache:        cache,
		MemTableSize: rowMemTableBytes,
		MaxOpenFiles: rowOpenFiles(openFilesLimit()),
		// L0 is compacted into the level below once it holds rowL0Compaction
		// sublevels (Pebble's default: 4), and writes wait at
		// rowL0StopWrites (12).
		L0CompactionThreshold: rowL0Compaction,
		L0StopWritesThreshold: rowL0StopWrites,
		Logger:                pebbleLogger{log, failed},

		DisableAutomaticCompactions: !rowAutoCompact,
		// A write that finds the disk full removes the ballast, which makes
		// it the row store's failure, and is tried again once.
		FS: vfs.OnDiskFull(fs, func() {
			err := fs.Remove(ballast)
			failed.set(fmt.Errorf("its disk is full (its ballast of %d bytes removed for the writes under way: %v)", rowBallastBytes, err))
		}),
		// A background error (a flush or compaction that failed, which
		// Pebble tries again) is the row store's failure too.
		EventListener: &pebble.EventListener{BackgroundError: func(err error) { failed.set(err) }},
	}
	// Blocks of 16 KB (rowCompression): records of one schema compress in a
	// block of 14 where a block of 4 KB (Pebble's default) holds too few; a
	// point read decompresses one block (docs/benchmarks.md).
	for i := range opts.Levels {
		opts.Levels[i].BlockSize = 16 << 10
		opts.Levels[i].Compression = func() *block.CompressionProfile { return rowCompression }
	}
	if rowTune != nil {
		rowTune(opts)
	}
	db, err := pebble.Open(dir, opts)
	if err != nil {
		cache.Unref()
		return nil, fmt.Errorf("open the row store %s: %w", dir, err)
	}
	if err := makeBallast(fs, ballast); err != nil {
		failed.set(err)
	}
	r := &rowStore{db: db, cache: cache, log: log, ops: make(chan rowOp, rowQueue), done: make(chan struct{}), failed: failed, fs: fs, dir: dir}
	go r.run()
	return r, nil
}

// makeBallast writes the ballast file at name, unless it is there whole.
// On a disk without room for it, it removes what it wrote and returns why:
// the row store is not used then.
func makeBallast(fs vfs.FS, name string) (err error) {
	if fi, err := fs.Stat(name); err == nil && fi.Size() == rowBallastBytes {
		return nil
	}
	f, err := fs.Create(name, vfs.WriteCategoryUnspecified)
	if err != nil {
		return fmt.Errorf("make its ballast %s: %w", name, err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("make its ballast %s: %w", name, cerr)
		}
		if err != nil {
			fs.Remove(name)
		}
	}()
	zeros := make([]byte, 1<<20)
	for n := int64(0); n < rowBallastBytes; n += int64(len(zeros)) {
		if _, err := f.Write(zeros[:min(int64(len(zeros)), rowBallastBytes-n)]); err != nil {
			return fmt.Errorf("make its ballast %s (%d bytes its disk must have room for): %w", name, rowBallastBytes, err)
		}
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("make its ballast %s: %w", name, err)
	}
	return nil
}

// removeRowStore removes the row store at dir, if any.
func removeRowStore(dir string) error {
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove the row store %s (the store runs without it, and its copies would go stale): %w", dir, err)
	}
	return nil
}

// rowKey is the key of a row ref.
func rowKey(ref int64) []byte { return binary.BigEndian.AppendUint64(make([]byte, 0, 8), uint64(ref)) }

// putLines queues the records the writer stored, as their users and row
// values (rowValue) at seqs, to be put, waiting for room: a put given up
// would leave its records to DuckDB for good. It gives them up only if ctx
// ends (counted as dropped) or the row store has failed (counted as lost).
func (r *rowStore) putLines(ctx context.Context, seqs []int64, users []string, vals [][]byte) {
	select {
	case r.ops <- rowOp{seqs: seqs, users: users, vals: vals}:
	case <-ctx.Done():
		r.dropped.Add(int64(len(seqs)))
	case <-r.failed.ch:
		r.lost.Add(int64(len(seqs)))
	}
}

// putRecords queues records read from the store, waiting for room.
func (r *rowStore) putRecords(ctx context.Context, recs []event.Record) error {
	seqs := make([]int64, len(recs))
	for i := range recs {
		seqs[i] = recs[i].Seq
	}
	select {
	case r.ops <- rowOp{seqs: seqs, recs: recs}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-r.failed.ch:
		return r.failed.get()
	}
}

// drop removes the records of the row refs, after every put queued
// before, and returns once that is synced to disk.
func (r *rowStore) drop(ctx context.Context, refs []int64) error {
	if len(refs) == 0 {
		return nil
	}
	if err := r.failed.get(); err != nil {
		return err
	}
	ack := make(chan error, 1)
	select {
	case r.ops <- rowOp{seqs: slices.Clone(refs), drop: true, ack: ack}:
	case <-ctx.Done():
		return fmt.Errorf("drop %d records from the row store: %w", len(refs), ctx.Err())
	case <-r.failed.ch:
		return r.failed.get()
	}
	// On a failure the drop may or may not be on disk: the caller gives
	// up its change, so either way no copy is stale.
	select {
	case err := <-ack:
		return err
	case <-r.failed.ch:
		return r.failed.get()
	case <-ctx.Done():
		// It runs to the end regardless; the caller must not change the
		// records meanwhile: wait.
		select {
		case err := <-ack:
			if err != nil {
				return err
			}
		case <-r.failed.ch:
			return r.failed.get()
		}
		return fmt.Errorf("drop %d records from the row store: %w", len(refs), ctx.Err())
	}
}

// sync waits for every op queued before.
func (r *rowStore) sync(ctx context.Context) error {
	return r.drop(ctx, []int64{0})
}

func (r *rowStore) run() {
	defer close(r.done)
	enc := event.NewLineEncoder()
	for op := range r.ops {
		if op.drop {
			op.ack <- r.apply(func() error { return r.applyDrop(op.seqs) })
			continue
		}
		if err := r.apply(func() error { return r.applyPut(enc, op) }); err != nil {
			r.lost.Add(int64(len(op.seqs)))
			if r.failed.get() == nil {
				r.log.Warn("duckdb: row store put failed; those records are read from DuckDB", "records", len(op.seqs), "error", err.Error())
			}
		}
	}
}

// apply runs a write to Pebble, unless it has failed or its disk has less
// than rowMinFree free (which is then its failure), and makes a panic of
// it (a WAL write that failed) its failure.
func (r *rowStore) apply(write func() error) (err error) {
	if err := r.failed.get(); err != nil {
		return err
	}
	if du, err := r.fs.GetDiskUsage(r.dir); err == nil && du.AvailBytes < rowMinFree {
		r.failed.set(fmt.Errorf("%d bytes free on its disk, less than the %d it needs", du.AvailBytes, rowMinFree))
		return r.failed.get()
	}
	defer func() {
		if p := recover(); p != nil {
			r.failed.set(fmt.Errorf("%v", p))
			err = r.failed.get()
		}
	}()
	return write()
}

func (r *rowStore) applyPut(enc *event.LineEncoder, op rowOp) error {
	b := r.db.NewBatchWithSize(len(op.seqs) * 1600)
	defer b.Close()
	if op.vals != nil {
		for i, seq := range op.seqs {
			if err := b.Set(rowKey(rowRef(op.users[i], seq)), op.vals[i], nil); err != nil {
				return err
			}
		}
		return b.Commit(pebble.NoSync)
	}
	for i, seq := range op.seqs {
		rec := &op.recs[i]
		rec.Seq = seq
		v, err := rowValue(enc, rec, false) // read from the store: in its form
		if err != nil {
			return fmt.Errorf("record at seq %d: %w", seq, err)
		}
		if err := b.Set(rowKey(rowRef(rec.User.ID, seq)), v, nil); err != nil {
			return err
		}
	}
	return b.Commit(pebble.NoSync)
}

// rowValue is the row store's value of a record (valid until enc's next
// call): its JSON and a newline, made what a read of the store returns
// first if written is set (rowForm).
func rowValue(enc *event.LineEncoder, rec *event.Record, written bool) ([]byte, error) {
	if written {
		if err := rowForm(rec); err != nil {
			return nil, err
		}
	}
	return enc.Encode(rec)
}

// applyDrop deletes the row refs, as ranges of consecutive ones, and
// syncs.
func (r *rowStore) applyDrop(refs []int64) error {
	slices.Sort(refs)
	b := r.db.NewBatch()
	defer b.Close()
	for i := 0; i < len(refs); {
		j := i + 1
		for j < len(refs) && refs[j] <= refs[j-1]+1 {
			j++
		}
		var err error
		if j == i+1 {
			err = b.Delete(rowKey(refs[i]), nil)
		} else {
			err = b.DeleteRange(rowKey(refs[i]), rowKey(refs[j-1]+1), nil)
		}
		if err != nil {
			return fmt.Errorf("drop from the row store: %w", err)
		}
		i = j
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("drop %d records from the row store: %w", len(refs), err)
	}
	return nil
}

// rowRead is a record read from the row store: decoded (rec), or as it is
// kept (json: the record's JSON as the API returns it, without the
// newline), with the fields a read checks (key) either way; neither where
// the row store does not hold the seq.
type rowRead struct {
	rec  *event.Record
	json []byte
	key  rowRecordKey
}

// found reports whether the row store held the record.
func (r *rowRead) found() bool { return r.rec != nil || r.json != nil }

// rowRecordKey is what a read checks of a record it did not decode: which
// event and user it is, and its seq. Decoding only these skips the rest of
// the JSON (0.9 µs a record against 4.3 µs for the whole record).
type rowRecordKey struct {
	EventID string `json:"event_id"`
	User    struct {
		ID string `json:"id"`
	} `json:"user"`
	Seq int64 `json:"seq"`
}

// fetch reads the records of the row refs it holds, decoded or, if
// encoded, as their JSON (a copy of it), and returns the refs it does not
// hold.
func (r *rowStore) fetch(refs []int64, encoded bool) (got []rowRead, missing []int64, err error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.closed {
		return nil, nil, errClosed
	}
	got = make([]rowRead, len(refs))
	if r.failed.get() != nil {
		r.misses.Add(int64(len(refs)))
		return got, slices.Clone(refs), nil
	}
	// The reads in up to rowReaders parts at once: a record of a user's
	// older history is rarely in the block cache or the page cache, and a
	// disk serves reads issued together in about the time of one.
	parts := min(rowReaders, (len(refs)+rowReadsPerPart-1)/rowReadsPerPart)
	if parts <= 1 {
		if missing, err = r.read(refs, got, encoded); err != nil {
			return nil, nil, err
		}
	} else {
		miss := make([][]int64, parts)
		errs := make([]error, parts)
		var wg sync.WaitGroup
		for p := range parts {
			lo, hi := p*len(refs)/parts, (p+1)*len(refs)/parts
			wg.Go(func() { miss[p], errs[p] = r.read(refs[lo:hi], got[lo:hi], encoded) })
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return nil, nil, err
		}
		missing = slices.Concat(miss...)
	}
	r.hits.Add(int64(len(refs) - len(missing)))
	return got, missing, nil
}

// rowReaders is how many parts of at least rowReadsPerPart seqs a get
// reads at once: 8 read a cold page faster still, but under the 20 M-record
// run's load they took the disk from DuckDB's writer (its tail and stalls
// grew in both runs, docs/benchmarks.md, eighteenth round); 4 did not.
var rowReaders, rowReadsPerPart = 4, 8

// read reads the records of the row refs refs into got (of the same
// length), and returns the refs it does not hold, in the order asked. A
// few refs are read by a Get each; more by one iterator that seeks to
// each by its whole key in ascending order (SeekPrefixGE: like a Get, it
// looks only in the sstables whose bounds hold the key, where SeekGE would
// read the next key of every level too), keeping the sstables it has open
// and the block it is on between seeks: on the 20 M-record store, a page of a user's records 5-18 % less
// CPU than by Gets (BenchmarkReadsOnStore list_user_*_encoded). It costs
// more than a Get to set up (a record of the last seconds, in a memtable:
// 32 µs against 7; BenchmarkGet).
func (r *rowStore) read(refs []int64, got []rowRead, encoded bool) (missing []int64, err error) {
	if len(refs) < rowIterFrom {
		for i, ref := range refs {
			v, closer, err := r.db.Get(rowKey(ref))
			if errors.Is(err, pebble.ErrNotFound) {
				missing = append(missing, ref)
				r.misses.Add(1)
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("row store: read seq %d: %w", refSeq(ref), err)
			}
			err = got[i].set(v, encoded)
			closer.Close()
			if err != nil {
				return nil, fmt.Errorf("row store: record of seq %d: %w", refSeq(ref), err)
			}
		}
		return missing, nil
	}
	order := make([]int, len(refs))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return cmp.Compare(refs[a], refs[b]) })
	it, err := r.db.NewIter(&pebble.IterOptions{UpperBound: rowKey(rowRefEnd)})
	if err != nil {
		return nil, fmt.Errorf("row store: read: %w", err)
	}
	defer func() {
		if cerr := it.Close(); cerr != nil && err == nil {
			missing, err = nil, fmt.Errorf("row store: read: %w", cerr)
		}
	}()
	key := make([]byte, 0, 8)
	var absent []int
	for _, i := range order {
		ref := refs[i]
		key = binary.BigEndian.AppendUint64(key[:0], uint64(ref))
		if !it.SeekPrefixGE(key) || !bytes.Equal(it.Key(), key) {
			if err := it.Error(); err != nil {
				return nil, fmt.Errorf("row store: read seq %d: %w", refSeq(ref), err)
			}
			absent = append(absent, i)
			continue
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return nil, fmt.Errorf("row store: read seq %d: %w", refSeq(ref), err)
		}
		if err := got[i].set(v, encoded); err != nil {
			return nil, fmt.Errorf("row store: record of seq %d: %w", refSeq(ref), err)
		}
	}
	slices.Sort(absent)
	for _, i := range absent {
		missing = append(missing, refs[i])
	}
	r.misses.Add(int64(len(missing)))
	return missing, nil
}

// rowIterFrom is how many seqs read takes one iterator for.
var rowIterFrom = 4

// set makes g the record of value v (the encoder's line: its JSON and a
// newline), decoded or, with encoded, a copy of its JSON, of which only
// the key is decoded: the rest is sent as it was put (Pebble checksums its
// blocks).
func (g *rowRead) set(v []byte, encoded bool) error {
	if encoded {
		g.json = bytes.Clone(bytes.TrimSuffix(v, []byte{'\n'}))
		return event.Unmarshal(g.json, &g.key)
	}
	g.rec = new(event.Record)
	if err := event.Unmarshal(v, g.rec); err != nil {
		return err
	}
	g.key = recordKey(g.rec)
	return nil
}

// lowest returns the lowest row ref held, 0 if none.
func (r *rowStore) lowest() (int64, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	it, err := r.db.NewIter(&pebble.IterOptions{UpperBound: rowKey(rowRefEnd)})
	if err != nil {
		return 0, err
	}
	defer it.Close()
	if !it.First() {
		return 0, it.Error()
	}
	return int64(binary.BigEndian.Uint64(it.Key())), nil
}

// filledDownTo returns the seq down to which fillRows has filled the row
// store (1: all of it), 0 if it has not begun.
func (r *rowStore) filledDownTo() (int64, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.closed {
		return 0, errClosed
	}
	v, closer, err := r.db.Get(rowFilledKey)
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer closer.Close()
	if len(v) != 8 {
		return 0, fmt.Errorf("the row store's fill mark is %d bytes, want 8", len(v))
	}
	return int64(binary.BigEndian.Uint64(v)), nil
}

// setFilledDownTo notes that fillRows has filled the row store down to
// seq (what it put is synced before).
func (r *rowStore) setFilledDownTo(seq int64) error {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.closed {
		return errClosed
	}
	if err := r.failed.get(); err != nil {
		return err
	}
	return r.apply(func() error { return r.db.Set(rowFilledKey, rowKey(seq), pebble.Sync) })
}

// diskBytes is the size of the row store's files.
func (r *rowStore) diskBytes() int64 {
	r.mu.RLock()
	defer r.mu.RUnlock()
	// A failed Pebble may hold the lock its metrics take.
	if r.closed || r.failed.get() != nil {
		return 0
	}
	m := r.db.Metrics()
	return int64(m.DiskSpaceUsage())
}

// memoryBytes is the size of the block cache and the memtables.
func (r *rowStore) memoryBytes() int64 {
	r.mu.RLock()
	defer r.mu.RUnlock()
	// A failed Pebble may hold the lock its metrics take.
	if r.closed || r.failed.get() != nil {
		return 0
	}
	m := r.db.Metrics()
	return m.BlockCache.Size + int64(m.MemTable.Size)
}

// close ends the queue (every op queued runs) and closes the LSM.
func (r *rowStore) close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	close(r.ops)
	select {
	case <-r.done:
	case <-r.failed.ch:
		// Its goroutine may be stopped inside Pebble, and Pebble's close
		// would wait for the commit lock the failed write holds: both are
		// left to the process's exit (and its directory locked until then).
		return nil
	}
	if r.failed.get() != nil {
		return nil
	}
	err := r.db.Close()
	r.cache.Unref()
	if n := r.dropped.Load() + r.lost.Load(); n > 0 {
		r.log.Info("duckdb: row store closed; records it never got are read from DuckDB", "given_up", r.dropped.Load(), "failed", r.lost.Load())
	}
	return err
}

// compactRowStore rewrites the row store at dir, if any, so that its files
// keep no deleted record's bytes (skyjoin compact).
func compactRowStore(ctx context.Context, dir string, log *slog.Logger) error {
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	r, err := openPebble(dir, log)
	if err != nil {
		return err
	}
	defer r.close()
	if err := r.db.Compact(ctx, rowKey(0), rowKey(rowRefEnd), false); err != nil {
		return fmt.Errorf("compact the row store %s: %w", dir, err)
	}
	return r.close()
}

// pebbleLogger is Pebble's logger on slog: its information at debug.
type pebbleLogger struct {
	log    *slog.Logger
	failed *rowFailure
}

func (l pebbleLogger) Infof(format string, args ...any) {
	l.log.Debug("duckdb: row store: " + fmt.Sprintf(format, args...))
}

func (l pebbleLogger) Errorf(format string, args ...any) {
	l.log.Error("duckdb: row store: " + fmt.Sprintf(format, args...))
}

// Fatalf is the row store's failure: Pebble does not go on after it, so
// the goroutine that calls it stops here rather than end the process, and
// the store goes on without the row store (rowFailure).
func (l pebbleLogger) Fatalf(format string, args ...any) {
	l.failed.set(fmt.Errorf(format, args...))
	select {}
}

// rowFillChunk is how many seq of the main file fillRows reads at once.
var rowFillChunk int64 = 16384

// fillRows puts into the row store the main file's records below the seq
// it has filled down to (rowFilledKey: the store's last seq and one when
// the row store was made, so every record of a store that had one
// without it: a store opened for the first time by a build with the row
// store, with it turned back on, or whose row store was of another
// rowFormat), from the highest down, and notes after each chunk how far
// it got, so that an interrupted fill goes on where it stopped. The
// records after were put by the writes since the row store was made. Each chunk is read and queued under
// wsem, so that no delete or update comes between the read and the put
// (rowStore), and waited for outside it.
func (s *Store) fillRows(ctx context.Context) error {
	lo, err := s.rows.filledDownTo()
	if err != nil {
		return fmt.Errorf("fill the row store: %w", err)
	}
	if lo == 1 {
		return nil
	}
	s.moveMu.Lock()
	hi := s.coldMax
	s.moveMu.Unlock()
	if lo > 0 {
		hi = min(hi, lo-1)
	}
	start, n := time.Now(), 0
	for hi > 0 {
		from := max(hi-rowFillChunk, 0)
		read, err := s.fillChunk(ctx, from, hi)
		if err != nil {
			return fmt.Errorf("fill the row store with seq %d to %d: %w", from+1, hi, err)
		}
		if err := s.rows.sync(ctx); err != nil {
			return fmt.Errorf("fill the row store: %w", err)
		}
		if err := s.rows.setFilledDownTo(from + 1); err != nil {
			return fmt.Errorf("fill the row store: %w", err)
		}
		if (n+read)/1_000_000 > n/1_000_000 {
			s.log.InfoContext(ctx, "duckdb: filling the row store from the main file", "records", n+read, "down_to_seq", from+1)
		}
		n += read
		hi = from
	}
	if n > 0 {
		s.log.InfoContext(ctx, "duckdb: row store filled from the main file", "records", n, "duration_ms", time.Since(start).Milliseconds())
	}
	if err := s.rows.setFilledDownTo(1); err != nil {
		return fmt.Errorf("fill the row store: %w", err)
	}
	return nil
}

// fillChunk queues the main file's records of seq in (from, to] for the
// row store, under wsem.
func (s *Store) fillChunk(ctx context.Context, from, to int64) (int, error) {
	select {
	case s.wsem <- struct{}{}:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	defer func() { <-s.wsem }()
	if s.closed {
		return 0, errClosed
	}
	recs, err := queryRecords(ctx, s.db, "SELECT "+readColumns+" FROM main.events WHERE seq > $1 AND seq <= $2", from, to)
	if err != nil {
		return 0, err
	}
	if len(recs) == 0 {
		return 0, nil
	}
	return len(recs), s.rows.putRecords(ctx, recs)
}
