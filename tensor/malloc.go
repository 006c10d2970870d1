package tensor

/*
#include <malloc.h>

// gopeft_tune_malloc fixes glibc's mmap threshold at 32 MiB and its trim
// threshold at 64 MiB (the values glibc's own dynamic adjustment tops out
// at). It returns 0 where these options do not exist (not glibc).
static int gopeft_tune_malloc(void) {
#if defined(M_MMAP_THRESHOLD) && defined(M_TRIM_THRESHOLD)
	return mallopt(M_MMAP_THRESHOLD, 32 << 20) && mallopt(M_TRIM_THRESHOLD, 64 << 20);
#else
	return 0;
#endif
}
*/
import "C"

import "os"

// MallocTuned reports whether the package set glibc's malloc thresholds at
// start-up (see tuneMalloc).
var MallocTuned = tuneMalloc()

// tuneMalloc keeps freed tensor memory in the process instead of handing
// it back to the kernel after every layer.
//
// A model's forward pass frees each layer's intermediates together when
// the layer ends (Scope.FreeSince). With glibc's default, dynamic
// thresholds, such a block of tens of MiB at the top of the heap is larger
// than the trim threshold (twice the largest chunk freed so far, ~11 MiB
// here), so it is returned to the kernel and the next layer faults every
// page in again: 2.4× PyTorch's page faults on the benchmark model (whose
// Python frees tensors one at a time) and a forward ~8% slower. With the
// thresholds at the ceiling glibc itself would reach, page faults drop
// below PyTorch's and the forward runs at its speed; peak RSS is
// unchanged (BENCHMARKS.md). Like MALLOC_ARENA_MAX and friends this is
// process-wide, so it stands aside when the process sets
// MALLOC_MMAP_THRESHOLD_ or MALLOC_TRIM_THRESHOLD_ itself, or
// GOPEFT_MALLOC=default.
func tuneMalloc() bool {
	if os.Getenv("GOPEFT_MALLOC") == "default" || os.Getenv("MALLOC_MMAP_THRESHOLD_") != "" ||
		os.Getenv("MALLOC_TRIM_THRESHOLD_") != "" {
		return false
	}
	return C.gopeft_tune_malloc() != 0
}
