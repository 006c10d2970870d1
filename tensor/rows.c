// The few-rows kernels behind Scope.Linear and Scope.Conv1D (see rows.go).

#include <stdint.h>
#include <stdlib.h>
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

// ---- bfloat16 --------------------------------------------------------------
// Weights, inputs, bias and outputs in bfloat16 (uint16_t bit patterns): the
// products (exact in float32) are summed in float32 with the bias and each
// output is rounded once to the nearest bfloat16, ties to even, as a
// float32-accumulating bfloat16 GEMM does. (libtorch 1.13's own bfloat16
// products here stay within half a bfloat16 ulp of the exact result for
// inner sizes >= 64, but its mv rounds partial sums at small sizes: off by
// up to a third with 5 inputs.)

static inline __attribute__((always_inline)) float bf16_f32(uint16_t h) {
	uint32_t u = (uint32_t)h << 16;
	float f;
	memcpy(&f, &u, sizeof f);
	return f;
}

// f32_bf16 rounds to the nearest bfloat16, ties to even (c10's
// round_to_nearest_even: NaN becomes the quiet NaN 0x7fc0).
static inline __attribute__((always_inline)) uint16_t f32_bf16(float f) {
	uint32_t u;
	memcpy(&u, &f, sizeof u);
	if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;
	return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1)) >> 16);
}

typedef uint32_t u8v __attribute__((vector_size(32)));

// AHEAD prefetches (into L2) the weight bytes `bytes` beyond p: the
// weight rows a kernel will read next, whose streams are too short (1-3
// KiB a row) or too many at once for the hardware prefetchers to run far
// enough ahead; reading 4 rows ahead more than halves a decode step's time
// on a 2-core Xeon VM. A prefetch past the weight's end does no harm (it
// never faults); the address is formed as an integer so that no pointer
// goes past the weight either.
#define AHEAD(p, bytes) __builtin_prefetch((const void *)((uintptr_t)(p) + (uintptr_t)(bytes)), 0, 2)

// ROWS_BF16 is ROWS for a bfloat16 weight on CPUs without bfloat16 dot
// products. Each 16 weight values (a 32-byte load), read as 8 uint32
// pairs, give the 8 even-indexed values as float32 by a shift left 16 and
// the 8 odd-indexed ones by clearing the low 16 bits, so the loop has no
// shuffles; x has been widened once per call into the matching order
// (widen_rows): two FMA chains per row. The last < 16 go one by one.
// Vectors of 8 as in ROWS: wider ones make GCC's AVX2 clone spill.
#define ROWS_BF16(R)                                                              \
	for (int64_t n = n0; n < n1; n++) {                                           \
		const uint16_t *wn = w + n * k;                                           \
		v8 ae[R], ao[R];                                                          \
		for (int r = 0; r < R; r++) ae[r] = ao[r] = (v8){0};                      \
		int64_t j = 0;                                                            \
		for (; j + 16 <= k; j += 16) {                                            \
			u8v u;                                                                \
			memcpy(&u, wn + j, sizeof u);                                         \
			AHEAD(wn + j, 8 * k);                                                 \
			v8 we = (v8)(u << 16), wo = (v8)(u & 0xffff0000u);                    \
			for (int r = 0; r < R; r++) {                                         \
				ae[r] += we * load8(x + r * k + j);                               \
				ao[r] += wo * load8(x + r * k + j + 8);                           \
			}                                                                     \
		}                                                                         \
		for (int r = 0; r < R; r++) {                                             \
			float t = sum8(ae[r] + ao[r]);                                        \
			for (int64_t i = j; i < k; i++) t += bf16_f32(wn[i]) * x[r * k + i];  \
			y[r * n_out + n] = f32_bf16(b ? t + bf16_f32(b[n]) : t);              \
		}                                                                         \
	}

