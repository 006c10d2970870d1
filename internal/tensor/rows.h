#include <stdint.h>

#define GOPEFT_MAX_ROWS 4

// gopeft_linear_rows is y[r, n] = sum_j x[r, j] * w[n, j] (+ b[n]) for
// rows <= GOPEFT_MAX_ROWS rows; x [rows, k], w [n_out, k], b [n_out] or
// NULL, y [rows, n_out], all contiguous float32.
void gopeft_linear_rows(const float *x, const float *w, const float *b, float *y,
                        int rows, int64_t n_out, int64_t k);
