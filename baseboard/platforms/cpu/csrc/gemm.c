/* Dense bf16 GEMM for small and large M, weights packed once into VNNI panels.
 *
 * Packed weight: [N/32 panels][K/2 pairs][32 columns][2] bf16 (K and N zero-padded), so a
 * panel is one contiguous stream: the M <= 8 decode case is pure weight streaming, and
 * every 32-bit broadcast of an x pair feeds two vdpbf16ps over 32 output columns. */
#include <immintrin.h>
#include <stdint.h>
#include <string.h>
#include "kernels.h"
#include "panels.h"

#define PANEL 32

static inline __m512 pair_broadcast(const uint16_t *x, long k, long K) {
    uint32_t pair;
    if (k + 1 < K) {
        memcpy(&pair, x + k, 4);
    } else {
        pair = x[k];  /* odd K: the missing partner is zero, like the padded weight */
    }
    return _mm512_castsi512_ps(_mm512_set1_epi32((int)pair));
}

/* Output element n of a row: bf16 (rounded once from the float32 sum) or float32. */
static inline void store_columns(void *y, long n, int out_f32, __m512 acc, long columns) {
    if (columns <= 0) return;
    __mmask16 mask = columns >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << columns) - 1);
    if (out_f32)
        _mm512_mask_storeu_ps((float *)y + n, mask, acc);
    else
        _mm256_mask_storeu_epi16((uint16_t *)y + n, mask, (__m256i)_mm512_cvtneps_pbh(acc));
}

/* One panel times MT rows of x: y[m, n0:n0+32] for m < MT. MT <= 8 keeps the 2 * MT
 * accumulators, two weight vectors and a broadcast within the 32 vector registers, so
 * each weight byte is loaded once for up to eight rows. */
#define TILE(MT)                                                                           \
static void tile_##MT(const uint16_t *x, long lda, const uint16_t *panel, long K,          \
                      const float *bias, void *y, long ldc, int out_f32, long columns) {   \
    __m512 acc[MT][2];                                                                     \
    for (int j = 0; j < 2; j++) {                                                          \
        __m512 b = bias ? _mm512_loadu_ps(bias + 16 * j) : _mm512_setzero_ps();            \
        for (int m = 0; m < MT; m++) acc[m][j] = b;                                        \
    }                                                                                      \
    for (long k = 0; k < K; k += 2) {                                                      \
        const uint16_t *w = panel + k * PANEL;                                             \
        __m512bh w0 = (__m512bh)_mm512_load_si512(w);                                      \
        __m512bh w1 = (__m512bh)_mm512_load_si512(w + 32);                                 \
        for (int m = 0; m < MT; m++) {                                                     \
            __m512bh xb = (__m512bh)pair_broadcast(x + m * lda, k, K);                     \
            acc[m][0] = _mm512_dpbf16_ps(acc[m][0], xb, w0);                               \
            acc[m][1] = _mm512_dpbf16_ps(acc[m][1], xb, w1);                               \
        }                                                                                  \
    }                                                                                      \
    for (int m = 0; m < MT; m++)                                                           \
        for (int j = 0; j < 2; j++)                                                        \
            store_columns(y, m * ldc + 16 * j, out_f32, acc[m][j], columns - 16 * j);      \
}
TILE(1)
TILE(2)
TILE(3)
TILE(4)
TILE(5)
TILE(6)
TILE(7)
TILE(8)

typedef void (*tile_fn)(const uint16_t *, long, const uint16_t *, long, const float *,
                        void *, long, int, long);
static const tile_fn tiles[9] = {0, tile_1, tile_2, tile_3, tile_4, tile_5, tile_6, tile_7,
                                 tile_8};

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

/* One packed panel times every row of x: y[:, 0:columns] (y points at the panel's first
 * column). Shared with the dequantizing path of quant_gemm.c. */
void gemm_panel(const uint16_t *x, long lda, const uint16_t *panel, long K, const float *bias,
                void *y, long ldc, long M, int out_f32, long columns) {
    for (long m = 0; m < M; m += 8) {
        long rows = M - m < 8 ? M - m : 8;
        void *ym = out_f32 ? (void *)((float *)y + m * ldc) : (void *)((uint16_t *)y + m * ldc);
        tiles[rows](x + m * lda, lda, panel, K, bias, ym, ldc, out_f32, columns);
    }
}

