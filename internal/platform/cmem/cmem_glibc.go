//go:build linux && cgo

package cmem

/*
#include <stddef.h>
#include <malloc.h>

// mallinfo2 is glibc's, from 2.33; elsewhere (musl, an older glibc) there
// are no figures.
static int skyjoin_mallinfo(size_t out[3]) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
	struct mallinfo2 m = mallinfo2();
	out[0] = m.uordblks;
	out[1] = m.fordblks;
	out[2] = m.hblkhd;
	return 0;
#else
	return -1;
#endif
}
*/
import "C"

func read() (Stats, bool) {
	var out [3]C.size_t
	if C.skyjoin_mallinfo(&out[0]) != 0 {
		return Stats{}, false
	}
	return Stats{InUse: int64(out[0]), Free: int64(out[1]), Mmapped: int64(out[2])}, true
}
