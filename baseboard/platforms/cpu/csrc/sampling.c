/* Greedy sampling: the argmax of each float32 row, with torch.argmax's rules (the first
 * index of the largest value; a NaN counts as the largest). Vectorized, two passes per
 * row: the maximum, then its first index (the row is in cache by then). */
#include <math.h>
#include <stdint.h>
#include "kernels.h"
#include "vec.h"

static int64_t argmax_row(const float *x, long n) {
    __m512 lowest = _mm512_set1_ps(-INFINITY), best = lowest;
    __mmask16 nan = 0;
    for (long i = 0; i < n; i += 16) {
        __m512 v = _mm512_mask_loadu_ps(lowest, lanes_mask(n - i), x + i);
        nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
        best = _mm512_max_ps(best, v);
    }
    if (nan) {
        for (long i = 0; i < n; i++)
            if (isnan(x[i])) return i;
    }
    float target = _mm512_reduce_max_ps(best);
    __m512 t = _mm512_set1_ps(target);
    for (long i = 0; i < n; i += 16) {
        __mmask16 hit = _mm512_mask_cmp_ps_mask(lanes_mask(n - i), _mm512_loadu_ps(x + i), t,
                                                _CMP_EQ_OQ);
        if (hit) return i + __builtin_ctz(hit);
    }
    return 0;  /* every value is -inf: torch returns the first index too */
}

void bb_argmax(const float *x, long row_stride, long rows, long n, int64_t *out, int threads) {
    #pragma omp parallel for num_threads(threads) if(rows > 1)
    for (long r = 0; r < rows; r++) out[r] = argmax_row(x + r * row_stride, n);
}