// COLS_BF16 is COLS for a bfloat16 weight [k, n_out]: the tile of outputs
// is summed in float32 on the stack (starting from the bias) and rounded
// once when the weight has streamed through. Each 16 columns of a weight
// row are read as 8 uint32 pairs, as in ROWS_BF16, so the tile keeps each
// 16 columns' sums as the 8 even ones then the 8 odd ones (TILE_COLS
// walks that order); the last < 16 columns one by one, in order.
#define COLS_BF16_STEP(R, J)                                                      \
	{                                                                             \
		const uint16_t *wj[J];                                                    \
		float xj[R][J];                                                           \
		for (int i = 0; i < J; i++) {                                             \
			wj[i] = w + (j + i) * n_out;                                          \
			for (int r = 0; r < R; r++) xj[r][i] = x[r * k + j + i];              \
		}                                                                         \
		int64_t n = c0;                                                           \
		for (; n + 16 <= c1; n += 16) {                                           \
			v8 we[J], wo[J];                                                      \
			for (int i = 0; i < J; i++) {                                         \
				u8v u;                                                            \
				memcpy(&u, wj[i] + n, sizeof u);                                  \
				AHEAD(wj[i] + n, 8 * n_out);                                      \
				we[i] = (v8)(u << 16);                                            \
				wo[i] = (v8)(u & 0xffff0000u);                                    \
			}                                                                     \
			for (int r = 0; r < R; r++) {                                         \
				float *a = acc[r] + (n - c0);                                     \
				v8 e = load8(a), o = load8(a + 8);                                \
				for (int i = 0; i < J; i++) {                                     \
					e += xj[r][i] * we[i];                                        \
					o += xj[r][i] * wo[i];                                        \
				}                                                                 \
				store8(a, e);                                                     \
				store8(a + 8, o);                                                 \
			}                                                                     \
		}                                                                         \
		for (; n < c1; n++)                                                       \
			for (int r = 0; r < R; r++)                                           \
				for (int i = 0; i < J; i++) acc[r][n - c0] += xj[r][i] * bf16_f32(wj[i][n]); \
	}
// TILE_COLS runs BODY with p, the tile's position, and col, the column
// whose sum is there.
#define TILE_COLS(BODY)                                                           \
	{                                                                             \
		int64_t n = c0;                                                           \
		for (; n + 16 <= c1; n += 16)                                             \
			for (int64_t i = 0; i < 16; i++) {                                    \
				int64_t p = n - c0 + i, col = n + (i < 8 ? 2 * i : 2 * (i - 8) + 1); \
				BODY                                                              \
			}                                                                     \
		for (; n < c1; n++) {                                                     \
			int64_t p = n - c0, col = n;                                          \
			BODY                                                                  \
		}                                                                         \
	}
#define COLS_BF16(R)                                                              \
	for (int64_t c0 = n0; c0 < n1; c0 += TILE) {                                  \
		int64_t c1 = c0 + TILE < n1 ? c0 + TILE : n1;                             \
		float acc[R][TILE];                                                       \
		TILE_COLS(for (int r = 0; r < R; r++) acc[r][p] = b ? bf16_f32(b[col]) : 0.f;) \
		int64_t j = 0;                                                            \
		for (; j + 4 <= k; j += 4) COLS_BF16_STEP(R, 4)                           \
		for (; j < k; j++) COLS_BF16_STEP(R, 1)                                   \
		TILE_COLS(for (int r = 0; r < R; r++) y[r * n_out + col] = f32_bf16(acc[r][p]);) \
	}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
// One build runs everywhere; the loader picks the AVX-512 or AVX2 copy
// where the CPU has it (the loops are bound by reading the weight).
#define CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define CLONES
#endif

// The AVX-512 BF16 kernel (vdpbf16ps: 32 bfloat16 products a step, summed
// in pairs into 16 float32 lanes), compiled where the compiler knows the
// instruction and run where the CPU has it (gopeft_bf16_dot). Unlike the
// widening kernel, vdpbf16ps takes subnormal inputs (|v| < 2^-126) as zero
// and flushes subnormal sums to zero, whatever MXCSR says.
#if defined(__x86_64__) && ((defined(__clang__) && __clang_major__ >= 12) ||              \
                            (!defined(__clang__) && defined(__GNUC__) && __GNUC__ >= 10))
#define HAVE_BF16_DOT 1
#include <immintrin.h>
#define DOT_TARGET __attribute__((target("avx512f,avx512bw,avx512bf16")))

