//go:build !noduckdb

package duckdb

import (
	"hash/maphash"
	"slices"
	"sync"

	"github.com/skyjoin/skyjoin/internal/event"
)

// idIndex maps each stored event_id to its seq and its row ref (rowRef: the
// seq and a hash of the record's user id, the record's key in the row
// store, in the 8 bytes of a seq), through a 64-bit hash of the id: it is
// the store's primary key, kept in Go rather than as a DuckDB ART index
// (see the package documentation, "Idempotency"). Its entries take 16 bytes
// a stored record, outside Go's heap (seqTable), and no checkpoint ever
// writes it.
//
// The hash is seeded at random per process, so ids cannot be chosen to
// collide. Two ids with one hash are told apart by reading the record at
// the seq the index holds: the index is a hint that is always confirmed,
// never trusted alone. A hash that two stored ids share is marked
// collided, and lookups of it fall back to a scan of the event_id column.
//
// Writes change it under the Store's wsem; Get reads it concurrently.
type idIndex struct {
	mu       sync.RWMutex
	seed     maphash.Seed
	seqs     seqTable
	collided map[uint64]struct{}
}

func newIDIndex() *idIndex {
	return &idIndex{seed: maphash.MakeSeed(), collided: map[uint64]struct{}{}}
}

// idHash is the hash of the index, and idHashBytes the same of bytes;
// tests make them collide.
var (
	idHash      = maphash.String
	idHashBytes = maphash.Bytes
)

func (x *idIndex) hash(id string) uint64 { return idHash(x.seed, id) }

// lookup is what the index knows of id.
type lookup struct {
	// seq is the seq of the record stored under the id's hash, 0 if none,
	// and ref its row ref.
	seq, ref int64
	// scan: the hash is shared by two stored ids; only a scan of the
	// event_id column tells whether id is stored.
	scan bool
}

func (x *idIndex) lookup(id string) lookup {
	h := x.hash(id)
	x.mu.RLock()
	defer x.mu.RUnlock()
	if _, ok := x.collided[h]; ok {
		return lookup{scan: true}
	}
	ref := x.seqs.get(h)
	return lookup{seq: refSeq(ref), ref: ref}
}

// add records that ids[i], of users[i], is stored at seqs[i] (for seqs[i]
// != 0).
func (x *idIndex) add(ids, users []string, seqs []int64) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for i, id := range ids {
		if seqs[i] != 0 {
			x.insert(x.hash(id), rowRef(users[i], seqs[i]))
		}
	}
}

// insert records that the id of hash h is stored at the row ref. The
// store holds each id once, so a hash already held is another id's: it
// becomes collided (the first id keeps the slot, which stays a valid
// hint). The caller holds mu.
func (x *idIndex) insert(h uint64, ref int64) {
	if x.seqs.get(h) != 0 {
		x.collided[h] = struct{}{}
		return
	}
	x.seqs.put(h, ref)
}

// idLoader fills an empty index in bulk, at open, before it is shared.
type idLoader struct {
	x  *idIndex
	ld *seqLoader
}

// loader starts loading about n records.
func (x *idIndex) loader(n int) *idLoader { return &idLoader{x: x, ld: newSeqLoader(&x.seqs, n)} }

// add records that id, of user (both given as bytes, not kept), is
// stored at seq.
func (l *idLoader) add(id, user []byte, seq int64) {
	l.ld.add(idHashBytes(l.x.seed, id), rowRefBytes(user, seq))
}

// finish ends the load: a hash given for two ids is collided.
func (l *idLoader) finish() {
	for _, h := range l.ld.finish() {
		l.x.collided[h] = struct{}{}
	}
}

// remove forgets deleted ids. A collided hash stays collided.
func (x *idIndex) remove(ids []string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, id := range ids {
		x.seqs.del(x.hash(id))
	}
}

func (x *idIndex) len() int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.seqs.n
}

