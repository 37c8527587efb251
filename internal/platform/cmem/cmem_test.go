package cmem

import (
	"runtime"
	"testing"
)

// TestRead: on Linux with cgo the C heap's figures are read, and they are
// not all zero (the C runtime allocates at start); elsewhere Read says it
// cannot.
func TestRead(t *testing.T) {
	s, ok := Read()
	if runtime.GOOS != "linux" {
		if ok {
			t.Errorf("Read() = %+v, true on %s: want false", s, runtime.GOOS)
		}
		return
	}
	if !ok {
		t.Skip("no mallinfo2: built without cgo, or a C library other than glibc 2.33 or later")
	}
	if s.InUse < 0 || s.Free < 0 || s.Mmapped < 0 || s.InUse+s.Free+s.Mmapped == 0 {
		t.Errorf("Read() = %+v: want non-negative figures, not all zero", s)
	}
}