static inline __attribute__((always_inline)) DOT_TARGET __m512bh loadbh(const uint16_t *p) {
	return (__m512bh)_mm512_loadu_si512(p);
}

static inline __attribute__((always_inline)) DOT_TARGET __m512bh loadbh_tail(__mmask32 m, const uint16_t *p) {
	return (__m512bh)_mm512_maskz_loadu_epi16(m, p);
}

// sum4 is (Σa, Σb, Σc, Σd): four accumulators reduced together.
static inline __attribute__((always_inline)) DOT_TARGET __m128 sum4(__m512 a, __m512 b, __m512 c, __m512 d) {
	// per 128-bit lane: [a0+a2, b0+b2, a1+a3, b1+b3], the same for c, d
	__m512 ab = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
	__m512 cd = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
	// per 128-bit lane: [a, b, c, d]
	__m512d abd = _mm512_castps_pd(ab), cdd = _mm512_castps_pd(cd);
	__m512 t = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(abd, cdd)),
	                         _mm512_castpd_ps(_mm512_unpackhi_pd(abd, cdd)));
	__m256 h = _mm256_add_ps(_mm512_castps512_ps256(t),
	                         _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(t), 1)));
	return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

// ROWS_DOT is ROWS_BF16 with the products taken by vdpbf16ps straight from
// the bfloat16 inputs, 32 inner values a step (the last < 32 through
// masked loads, zeros beyond k), for four weight rows at a time: each
// step's inputs are loaded once for the four, there are 4R independent
// sums in flight, and the four outputs' sums are reduced together. Outputs
// beyond the last four go one at a time.
#define DOT_STEP(Q, R, LOAD)                                                            \
	{                                                                                   \
		__m512bh xv[R];                                                                 \
		for (int r = 0; r < R; r++) xv[r] = LOAD(x + r * k + j);                        \
		for (int q = 0; q < Q; q++) {                                                   \
			__m512bh wv = LOAD(wn + q * k + j);                                         \
			if (Q == 4) AHEAD(wn + q * k + j, 8 * k);                                   \
			for (int r = 0; r < R; r++) a[q][r] = _mm512_dpbf16_ps(a[q][r], wv, xv[r]); \
		}                                                                               \
	}
#define DOT_SUMS(Q, R)                                                            \
	__m512 a[Q][R];                                                               \
	for (int q = 0; q < Q; q++)                                                   \
		for (int r = 0; r < R; r++) a[q][r] = _mm512_setzero_ps();                \
	int64_t j = 0;                                                                \
	for (; j + 32 <= k; j += 32) DOT_STEP(Q, R, loadbh)                           \
	if (j < k) {                                                                  \
		__mmask32 m = (__mmask32)((1u << (k - j)) - 1);                           \
		DOT_STEP(Q, R, MASKED)                                                    \
	}
#define MASKED(p) loadbh_tail(m, p)
#define ROWS_DOT(R)                                                                        \
	{                                                                                      \
		int64_t n = n0;                                                                    \
		for (; n + 4 <= n1; n += 4) {                                                      \
			const uint16_t *wn = w + n * k;                                                \
			DOT_SUMS(4, R)                                                                 \
			for (int r = 0; r < R; r++) {                                                  \
				float t[4];                                                                \
				_mm_storeu_ps(t, sum4(a[0][r], a[1][r], a[2][r], a[3][r]));                \
				for (int q = 0; q < 4; q++)                                                \
					y[r * n_out + n + q] = f32_bf16(b ? t[q] + bf16_f32(b[n + q]) : t[q]); \
			}                                                                              \
		}                                                                                  \
		for (; n < n1; n++) {                                                              \
			const uint16_t *wn = w + n * k;                                                \
			DOT_SUMS(1, R)                                                                 \
			for (int r = 0; r < R; r++) {                                                  \
				float t = _mm512_reduce_add_ps(a[0][r]);                                   \
				y[r * n_out + n] = f32_bf16(b ? t + bf16_f32(b[n]) : t);                   \
			}                                                                              \
		}                                                                                  \
	}
