//go:build !noduckdb

package duckdb

import (
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
)

// TestSeqTable: puts, deletes and puts again of deleted hashes, checked
// against a map after every step batch, with hashes spread over every part
// and with hashes all in one part (which merges often: its map is full
// every few hundred puts, and deletes leave its array a quarter dead).
func TestSeqTable(t *testing.T) {
	for _, tc := range []struct {
		name string
		mask uint64 // or-ed into every hash
		keep uint64 // and-ed into every hash
	}{
		{"spread", 0, ^uint64(0)},
		{"one part", 0x2a << 56, 1<<56 - 1},
		// Far from uniform: 256 clusters of 65,536 hashes each, for the
		// search's rounds that halve the range.
		{"clustered", 0x2a << 56, 0x00ff00000000ffff},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, 2))
			var tab seqTable
			defer tab.free()
			model := map[uint64]int64{}
			var keys []uint64
			seq := int64(0)
			check := func() {
				t.Helper()
				if tab.n != len(model) {
					t.Fatalf("n = %d, want %d", tab.n, len(model))
				}
				for h, want := range model {
					if got := tab.get(h); got != want {
						t.Fatalf("get(%x) = %d, want %d", h, got, want)
					}
				}
				for range 1000 {
					h := rng.Uint64()&tc.keep | tc.mask
					if _, ok := model[h]; !ok && tab.get(h) != 0 {
						t.Fatalf("get(%x) of an absent hash = %d", h, tab.get(h))
					}
				}
			}
			for round := range 30 {
				for range 3000 {
					switch r := rng.IntN(10); {
					case r < 6 || len(keys) == 0:
						h := rng.Uint64()&tc.keep | tc.mask
						if _, ok := model[h]; ok {
							continue
						}
						seq++
						tab.put(h, seq)
						model[h] = seq
						keys = append(keys, h)
					case r < 9:
						i := rng.IntN(len(keys))
						h := keys[i]
						_, was := model[h]
						if got := tab.del(h); got != was {
							t.Fatalf("del(%x) = %v, want %v", h, got, was)
						}
						delete(model, h)
					default: // put a deleted hash again
						h := keys[rng.IntN(len(keys))]
						if _, ok := model[h]; ok {
							continue
						}
						seq++
						tab.put(h, seq)
						model[h] = seq
					}
				}
				if round%5 == 4 {
					check()
				}
			}
			check()
			p := tab.part(tc.mask)
			if tc.mask != 0 && len(p.sorted) == 0 {
				t.Error("the part never merged")
			}
			if !slices.IsSortedFunc(p.sorted, func(a, b hashSeq) int {
				switch {
				case a.h < b.h:
					return -1
				case a.h > b.h:
					return 1
				}
				return 0
			}) {
				t.Error("a part's array is not sorted")
			}
		})
	}
}

// TestSeqLoader: a bulk load gives the table a map would, keeps the
// lowest seq of a hash given twice and reports it once, grows a part past
// the room it was given, and the table takes puts and deletes after.
func TestSeqLoader(t *testing.T) {
	var tab seqTable
	defer tab.free()
	ld := newSeqLoader(&tab, 1000) // room for about 1,000: 50,000 come
	model := map[uint64]int64{}
	rng := rand.New(rand.NewPCG(3, 4))
	var dup uint64
	for seq := int64(1); seq <= 50_000; seq++ {
		h := rng.Uint64()
		if seq == 40_000 {
			h = dup // a collision: the first stays
		}
		if seq == 10_000 {
			dup = h
		}
		if _, ok := model[h]; !ok {
			model[h] = seq
		}
		ld.add(h, seq)
	}
	// In one part, more than its room, in descending order.
	for i := range 2000 {
		h := uint64(7)<<56 | uint64(1_000_000-i)
		model[h] = int64(100_000 + i)
		ld.add(h, int64(100_000+i))
	}
	dups := ld.finish()
	if !slices.Equal(dups, []uint64{dup}) {
		t.Fatalf("collisions %x, want [%x]", dups, dup)
	}
	if tab.n != len(model) {
		t.Fatalf("n = %d, want %d", tab.n, len(model))
	}
	for h, want := range model {
		if got := tab.get(h); got != want {
			t.Fatalf("get(%x) = %d, want %d", h, got, want)
		}
	}
	if !tab.del(dup) || tab.get(dup) != 0 || tab.del(dup) {
		t.Fatal("delete after the load")
	}
	tab.put(dup, 7)
	if tab.get(dup) != 7 {
		t.Fatal("put after the load")
	}
}

// TestIDIndexMappedBytes: an index loaded with room for 2 M ids maps its
// arrays outside Go's heap, 16 bytes an entry, and says so; free unmaps
// them.
func TestIDIndexMappedBytes(t *testing.T) {
	if _, mem := allocEntries(offHeapMin / 16); mem == nil {
		t.Skip("this platform keeps the index in Go's heap")
	} else {
		mem.free()
	}
	x := newIDIndex()
	defer x.free()
	ld := x.loader(2_000_000)
	for i := range 10_000 {
		ld.add([]byte("id-"+strconv.Itoa(i)), []byte("user"), int64(i+1))
	}
	ld.finish()
	if got := x.mappedBytes(); got < 2_000_000*16 {
		t.Errorf("mapped %d bytes with room for 2,000,000 ids, want at least %d", got, 2_000_000*16)
	}
	x.free()
	if got := x.mappedBytes(); got != 0 {
		t.Errorf("mapped %d bytes after free, want 0", got)
	}
}

// BenchmarkSeqTableGet looks up hashes in a table of 5 M entries (80 MB,
// far beyond the CPU's caches), half of them present.
func BenchmarkSeqTableGet(b *testing.B) {
	const n = 5_000_000
	rng := rand.New(rand.NewPCG(3, 4))
	var tab seqTable
	defer tab.free()
	l := newSeqLoader(&tab, n)
	keys := make([]uint64, 0, n)
	for i := range n {
		h := rng.Uint64()
		l.add(h, int64(i+1))
		keys = append(keys, h)
	}
	l.finish()
	i := 0
	for b.Loop() {
		h := keys[(i*7919)%n]
		if i%2 == 1 {
			h = rng.Uint64()
		}
		tab.get(h)
		i++
	}
}
