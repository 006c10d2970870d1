// The few-rows kernels behind Scope.Linear and Scope.Conv1D (see rows.go).

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

static inline __attribute__((always_inline)) void store8(float *p, v8 v) {
	memcpy(p, &v, sizeof v);
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

// COLS computes y[r, n0:n1] = b + sum_j x[r, j] * w[j, n0:n1] (w [k, n_out],
// GPT-2's Conv1D layout) in tiles of TILE columns, so that a tile of every
// row stays in L1 while the weight's rows stream through once; four weight
// rows at a time, so that each tile is loaded and stored once per four.
#define TILE 256
#define COLS_STEP(R, J)                                                           \
	{                                                                             \
		const float *wj[J];                                                       \
		float xj[R][J];                                                           \
		for (int i = 0; i < J; i++) {                                             \
			wj[i] = w + (j + i) * n_out;                                          \
			for (int r = 0; r < R; r++) xj[r][i] = x[r * k + j + i];              \
		}                                                                         \
		int64_t n = c0;                                                           \
		for (; n + 8 <= c1; n += 8) {                                             \
			v8 wv[J];                                                             \
			for (int i = 0; i < J; i++) wv[i] = load8(wj[i] + n);                 \
			for (int r = 0; r < R; r++) {                                         \
				v8 acc = load8(y + r * n_out + n);                                \
				for (int i = 0; i < J; i++) acc += xj[r][i] * wv[i];              \
				store8(y + r * n_out + n, acc);                                   \
			}                                                                     \
		}                                                                         \
		for (; n < c1; n++)                                                       \
			for (int r = 0; r < R; r++)                                           \
				for (int i = 0; i < J; i++) y[r * n_out + n] += xj[r][i] * wj[i][n]; \
	}
#define COLS(R)                                                                   \
	for (int64_t c0 = n0; c0 < n1; c0 += TILE) {                                  \
		int64_t c1 = c0 + TILE < n1 ? c0 + TILE : n1;                             \
		for (int r = 0; r < R; r++)                                               \
			for (int64_t n = c0; n < c1; n++) y[r * n_out + n] = b ? b[n] : 0.f;  \
		int64_t j = 0;                                                            \
		for (; j + 4 <= k; j += 4) COLS_STEP(R, 4)                                \
		for (; j < k; j++) COLS_STEP(R, 1)                                        \
	}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
// One build runs everywhere; the loader picks the AVX-512 or AVX2 copy
// where the CPU has it (the loops are bound by reading the weight).
#define CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define CLONES
#endif

// RANGE_FN defines name(), which runs BODY for outputs n0..n1 with the row
// count as a compile-time constant.
#define RANGE_FN(name, BODY)                                                          \
	CLONES static void name(const float *x, const float *w, const float *b, float *y, \
	                        int rows, int64_t n_out, int64_t k, int64_t n0, int64_t n1) { \
		switch (rows) {                                                               \
		case 1: BODY(1) break;                                                        \
		case 2: BODY(2) break;                                                        \
		case 3: BODY(3) break;                                                        \
		case 4: BODY(4) break;                                                        \
		}                                                                             \
	}

RANGE_FN(rows_range, ROWS)
RANGE_FN(cols_range, COLS)

typedef void (*range_fn)(const float *, const float *, const float *, float *, int, int64_t, int64_t, int64_t, int64_t);

// run splits the n_out outputs over libtorch's intra-op threads (what its
// own ops and OpenBLAS use on this thread: the same OpenMP team); small
// weights are not worth waking the team.
static void run(range_fn f, const float *x, const float *w, const float *b, float *y,
                int rows, int64_t n_out, int64_t k) {
	int threads = at_get_num_threads();
	if (threads > 1 && n_out * k >= (1 << 16) && !omp_in_parallel()) {
#pragma omp parallel num_threads(threads)
		{
			int t = omp_get_thread_num(), nt = omp_get_num_threads();
			f(x, w, b, y, rows, n_out, k, n_out * t / nt, n_out * (t + 1) / nt);
		}
		return;
	}
	f(x, w, b, y, rows, n_out, k, 0, n_out);
}

void gopeft_linear_rows_t(const float *x, const float *w, const float *b, float *y,
                          int rows, int64_t n_out, int64_t k) {
	run(cols_range, x, w, b, y, rows, n_out, k);
}

void gopeft_linear_rows(const float *x, const float *w, const float *b, float *y,
                        int rows, int64_t n_out, int64_t k) {
	run(rows_range, x, w, b, y, rows, n_out, k);
}