/* y [M, N] (row stride ldc) = x [M, K] (row stride lda) @ w.T + bias; bias is float32
 * padded to whole panels, or NULL; y is bf16, or float32 when out_f32. */
void bb_gemm(const uint16_t *x, long lda, const uint16_t *packed, const float *bias,
             void *y, long ldc, long M, long N, long K, int out_f32, int threads) {
    long k_pairs = (K + 1) / 2, panels = (N + PANEL - 1) / PANEL;
    #pragma omp parallel for num_threads(threads) schedule(static)
    for (long p = 0; p < panels; p++) {
        long n0 = p * PANEL;
        gemm_panel(x, lda, packed + p * k_pairs * PANEL * 2, K, bias ? bias + n0 : NULL,
                   out_f32 ? (void *)((float *)y + n0) : (void *)((uint16_t *)y + n0), ldc, M,
                   out_f32, N - n0);
    }
}

/* float32: weights packed as [N/32 panels][K][32 columns] float32, one fused multiply-add
 * per weight; streamed like the bf16 panels, at twice the bytes. */
#define TILE_F32(MT)                                                                       \
static void tile_f32_##MT(const float *x, long lda, const float *panel, long K,            \
                          const float *bias, float *y, long ldc, long columns) {           \
    __m512 acc[MT][2];                                                                     \
    for (int j = 0; j < 2; j++) {                                                          \
        __m512 b = bias ? _mm512_loadu_ps(bias + 16 * j) : _mm512_setzero_ps();            \
        for (int m = 0; m < MT; m++) acc[m][j] = b;                                        \
    }                                                                                      \
    for (long k = 0; k < K; k++) {                                                         \
        const float *w = panel + k * PANEL;                                                \
        __m512 w0 = _mm512_load_ps(w), w1 = _mm512_load_ps(w + 16);                        \
        for (int m = 0; m < MT; m++) {                                                     \
            __m512 xb = _mm512_set1_ps(x[m * lda + k]);                                    \
            acc[m][0] = _mm512_fmadd_ps(xb, w0, acc[m][0]);                                \
            acc[m][1] = _mm512_fmadd_ps(xb, w1, acc[m][1]);                                \
        }                                                                                  \
    }                                                                                      \
    for (int m = 0; m < MT; m++)                                                           \
        for (int j = 0; j < 2; j++)                                                        \
            store_columns(y, m * ldc + 16 * j, 1, acc[m][j], columns - 16 * j);            \
}
TILE_F32(1)
TILE_F32(2)
TILE_F32(3)
TILE_F32(4)
TILE_F32(5)
TILE_F32(6)
TILE_F32(7)
TILE_F32(8)

typedef void (*tile_f32_fn)(const float *, long, const float *, long, const float *, float *,
                            long, long);
static const tile_f32_fn tiles_f32[9] = {0, tile_f32_1, tile_f32_2, tile_f32_3, tile_f32_4,
                                         tile_f32_5, tile_f32_6, tile_f32_7, tile_f32_8};

void bb_gemm_pack_f32(const float *w, long ldw, long N, long K, float *packed, int threads) {
    long panels = (N + PANEL - 1) / PANEL;
    #pragma omp parallel for num_threads(threads) schedule(static)
    for (long p = 0; p < panels; p++) {
        float *dst = packed + p * K * PANEL;
        for (long k = 0; k < K; k++)
            for (long c = 0; c < PANEL; c++) {
                long n = p * PANEL + c;
                dst[k * PANEL + c] = n < N ? w[n * ldw + k] : 0.0f;
            }
    }
}

void gemm_panel_f32(const float *x, long lda, const float *panel, long K, const float *bias,
                    float *y, long ldc, long M, long columns) {
    for (long m = 0; m < M; m += 8)
        tiles_f32[M - m < 8 ? M - m : 8](x + m * lda, lda, panel, K, bias, y + m * ldc, ldc,
                                        columns);
}

void bb_gemm_f32(const float *x, long lda, const float *packed, const float *bias, float *y,
                 long ldc, long M, long N, long K, int threads) {
    long panels = (N + PANEL - 1) / PANEL;
    #pragma omp parallel for num_threads(threads) schedule(static)
    for (long p = 0; p < panels; p++)
        gemm_panel_f32(x, lda, packed + p * K * PANEL, K, bias ? bias + p * PANEL : NULL,
                       y + p * PANEL, ldc, M, N - p * PANEL);
}