#endif

// RANGE_FN defines name(), which runs BODY for outputs n0..n1 with the row
// count as a compile-time constant; x is XT, w and b WT, y YT.
#define RANGE_FN(name, ATTR, XT, WT, YT, BODY)                                          \
	ATTR static void name(const void *x_, const void *w_, const void *b_, void *y_,     \
	                      int rows, int64_t n_out, int64_t k, int64_t n0, int64_t n1) { \
		const XT *x = x_;                                                               \
		const WT *w = w_, *b = b_;                                                      \
		YT *y = y_;                                                                     \
		switch (rows) {                                                                 \
		case 1: BODY(1) break;                                                          \
		case 2: BODY(2) break;                                                          \
		case 3: BODY(3) break;                                                          \
		case 4: BODY(4) break;                                                          \
		}                                                                               \
	}

RANGE_FN(rows_range, CLONES, float, float, float, ROWS)
RANGE_FN(cols_range, CLONES, float, float, float, COLS)
RANGE_FN(rows_range_bf16, CLONES, float, uint16_t, uint16_t, ROWS_BF16)
RANGE_FN(cols_range_bf16, CLONES, float, uint16_t, uint16_t, COLS_BF16)
#ifdef HAVE_BF16_DOT
RANGE_FN(rows_range_dot, DOT_TARGET, uint16_t, uint16_t, uint16_t, ROWS_DOT)
#endif

typedef void (*range_fn)(const void *, const void *, const void *, void *, int, int64_t, int64_t, int64_t, int64_t);

// run splits the n_out outputs over libtorch's intra-op threads (what its
// own ops and OpenBLAS use on this thread: the same OpenMP team); small
// weights are not worth waking the team.
static void run(range_fn f, const void *x, const void *w, const void *b, void *y,
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

int gopeft_bf16_dot(void) {
#ifdef HAVE_BF16_DOT
	__builtin_cpu_init();
	return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
	       __builtin_cpu_supports("avx512bf16");
#else
	return 0;
#endif
}

// widen_rows is x's rows * k bfloat16 values as float32 in new memory (the
// caller frees it), or NULL when there is none. With pairs, each row is in
// ROWS_BF16's order: each 16 values as their 8 even- then 8 odd-indexed
// ones, the last < 16 as they are.
static float *widen_rows(const uint16_t *x, int rows, int64_t k, int pairs) {
	float *xf = malloc((size_t)rows * (size_t)k * sizeof(float));
	if (!xf) return NULL;
	for (int r = 0; r < rows; r++) {
		const uint16_t *xr = x + r * k;
		float *fr = xf + r * k;
		int64_t j = 0;
		if (pairs)
			for (; j + 16 <= k; j += 16)
				for (int i = 0; i < 8; i++) {
					fr[j + i] = bf16_f32(xr[j + 2 * i]);
					fr[j + 8 + i] = bf16_f32(xr[j + 2 * i + 1]);
				}
		for (; j < k; j++) fr[j] = bf16_f32(xr[j]);
	}
	return xf;
}

int gopeft_linear_rows_bf16(const uint16_t *x, const uint16_t *w, const uint16_t *b, uint16_t *y,
                            int rows, int64_t n_out, int64_t k, int dot) {
#ifdef HAVE_BF16_DOT
	if (dot) {
		run(rows_range_dot, x, w, b, y, rows, n_out, k);
		return GOPEFT_BF16_DOT;
	}
#endif
	float *xf = widen_rows(x, rows, k, 1);
	if (!xf) return -1;
	run(rows_range_bf16, xf, w, b, y, rows, n_out, k);
	free(xf);
	return GOPEFT_BF16_WIDEN;
}

int gopeft_linear_rows_bf16_t(const uint16_t *x, const uint16_t *w, const uint16_t *b, uint16_t *y,
                              int rows, int64_t n_out, int64_t k) {
	float *xf = widen_rows(x, rows, k, 0);
	if (!xf) return -1;
	run(cols_range_bf16, xf, w, b, y, rows, n_out, k);
	free(xf);
	return GOPEFT_BF16_WIDEN;
}
