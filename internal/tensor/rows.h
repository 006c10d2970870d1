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