// mappedBytes is the memory the index has mapped outside Go's heap.
func (x *idIndex) mappedBytes() int64 {
	x.mu.RLock()
	defer x.mu.RUnlock()
	var n int64
	for i := range x.seqs.parts {
		n += int64(len(x.seqs.parts[i].mem))
	}
	return n
}

// free gives back the index's memory (at Close); it is empty after.
func (x *idIndex) free() {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.seqs.free()
}

// userIndex maps each user id to the seq of each of its stored records,
// in increasing order: the access path of a user's records (List with
// UserID), which would otherwise scan the user_id column of every record.
// It costs 8 bytes per record, and a slice per user. It also keeps each
// user's latest record (by occurred_at, the later seq on a tie), the
// access path of LatestForUser: 16 bytes and a map entry per user. Writes
// add to it under the Store's wsem; reads take a copy of a user's list.
type userIndex struct {
	mu     sync.RWMutex
	seqs   map[string][]int64
	latest map[string]latestRec
	recent recentLatest
}

// latestRec is a user's latest record: its occurred_at in microseconds
// (DuckDB's precision) and its seq; seq 0 when not known (a delete took
// the latest record and left others: LatestForUser asks the store).
type latestRec struct{ at, seq int64 }

// later reports whether a record at (at, seq) is later than r.
func (r latestRec) later(at, seq int64) bool {
	return at > r.at || at == r.at && seq > r.seq
}

func newUserIndex() *userIndex {
	return &userIndex{seqs: map[string][]int64{}, latest: map[string]latestRec{}, recent: newRecentLatest(latestCacheSize)}
}

// add records that users[i] has a record at seqs[i] (for seqs[i] != 0),
// which occurred at ats[i] (microseconds); seqs are above every seq added
// before.
func (x *userIndex) add(users []string, seqs, ats []int64) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for i, u := range users {
		if seqs[i] != 0 {
			x.seqs[u] = append(x.seqs[u], seqs[i])
			x.noteLatest(u, ats[i], seqs[i])
		}
	}
}

// noteLatest makes (at, seq) the user's latest record if it is later than
// the one known. A user whose latest is not known stays so.
func (x *userIndex) noteLatest(user string, at, seq int64) {
	l, ok := x.latest[user]
	switch {
	case !ok:
		x.latest[user] = latestRec{at: at, seq: seq}
	case l.seq != 0 && l.later(at, seq):
		x.latest[user] = latestRec{at: at, seq: seq}
	}
}

// addUnordered is add at load, where seqs come in any order; sortAll
// puts them in order once all are in. The latest records are noted after
// (noteLatestAt).
func (x *userIndex) addUnordered(user []byte, seq int64) {
	l, ok := x.seqs[string(user)] // no allocation for a user already in
	if !ok {
		x.seqs[string(user)] = []int64{seq}
		return
	}
	x.seqs[string(user)] = append(l, seq)
}

// noteLatestAt notes at load that the user has a record at seq, which
// occurred at at: its latest, if later than the one noted.
func (x *userIndex) noteLatestAt(user string, at, seq int64) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.noteLatest(user, at, seq)
}

func (x *userIndex) sortAll() {
	for u, l := range x.seqs {
		slices.Sort(l)
		x.seqs[u] = slices.Clip(l)
	}
}

// list returns a copy of the user's seqs, in increasing order.
func (x *userIndex) list(user string) []int64 {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return slices.Clone(x.seqs[user])
}

// latestSeq returns the seq of the user's latest record, if known.
func (x *userIndex) latestSeq(user string) (int64, bool) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	l := x.latest[user]
	return l.seq, l.seq != 0
}

// removeUsers forgets the users (their records deleted).
func (x *userIndex) removeUsers(users []string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, u := range users {
		delete(x.seqs, u)
		delete(x.latest, u)
		x.recent.drop(u)
	}
}

