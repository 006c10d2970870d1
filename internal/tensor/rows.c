// The few-rows linear kernel behind Scope.Linear (see rows.go).

#include <stdint.h>
#include <string.h>
#include <omp.h>

#include "rows.h"

extern int at_get_num_threads(void); // gotch's libtch wrapper of at::get_num_threads

typedef float v8 __attribute__((vector_size(32)));

static inline __attribute__((always_inline)) v8 load8(const float *p) {
	v8 v;
	memcpy(&v, p, sizeof v);
	return v;
}

static inline __attribute__((always_inline)) float sum8(v8 v) {
	return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
}

// ROWS computes outputs n0..n1 for R rows: each weight row is loaded once
// and multiplied into all R inputs (which stay in L1).
#define ROWS(R)                                                              \
	for (int64_t n = n0; n < n1; n++) {                                      \
		const float *wn = w + n * k;                                         \
		v8 acc[R];                                                           \
		for (int r = 0; r < R; r++) acc[r] = (v8){0};                        \
		int64_t j = 0;                                                       \
		for (; j + 8 <= k; j += 8) {                                         \
			v8 wv = load8(wn + j);                                           \
			for (int r = 0; r < R; r++) acc[r] += wv * load8(x + r * k + j); \
		}                                                                    \
		for (int r = 0; r < R; r++) {                                        \
			float t = sum8(acc[r]);                                          \
			for (int64_t i = j; i < k; i++) t += wn[i] * x[r * k + i];       \
			y[r * n_out + n] = b ? t + b[n] : t;                             \
		}                                                                    \
	}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
// One build runs everywhere; the loader picks the AVX-512 or AVX2 copy
// where the CPU has it (the loop is bound by reading the weight).
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#endif
static void rows_range(const float *x, const float *w, const float *b, float *y,
                       int rows, int64_t n_out, int64_t k, int64_t n0, int64_t n1) {
	switch (rows) {
	case 1: ROWS(1) break;
	case 2: ROWS(2) break;
	case 3: ROWS(3) break;
	case 4: ROWS(4) break;
	}
}

void gopeft_linear_rows(const float *x, const float *w, const float *b, float *y,
                        int rows, int64_t n_out, int64_t k) {
	// libtorch's intra-op thread count on this thread (what its own ops and
	// OpenBLAS use: the same OpenMP team); small weights are not worth
	// waking it.
	int threads = at_get_num_threads();
	if (threads > 1 && n_out * k >= (1 << 16) && !omp_in_parallel()) {
#pragma omp parallel num_threads(threads)
		{
			int t = omp_get_thread_num(), nt = omp_get_num_threads();
			rows_range(x, w, b, y, rows, n_out, k, n_out * t / nt, n_out * (t + 1) / nt);
		}
		return;
	}
	rows_range(x, w, b, y, rows, n_out, k, 0, n_out);
}
