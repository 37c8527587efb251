//go:build !noduckdb && !unix

package duckdb

// offHeap is nothing where memory is not mapped: the entries are in the
// heap.
type offHeap []byte

func allocEntries(n int) ([]hashSeq, offHeap) { return make([]hashSeq, 0, n), nil }

func (offHeap) free() {}
