#include <stdint.h>

#define GOPEFT_MAX_ROWS 4

// gopeft_linear_rows is y[r, n] = sum_j x[r, j] * w[n, j] (+ b[n]) for
// rows <= GOPEFT_MAX_ROWS rows; x [rows, k], w [n_out, k], b [n_out] or
// NULL, y [rows, n_out], all contiguous float32.
void gopeft_linear_rows(const float *x, const float *w, const float *b, float *y,
                        int rows, int64_t n_out, int64_t k);

// gopeft_linear_rows_t is the same with w [k, n_out] (GPT-2's Conv1D):
// y[r, n] = sum_j x[r, j] * w[j, n] (+ b[n]).
void gopeft_linear_rows_t(const float *x, const float *w, const float *b, float *y,
                          int rows, int64_t n_out, int64_t k);

// The bfloat16 kernels: x, w, b and y hold bfloat16 values (uint16_t bit
// patterns, the same layouts as above); the products are summed in float32
// and each output is rounded once to the nearest bfloat16, ties to even.
// They return the implementation that ran, or -1 when memory for x's
// float32 copy could not be had (y is then not written).
#define GOPEFT_BF16_DOT 1   // AVX-512 BF16 dot products (vdpbf16ps)
#define GOPEFT_BF16_WIDEN 2 // bfloat16 widened to float32, float32 FMA

// gopeft_bf16_dot reports whether this build has the AVX-512 BF16 kernel
// and the CPU runs it.
int gopeft_bf16_dot(void);

// gopeft_linear_rows_bf16 is gopeft_linear_rows for bfloat16 (w [n_out,
// k]); dot nonzero (only where gopeft_bf16_dot() says so) takes the AVX-512
// BF16 kernel, else the widening one.
int gopeft_linear_rows_bf16(const uint16_t *x, const uint16_t *w, const uint16_t *b, uint16_t *y,
                            int rows, int64_t n_out, int64_t k, int dot);

// gopeft_linear_rows_bf16_t is gopeft_linear_rows_t for bfloat16 (w [k,
// n_out]); it always widens.
int gopeft_linear_rows_bf16_t(const uint16_t *x, const uint16_t *w, const uint16_t *b, uint16_t *y,
                              int rows, int64_t n_out, int64_t k);
