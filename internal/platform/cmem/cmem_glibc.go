//go:build linux && cgo

package cmem

/*
#include <malloc.h>

static void skyjoin_mallinfo(size_t out[3]) {
	struct mallinfo2 m = mallinfo2();
	out[0] = m.uordblks;
	out[1] = m.fordblks;
	out[2] = m.hblkhd;
}
*/
import "C"

func read() (Stats, bool) {
	var out [3]C.size_t
	C.skyjoin_mallinfo(&out[0])
	return Stats{InUse: int64(out[0]), Free: int64(out[1]), Mmapped: int64(out[2])}, true
}
