package tensor

// #include <stdint.h>
// extern void at_set_num_threads(int);
// extern int at_get_num_threads();
import "C"

// NumThreads is libtorch's intra-op thread count. Unless OMP_NUM_THREADS or
// a call sets it, libtorch 1.13 uses the number of physical cores, which on
// a VM whose vCPUs are one core's hyperthreads is 1.
func NumThreads() int { return int(C.at_get_num_threads()) }

// SetNumThreads sets libtorch's intra-op thread count (as
// torch.set_num_threads).
func SetNumThreads(n int) { C.at_set_num_threads(C.int(n)) }