// keepLatest keeps in memory the records of copies that are now their
// user's latest (the writer's copies of the records it just stored at
// seqs[i]; nil where a later record of the user is among them), for
// LatestForUser to answer without a read of the store: the users of the
// last LatestCacheSize records written.
func (x *userIndex) keepLatest(seqs []int64, copies []*event.Record) {
	if x.recent.max == 0 || copies == nil {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	for i, c := range copies {
		if c != nil && seqs[i] != 0 && x.latest[c.User.ID].seq == seqs[i] {
			x.recent.put(c.User.ID, seqs[i], c)
		}
	}
}

// latestRecord returns the user's latest record if it is kept in memory,
// as a read of the store returns it.
func (x *userIndex) latestRecord(user string) (event.Record, bool, error) {
	x.mu.RLock()
	seq := x.latest[user].seq
	k, ok := x.recent.recs[user]
	x.mu.RUnlock()
	if !ok || seq == 0 || k.seq != seq {
		return event.Record{}, false, nil
	}
	vals, err := storedValues(k.rec)
	if err != nil {
		return event.Record{}, false, err
	}
	rec, err := event.FromValues(vals)
	if err != nil {
		return event.Record{}, false, err
	}
	rec.Seq = seq
	return rec, true, nil
}

// forgetKept drops the records kept in memory (UpdateWeather changed
// stored records; the writer, which keeps them, waits meanwhile).
func (x *userIndex) forgetKept() {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.recent = newRecentLatest(x.recent.max)
}

// LatestCacheSize is how many users' latest records the store keeps in
// memory, those the writer stored last (about 1.5 KB each with the
// weather and a few properties: 6 MB). The others are read from the
// store by seq, as are all after a restart until their users write again.
const LatestCacheSize = 4096

// latestCacheSize is LatestCacheSize; tests vary it (0: none kept).
var latestCacheSize = LatestCacheSize

// recentLatest holds the latest records of the users who wrote last, at
// most max (a reader gets a Record of its own, made from the values the
// store would return: no reader shares one). A user's record stays until
// max records of others were kept after it, or the user's next record
// takes its place.
type recentLatest struct {
	max   int
	gen   uint64
	recs  map[string]keptLatest
	order []keptOrder // users in the order kept; some are stale (gen differs)
	head  int
}

type keptLatest struct {
	seq int64
	gen uint64
	rec *event.Record
}

type keptOrder struct {
	user string
	gen  uint64
}

func newRecentLatest(max int) recentLatest {
	return recentLatest{max: max, recs: map[string]keptLatest{}}
}

func (r *recentLatest) put(user string, seq int64, rec *event.Record) {
	r.gen++
	r.recs[user] = keptLatest{seq: seq, gen: r.gen, rec: rec}
	r.order = append(r.order, keptOrder{user, r.gen})
	for len(r.order)-r.head > r.max {
		o := r.order[r.head]
		r.order[r.head] = keptOrder{}
		r.head++
		if k, ok := r.recs[o.user]; ok && k.gen == o.gen {
			delete(r.recs, o.user)
		}
	}
	if r.head > r.max {
		r.order = append(r.order[:0], r.order[r.head:]...)
		r.head = 0
	}
}

func (r *recentLatest) drop(user string) { delete(r.recs, user) }

// remove forgets the records of users[i] at seqs[i].
func (x *userIndex) remove(users []string, seqs []int64) {
	x.mu.Lock()
	defer x.mu.Unlock()
	gone := map[string]map[int64]bool{}
	for i, u := range users {
		if gone[u] == nil {
			gone[u] = map[int64]bool{}
		}
		gone[u][seqs[i]] = true
	}
	for u, g := range gone {
		l := slices.DeleteFunc(x.seqs[u], func(s int64) bool { return g[s] })
		if g[x.recent.recs[u].seq] {
			x.recent.drop(u)
		}
		if len(l) == 0 {
			delete(x.seqs, u)
			delete(x.latest, u)
		} else {
			if g[x.latest[u].seq] {
				// The latest went and others stayed: which of them is
				// the latest now, the index does not know.
				x.latest[u] = latestRec{}
			}
			x.seqs[u] = l
		}
	}
}
