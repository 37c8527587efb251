//go:build !noduckdb

package duckdb

import (
	"cmp"
	"math/bits"
	"slices"
)

// seqTable maps 64-bit hashes to seqs (never 0) in 16 bytes an entry, held
// outside Go's heap where the platform allows (offheap_unix.go).
//
// Why not a Go map: a map[uint64]int64 takes about 29 bytes an entry (its
// slots at Go's load factor), and, being in the heap, it counts toward the
// heap size that paces the collector: with 20 M records the 577 MB index
// let as much garbage again pile up between collections (GOGC=100), and
// the process stood at 2.3 GB. Here the bulk of the entries is in sorted
// arrays the collector never sees; only the entries added since a part was
// last merged are in a (small) map.
//
// The table is split in 256 parts by the hash's top byte, so that merging
// the recent entries of a part into its sorted array copies 1/256 of the
// table: a part merges when its map holds more than 1/32 of its sorted
// array (at least mergeMin), or when a quarter of the array is deleted
// entries.
//
// Not safe for concurrent use: idIndex's lock guards it.
type seqTable struct {
	parts [tableParts]tablePart
	n     int // live entries
}

const (
	tableParts = 256
	// mergeMin is the least number of recent entries of a part that
	// starts a merge.
	mergeMin = 512
)

type tablePart struct {
	sorted []hashSeq // by h, each h once; seq 0 marks an entry deleted
	mem    offHeap   // the memory of sorted when it is off the heap
	recent map[uint64]int64
	dead   int // entries of sorted with seq 0
}

type hashSeq struct {
	h   uint64
	seq int64
}

func (t *seqTable) part(h uint64) *tablePart { return &t.parts[h>>56] }

// search returns the index of h in p.sorted, or -1. The hashes are
// uniform (maphash), so where h lies between the ends of the range left is
// a good guess of its index: interpolation finds it in about 3 probes of
// an array of 80,000, where a binary search takes 17, most of them cache
// misses (the table is 320 MB at 20 M records). After interpolateRounds
// rounds (hashes that are not uniform) the search halves the range.
func (p *tablePart) search(h uint64) int {
	s := p.sorted
	lo, hi := 0, len(s)-1
	for round := 0; lo <= hi; round++ {
		a, b := s[lo].h, s[hi].h
		if h < a || h > b {
			return -1
		}
		mid := int(uint(lo+hi) >> 1)
		if round < interpolateRounds && b > a {
			// lo + (h-a)*(hi-lo)/(b-a), in 128 bits: the quotient is at
			// most hi-lo, as h-a is at most b-a.
			mh, ml := bits.Mul64(h-a, uint64(hi-lo))
			q, _ := bits.Div64(mh, ml, b-a)
			mid = lo + int(q)
		}
		switch c := s[mid].h; {
		case c == h:
			return mid
		case c < h:
			lo = mid + 1
		default:
			hi = mid - 1
		}
	}
	return -1
}

// interpolateRounds bounds the rounds search interpolates in.
const interpolateRounds = 8

// get returns the seq of h, or 0.
func (t *seqTable) get(h uint64) int64 {
	p := t.part(h)
	if seq, ok := p.recent[h]; ok {
		return seq
	}
	if i := p.search(h); i >= 0 {
		return p.sorted[i].seq
	}
	return 0
}

// put adds h at seq (not 0); h must not be in the table.
func (t *seqTable) put(h uint64, seq int64) {
	p := t.part(h)
	if p.recent == nil {
		p.recent = make(map[uint64]int64)
	}
	p.recent[h] = seq
	t.n++
	if len(p.recent) > max(mergeMin, len(p.sorted)/32) {
		p.merge()
	}
}

// del removes h; it reports whether h was in the table.
func (t *seqTable) del(h uint64) bool {
	p := t.part(h)
	if _, ok := p.recent[h]; ok {
		delete(p.recent, h)
		t.n--
		return true
	}
	i := p.search(h)
	if i < 0 || p.sorted[i].seq == 0 {
		return false
	}
	p.sorted[i].seq = 0
	p.dead++
	t.n--
	if p.dead > len(p.sorted)/4 {
		p.merge()
	}
	return true
}

// merge rebuilds the part's sorted array from its live entries and its
// recent ones, and empties its map.
func (p *tablePart) merge() {
	recent := make([]hashSeq, 0, len(p.recent))
	for h, seq := range p.recent {
		recent = append(recent, hashSeq{h, seq})
	}
	slices.SortFunc(recent, func(a, b hashSeq) int { return cmp.Compare(a.h, b.h) })
	n := len(p.sorted) - p.dead + len(recent)
	merged, mem := allocEntries(n)
	i, j := 0, 0
	for i < len(p.sorted) || j < len(recent) {
		switch {
		case i < len(p.sorted) && p.sorted[i].seq == 0:
			i++ // deleted (a hash put again is in recent)
		case j == len(recent) || i < len(p.sorted) && p.sorted[i].h < recent[j].h:
			merged = append(merged, p.sorted[i])
			i++
		default:
			merged = append(merged, recent[j])
			j++
		}
	}
	p.mem.free()
	p.sorted, p.mem, p.dead = merged, mem, 0
	clear(p.recent)
}

// free gives back the table's memory; the table is empty after.
func (t *seqTable) free() {
	for i := range t.parts {
		p := &t.parts[i]
		p.mem.free()
		*p = tablePart{}
	}
	t.n = 0
}

// seqLoader fills a seqTable in bulk (at open): entries are appended to
// their part as they come, then each part is sorted once.
type seqLoader struct {
	t *seqTable
}

// newSeqLoader starts loading about n entries into an empty table.
func newSeqLoader(t *seqTable, n int) *seqLoader {
	per := n/tableParts + n/tableParts/8 + 64 // the parts' sizes vary by a few per cent
	for i := range t.parts {
		t.parts[i].sorted, t.parts[i].mem = allocEntries(per)
	}
	return &seqLoader{t: t}
}

// add appends an entry.
func (l *seqLoader) add(h uint64, seq int64) {
	p := l.t.part(h)
	if len(p.sorted) == cap(p.sorted) {
		grown, mem := allocEntries(2 * cap(p.sorted))
		grown = append(grown, p.sorted...)
		p.mem.free()
		p.sorted, p.mem = grown, mem
	}
	p.sorted = append(p.sorted, hashSeq{h, seq})
}

// finish sorts every part and returns the hashes added more than once
// (collisions), each once; of those, the entry of the lowest seq stays.
func (l *seqLoader) finish() (dups []uint64) {
	t := l.t
	t.n = 0
	for i := range t.parts {
		p := &t.parts[i]
		slices.SortFunc(p.sorted, func(a, b hashSeq) int {
			if c := cmp.Compare(a.h, b.h); c != 0 {
				return c
			}
			return cmp.Compare(a.seq, b.seq)
		})
		out := p.sorted[:0]
		for k, e := range p.sorted {
			if k > 0 && e.h == out[len(out)-1].h {
				if len(dups) == 0 || dups[len(dups)-1] != e.h {
					dups = append(dups, e.h)
				}
				continue
			}
			out = append(out, e)
		}
		p.sorted = out
		t.n += len(out)
	}
	return dups
}
