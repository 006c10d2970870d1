package main

/*
#include <malloc.h>

// Bytes the C allocator has handed out and not taken back (heap chunks in
// use in every arena plus mmapped chunks): libtorch's tensors, exactly.
static long long gopeft_malloc_in_use(void) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
	struct mallinfo2 m = mallinfo2();
	return (long long)(m.uordblks + m.hblkhd);
#else
	return -1;
#endif
}
*/
import "C"

// mallocInUse is glibc's count of live malloc'd bytes (-1 elsewhere).
func mallocInUse() int64 { return int64(C.gopeft_malloc_in_use()) }
