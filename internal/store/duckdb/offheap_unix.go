//go:build !noduckdb && unix

package duckdb

import (
	"syscall"
	"unsafe"
)

// offHeap is memory mapped for an array of entries, outside Go's heap (so
// the collector neither scans it nor counts it when it paces itself).
type offHeap []byte

// offHeapMin is the smallest array mapped on its own: smaller ones stay
// in the heap, where a page of their own would waste memory.
const offHeapMin = 64 << 10

// allocEntries returns an empty slice with room for n entries.
func allocEntries(n int) ([]hashSeq, offHeap) {
	size := n * int(unsafe.Sizeof(hashSeq{}))
	if size < offHeapMin {
		return make([]hashSeq, 0, n), nil
	}
	mem, err := syscall.Mmap(-1, 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		return make([]hashSeq, 0, n), nil // the heap, then
	}
	return unsafe.Slice((*hashSeq)(unsafe.Pointer(&mem[0])), n)[:0], mem
}

// free unmaps the memory; nothing may use the entries after.
func (m offHeap) free() {
	if m != nil {
		_ = syscall.Munmap(m)
	}
}
