/* Dense bf16 GEMM for small and large M, weights packed once into VNNI panels.
 *
 * Packed weight: [N/64 panels][K/2 pairs][64 columns][2] bf16 (K and N zero-padded), so a
 * panel is one contiguous stream: the M <= 8 decode case is pure weight streaming, and
 * every 32-bit broadcast of an x pair feeds four vdpbf16ps over 64 output columns. */
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#define PANEL 64

static inline __m512 pair_broadcast(const uint16_t *x, long k, long K) {
    uint32_t pair;
    if (k + 1 < K) {
        memcpy(&pair, x + k, 4);
    } else {
        pair = x[k];  /* odd K: the missing partner is zero, like the padded weight */
    }
    return _mm512_castsi512_ps(_mm512_set1_epi32((int)pair));
}

static inline void store_columns(uint16_t *y, __m512 acc, long columns) {
    __m256i packed = (__m256i)_mm512_cvtneps_pbh(acc);
    if (columns >= 16) {
        _mm256_storeu_si256((__m256i *)y, packed);
    } else if (columns > 0) {
        _mm256_mask_storeu_epi16(y, (__mmask16)((1u << columns) - 1), packed);
    }
}

/* One panel times MT rows of x: y[m, n0:n0+64] for m < MT. */
#define TILE(MT)                                                                           \
static void tile_##MT(const uint16_t *x, long lda, const uint16_t *panel, long K,          \
                      const float *bias, uint16_t *y, long ldc, long columns) {            \
    __m512 acc[MT][4];                                                                     \
    for (int j = 0; j < 4; j++) {                                                          \
        __m512 b = bias ? _mm512_loadu_ps(bias + 16 * j) : _mm512_setzero_ps();            \
        for (int m = 0; m < MT; m++) acc[m][j] = b;                                        \
    }                                                                                      \
    for (long k = 0; k < K; k += 2) {                                                      \
        const uint16_t *w = panel + k * PANEL;                                             \
        __m512bh w0 = (__m512bh)_mm512_load_si512(w);                                      \
        __m512bh w1 = (__m512bh)_mm512_load_si512(w + 32);                                 \
        __m512bh w2 = (__m512bh)_mm512_load_si512(w + 64);                                 \
        __m512bh w3 = (__m512bh)_mm512_load_si512(w + 96);                                 \
        for (int m = 0; m < MT; m++) {                                                     \
            __m512bh xb = (__m512bh)pair_broadcast(x + m * lda, k, K);                     \
            acc[m][0] = _mm512_dpbf16_ps(acc[m][0], xb, w0);                               \
            acc[m][1] = _mm512_dpbf16_ps(acc[m][1], xb, w1);                               \
            acc[m][2] = _mm512_dpbf16_ps(acc[m][2], xb, w2);                               \
            acc[m][3] = _mm512_dpbf16_ps(acc[m][3], xb, w3);                               \
        }                                                                                  \
    }                                                                                      \
    for (int m = 0; m < MT; m++)                                                           \
        for (int j = 0; j < 4; j++)                                                        \
            store_columns(y + m * ldc + 16 * j, acc[m][j], columns - 16 * j);              \
}
TILE(1)
TILE(2)
TILE(3)
TILE(4)

/* Pack w [N, K] bf16 (row stride ldw) into panels; packed holds N_pad * K_pad values. */
void bb_gemm_pack(const uint16_t *w, long ldw, long N, long K, uint16_t *packed, int threads) {
    long k_pairs = (K + 1) / 2, panels = (N + PANEL - 1) / PANEL;
    #pragma omp parallel for num_threads(threads) schedule(static)
    for (long p = 0; p < panels; p++) {
        uint16_t *dst = packed + p * k_pairs * PANEL * 2;
        for (long kp = 0; kp < k_pairs; kp++)
            for (long c = 0; c < PANEL; c++) {
                long n = p * PANEL + c;
                for (int i = 0; i < 2; i++) {
                    long k = 2 * kp + i;
                    dst[(kp * PANEL + c) * 2 + i] = (n < N && k < K) ? w[n * ldw + k] : 0;
                }
            }
    }
}

/* y [M, N] (row stride ldc) = x [M, K] (row stride lda) @ w.T + bias; bias is float32
 * padded to whole panels, or NULL. */
void bb_gemm(const uint16_t *x, long lda, const uint16_t *packed, const float *bias,
             uint16_t *y, long ldc, long M, long N, long K, int threads) {
    long k_pairs = (K + 1) / 2, panels = (N + PANEL - 1) / PANEL;
    #pragma omp parallel for num_threads(threads) schedule(static)
    for (long p = 0; p < panels; p++) {
        const uint16_t *panel = packed + p * k_pairs * PANEL * 2;
        const float *b = bias ? bias + p * PANEL : NULL;
        long n0 = p * PANEL, columns = N - n0;
        for (long m = 0; m < M; m += 4) {
            const uint16_t *xm = x + m * lda;
            uint16_t *ym = y + m * ldc + n0;
            switch (M - m) {
                case 1: tile_1(xm, lda, panel, K, b, ym, ldc, columns); break;
                case 2: tile_2(xm, lda, panel, K, b, ym, ldc, columns); break;
                case 3: tile_3(xm, lda, panel, K, b, ym, ldc, columns); break;
                default: tile_4(xm, lda, panel, K, b, ym, ldc, columns); break;
            }
        }
    }
}
