/* Weight-only quantized GEMM: 4-bit codes (0..15) with group scales and offsets, and int8
 * codes with group scales, multiplied by bf16 or float32 activations.
 *
 * Packed codes, per panel of 32 output columns (N zero-padded to whole panels):
 *   bf16 activations, by pairs of k (the order of the dense bf16 panels, gemm.c):
 *     int8   [K/2 pairs][32 columns][2]: lane j of a 64-byte pair is column j/2, k j%2
 *     4-bit  [K/2 pairs][32 bytes]: byte j's low nibble is column j/2, its high nibble
 *            column 16 + j/2, both at k j%2
 *   float32 activations, by k:
 *     int8   [K][32 columns]
 *     4-bit  [K][16 bytes]: byte j's low nibble is column j, its high nibble column 16 + j
 * Scales and offsets: [panels][K/G groups][32 columns], float32, bf16 or float16 (as
 * stored: the kernels widen them to float32, which is exact).
 *
 * Three paths, chosen by the number of rows M against the caller's `fused_rows` (the
 * measured crossovers, quant_gemm.py) and `amx`:
 *   M <= fused_rows  codes become exact small integers in registers (vpermw from a table
 *                    for 4-bit, widening converts for int8; int8 at one or two bf16 rows
 *                    stays float32 for multiply-adds), multiplied with the unscaled
 *                    codes per group; a group's sum is then scaled and offset in float32
 *                    (offset * the group's sum of x). Bandwidth: the codes and scales only.
 *   else, amx        (bf16 activations) the same sums by AMX tile multiplies, 16 rows at
 *                    a time, the codes decoded into tiles once per 16 rows.
 *   else             each panel is dequantized once into a dense panel (bf16 or float32,
 *                    q * scale, then + offset, in float32 and rounded once to the panel's
 *                    dtype: the reference's values) in a per-thread buffer, and the dense
 *                    tiles of gemm.c run over every row: the dense kernel's speed, the
 *                    conversion paid once per panel instead of once per tile of rows.
 *                    Also where the compiler does not know AMX (before GCC 11, clang 12). */
#include <immintrin.h>
#include <stdint.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "kernels.h"
#include "panels.h"
#include "vec.h"

#define PANEL 32
#define TILE_ROWS 8  /* rows per fused tile: 16 group sums in registers */
#define AMX_PAIRS_MAX 16  /* pairs of k an AMX B tile holds: 16 rows of 64 bytes */

/* ---- packing */

static inline uint8_t code_at(const uint8_t *q, long ldq, long N, long K, long n, long k) {
    return (n < N && k < K) ? q[n * ldq + k] : 0;
}

void bb_qgemm_pack(const uint8_t *q, long ldq, long N, long K, int bits, int f32_layout,
                   uint8_t *packed, int threads) {
    long panels = (N + PANEL - 1) / PANEL;
    long steps = f32_layout ? K : (K + 1) / 2;       /* k or k pairs per panel */
    long step_bytes = bits == 8 ? 64 / (f32_layout ? 2 : 1) : 32 / (f32_layout ? 2 : 1);
    #pragma omp parallel for num_threads(threads) schedule(static)
    for (long p = 0; p < panels; p++) {
        uint8_t *dst = packed + p * steps * step_bytes;
        long n0 = p * PANEL;
        for (long s = 0; s < steps; s++, dst += step_bytes) {
            for (long j = 0; j < step_bytes; j++) {
                if (f32_layout && bits == 8) {
                    dst[j] = code_at(q, ldq, N, K, n0 + j, s);
                } else if (f32_layout) {
                    dst[j] = (uint8_t)(code_at(q, ldq, N, K, n0 + j, s) |
                                       code_at(q, ldq, N, K, n0 + 16 + j, s) << 4);
                } else if (bits == 8) {
                    dst[j] = code_at(q, ldq, N, K, n0 + j / 2, 2 * s + j % 2);
                } else {
                    long k = 2 * s + j % 2;
                    dst[j] = (uint8_t)(code_at(q, ldq, N, K, n0 + j / 2, k) |
                                       code_at(q, ldq, N, K, n0 + 16 + j / 2, k) << 4);
                }
            }
        }
    }
}

/* ---- decoding a step of codes */

/* bf16 layout, pair kp -> the two bf16 weight vectors of the dense panel (columns 0-15 and
 * 16-31, k pairs interleaved), holding the codes themselves (exact in bf16). */
static inline __attribute__((always_inline)) void
decode_pair(const uint8_t *panel, long kp, int bits, __m512i table, __m512bh *w0, __m512bh *w1) {
    if (bits == 4) {
        __m512i words = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(panel + kp * 32)));
        *w0 = (__m512bh)_mm512_permutexvar_epi16(_mm512_and_si512(words, _mm512_set1_epi16(15)), table);
        *w1 = (__m512bh)_mm512_permutexvar_epi16(_mm512_srli_epi16(words, 4), table);
    } else {
        const int8_t *p = (const int8_t *)panel + kp * 64;
        __m512 f[4];
        for (int i = 0; i < 4; i++)
            f[i] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(p + 16 * i))));
        *w0 = _mm512_cvtne2ps_pbh(f[1], f[0]);
        *w1 = _mm512_cvtne2ps_pbh(f[3], f[2]);
    }
}

/* bf16 layout, pair kp -> the codes as float32 in the lane order of the dense panel:
 * f[0], f[1] the low and high half of w0, f[2], f[3] of w1. */
static inline __attribute__((always_inline)) void
decode_pair_f32(const uint8_t *panel, long kp, int bits, __m512 f[4]) {
    if (bits == 4) {
        const uint8_t *p = panel + kp * 32;
        __m512i lo = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)p));
        __m512i hi = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(p + 16)));
        __m512i nib = _mm512_set1_epi32(15);
        f[0] = _mm512_cvtepi32_ps(_mm512_and_si512(lo, nib));
        f[1] = _mm512_cvtepi32_ps(_mm512_and_si512(hi, nib));
        f[2] = _mm512_cvtepi32_ps(_mm512_srli_epi32(lo, 4));
        f[3] = _mm512_cvtepi32_ps(_mm512_srli_epi32(hi, 4));
    } else {
        const int8_t *p = (const int8_t *)panel + kp * 64;
        for (int i = 0; i < 4; i++)
            f[i] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(p + 16 * i))));
    }
}

/* float32 layout, step k -> the codes of columns 0-15 and 16-31 as float32. */
static inline __attribute__((always_inline)) void
decode_k(const uint8_t *panel, long k, int bits, __m512 *c0, __m512 *c1) {
    if (bits == 4) {
        __m512i b = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(panel + k * 16)));
        *c0 = _mm512_cvtepi32_ps(_mm512_and_si512(b, _mm512_set1_epi32(15)));
        *c1 = _mm512_cvtepi32_ps(_mm512_srli_epi32(b, 4));
    } else {
        const int8_t *p = (const int8_t *)panel + k * 32;
        *c0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p)));
        *c1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(p + 16))));
    }
}

/* ---- what a call shares */

typedef struct {
    const void *x;
    long lda;
    const uint8_t *codes;
    const void *scales, *offsets;  /* offsets NULL: symmetric */
    int scale_dtype;
    const float *bias;             /* float32 padded to whole panels, or NULL */
    void *y;
    long ldc, M, N, K, G, groups, panel_bytes;
    int bits, out_f32;
    const float *xsum;             /* [M][groups]: each row's sum of x over each group */
} qgemm_call;

/* Group g's k range, in the layout's steps: k pairs (bf16) or k (float32). G is even or
 * one group spans K, so no pair straddles two groups. */
static inline void group_steps(const qgemm_call *c, long g, int pairs, long *s0, long *s1) {
    long steps = pairs ? (c->K + 1) / 2 : c->K;
    *s0 = pairs ? g * c->G / 2 : g * c->G;
    *s1 = g == c->groups - 1 ? steps : (pairs ? (g + 1) * c->G / 2 : (g + 1) * c->G);
}

static inline __m512 load_group(const void *base, long p, const qgemm_call *c, long g, int half) {
    return load16(base, (p * c->groups + g) * PANEL + 16 * half, c->scale_dtype, 16);
}

static inline __m512bh pair_at(const qgemm_call *c, long m, long kp) {
    const uint16_t *row = (const uint16_t *)c->x + m * c->lda;
    long k = 2 * kp;
    uint32_t pair;
    if (k + 1 < c->K)
        memcpy(&pair, row + k, 4);
    else
        pair = row[k];  /* odd K: the missing partner is zero */
    return (__m512bh)_mm512_set1_epi32((int)pair);
}

static inline void store_out(const qgemm_call *c, long m, long n0, __m512 acc, long columns) {
    if (columns <= 0) return;
    __mmask16 mask = lanes_mask(columns);
    if (c->out_f32)
        _mm512_mask_storeu_ps((float *)c->y + m * c->ldc + n0, mask, acc);
    else
        _mm256_mask_storeu_epi16((uint16_t *)c->y + m * c->ldc + n0, mask,
                                 (__m256i)_mm512_cvtneps_pbh(acc));
}

/* Int8 group sums of one or two rows (MT) of bf16 x, in float32 multiply-adds: at so few
 * rows converting the codes to bf16 for vdpbf16ps costs more than multiplying their float32
 * values with x's pairs directly. Lanes hold (column, k parity); the parities are added at
 * the end. 4 / MT chains a row hide the multiply-add latency. */
static inline __attribute__((always_inline)) void
int8_row_sums(const qgemm_call *c, const uint8_t *panel, long m0, const int MT, long s0,
              long s1, __m512 sums[][2]) {
    const int CH = 4 / MT;
    __m512 part[4][4];  /* [row * CH + chain][quarter of the panel's lanes] */
    for (int h = 0; h < 4; h++)
        for (int i = 0; i < 4; i++) part[h][i] = _mm512_setzero_ps();
    for (long kp = s0; kp < s1; kp += CH) {
        for (int h = 0; h < CH; h++) {
            if (kp + h >= s1) break;
            long k = 2 * (kp + h);
            __m512 f[4];
            decode_pair_f32(panel, kp + h, 8, f);
            for (int m = 0; m < MT; m++) {
                const uint16_t *row = (const uint16_t *)c->x + (m0 + m) * c->lda;
                uint64_t lo = (uint64_t)row[k] << 16;
                uint64_t hi = k + 1 < c->K ? (uint64_t)row[k + 1] << 48 : 0;
                __m512 xb = _mm512_castsi512_ps(_mm512_set1_epi64((long long)(lo | hi)));
                for (int i = 0; i < 4; i++)
                    part[m * CH + h][i] = _mm512_fmadd_ps(f[i], xb, part[m * CH + h][i]);
            }
        }
    }
    /* even lanes + odd lanes of quarter i: columns 8i..8i+7 */
    const __m512i evens = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    for (int m = 0; m < MT; m++) {
        __m512 both[4];
        for (int i = 0; i < 4; i++) {
            __m512 v = part[m * CH][i];
            for (int h = 1; h < CH; h++) v = _mm512_add_ps(v, part[m * CH + h][i]);
            both[i] = _mm512_add_ps(v, _mm512_permute_ps(v, 0xB1));
        }
        sums[m][0] = _mm512_permutex2var_ps(both[0], evens, both[1]);
        sums[m][1] = _mm512_permutex2var_ps(both[2], evens, both[3]);
    }
}

/* ---- the fused path: rows m0..m0+MT of panel p */

/* A group's sums for MT rows run in CH independent chains over alternate steps (k pairs or
 * k): at one or two rows a single chain would wait on each multiply-add's latency. The
 * running outputs stay in memory (L1), touched once a group, so that eight rows' group
 * sums fit in the vector registers. */
static inline __attribute__((always_inline)) void
fused_tile(const qgemm_call *c, long p, long m0, const int MT, const int bits, const int x_f32) {
    const int CH = MT == 1 ? 4 : MT == 2 ? 2 : 1;
    const uint8_t *panel = c->codes + p * c->panel_bytes;
    float out[TILE_ROWS][PANEL] __attribute__((aligned(64)));
    for (int j = 0; j < 2; j++) {
        __m512 b = c->bias ? _mm512_loadu_ps(c->bias + p * PANEL + 16 * j) : _mm512_setzero_ps();
        for (int m = 0; m < MT; m++) _mm512_store_ps(out[m] + 16 * j, b);
    }
    /* bf16 of 0..15, for vpermw */
    const __m512i table = _mm512_set_epi16(
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0x4170, 0x4160, 0x4150, 0x4140, 0x4130, 0x4120, 0x4110, 0x4100,
        0x40E0, 0x40C0, 0x40A0, 0x4080, 0x4040, 0x4000, 0x3F80, 0x0000);
    for (long g = 0; g < c->groups; g++) {
        long s0, s1;
        group_steps(c, g, !x_f32, &s0, &s1);
        __m512 part[4][TILE_ROWS][2];
        for (int h = 0; h < CH; h++)
            for (int m = 0; m < MT; m++) part[h][m][0] = part[h][m][1] = _mm512_setzero_ps();
        if (bits == 8 && !x_f32 && MT <= 2) {
            int8_row_sums(c, panel, m0, MT, s0, s1, part[0]);
        } else {
            for (long s = s0; s < s1; s += CH) {
                for (int h = 0; h < CH; h++) {
                    if (CH > 1 && s + h >= s1) break;
                    if (x_f32) {
                        __m512 c0, c1;
                        decode_k(panel, s + h, bits, &c0, &c1);
                        for (int m = 0; m < MT; m++) {
                            __m512 xb = _mm512_set1_ps(((const float *)c->x)[(m0 + m) * c->lda + s + h]);
                            part[h][m][0] = _mm512_fmadd_ps(xb, c0, part[h][m][0]);
                            part[h][m][1] = _mm512_fmadd_ps(xb, c1, part[h][m][1]);
                        }
                    } else {
                        __m512bh w0, w1;
                        decode_pair(panel, s + h, bits, table, &w0, &w1);
                        for (int m = 0; m < MT; m++) {
                            __m512bh xb = pair_at(c, m0 + m, s + h);
                            part[h][m][0] = _mm512_dpbf16_ps(part[h][m][0], xb, w0);
                            part[h][m][1] = _mm512_dpbf16_ps(part[h][m][1], xb, w1);
                        }
                    }
                }
            }
            for (int h = 1; h < CH; h++)
                for (int m = 0; m < MT; m++)
                    for (int j = 0; j < 2; j++) part[0][m][j] = _mm512_add_ps(part[0][m][j], part[h][m][j]);
        }
        for (int j = 0; j < 2; j++) {
            __m512 sc = load_group(c->scales, p, c, g, j);
            __m512 o = c->offsets ? load_group(c->offsets, p, c, g, j) : _mm512_setzero_ps();
            for (int m = 0; m < MT; m++) {
                __m512 acc = _mm512_fmadd_ps(part[0][m][j], sc, _mm512_load_ps(out[m] + 16 * j));
                if (c->offsets)
                    acc = _mm512_fmadd_ps(_mm512_set1_ps(c->xsum[(m0 + m) * c->groups + g]), o, acc);
                _mm512_store_ps(out[m] + 16 * j, acc);
            }
        }
    }
    for (int m = 0; m < MT; m++)
        for (int j = 0; j < 2; j++)
            store_out(c, m0 + m, p * PANEL + 16 * j, _mm512_load_ps(out[m] + 16 * j),
                      c->N - p * PANEL - 16 * j);
}

#define FUSED(BITS, XF32)                                                                  \
static void fused_##BITS##_##XF32(const qgemm_call *c, long p, long m0, int rows) {        \
    switch (rows) {                                                                        \
    case 1: fused_tile(c, p, m0, 1, BITS, XF32); break;                                    \
    case 2: fused_tile(c, p, m0, 2, BITS, XF32); break;                                    \
    case 3: fused_tile(c, p, m0, 3, BITS, XF32); break;                                    \
    case 4: fused_tile(c, p, m0, 4, BITS, XF32); break;                                    \
    case 5: fused_tile(c, p, m0, 5, BITS, XF32); break;                                    \
    case 6: fused_tile(c, p, m0, 6, BITS, XF32); break;                                    \
    case 7: fused_tile(c, p, m0, 7, BITS, XF32); break;                                    \
    default: fused_tile(c, p, m0, 8, BITS, XF32); break;                                   \
    }                                                                                      \
}
FUSED(4, 0)
FUSED(4, 1)
FUSED(8, 0)
FUSED(8, 1)

/* ---- the dequantizing path: panel p -> a dense panel in gemm.c's layout */

static void dequantize_panel(const qgemm_call *c, long p, int x_f32, void *dense) {
    const uint8_t *panel = c->codes + p * c->panel_bytes;
    /* lane i of a dense bf16 half-vector is column i/2 (+ 8 for the second half) */
    const __m512i lanes_lo = _mm512_set_epi32(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0);
    const __m512i lanes_hi = _mm512_add_epi32(lanes_lo, _mm512_set1_epi32(8));
    for (long g = 0; g < c->groups; g++) {
        long s0, s1;
        group_steps(c, g, !x_f32, &s0, &s1);
        __m512 s[2], o[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
        for (int j = 0; j < 2; j++) {
            s[j] = load_group(c->scales, p, c, g, j);
            if (c->offsets) o[j] = load_group(c->offsets, p, c, g, j);
        }
        /* multiply, then add, each rounded: the reference's float32 dequantization */
        if (x_f32) {
            float *out = dense;
            for (long k = s0; k < s1; k++) {
                __m512 c0, c1;
                decode_k(panel, k, c->bits, &c0, &c1);
                _mm512_store_ps(out + k * PANEL, _mm512_add_ps(_mm512_mul_ps(c0, s[0]), o[0]));
                _mm512_store_ps(out + k * PANEL + 16, _mm512_add_ps(_mm512_mul_ps(c1, s[1]), o[1]));
            }
        } else {
            __m512 sl[4], ol[4];
            for (int i = 0; i < 4; i++) {
                __m512i idx = i % 2 ? lanes_hi : lanes_lo;
                sl[i] = _mm512_permutexvar_ps(idx, s[i / 2]);
                ol[i] = _mm512_permutexvar_ps(idx, o[i / 2]);
            }
            uint16_t *out = dense;
            for (long kp = s0; kp < s1; kp++) {
                __m512 f[4];
                decode_pair_f32(panel, kp, c->bits, f);
                for (int i = 0; i < 4; i++) f[i] = _mm512_add_ps(_mm512_mul_ps(f[i], sl[i]), ol[i]);
                _mm512_store_si512(out + kp * 64, (__m512i)_mm512_cvtne2ps_pbh(f[1], f[0]));
                _mm512_store_si512(out + kp * 64 + 32, (__m512i)_mm512_cvtne2ps_pbh(f[3], f[2]));
            }
        }
    }
}

/* ---- the AMX path (bf16 activations, where the CPU has AMX-BF16): 16 rows at a time, a
 * group's pairs decoded into two B tiles (the dense panel's pair layout is AMX's), one tile
 * multiply per 16 pairs, each group's sums scaled and offset in float32 like the fused
 * path. Built only by compilers that know AMX (GCC 11, clang 12). */

#if (defined(__GNUC__) && __GNUC__ >= 11) || (defined(__clang__) && __clang_major__ >= 12)
#define HAVE_AMX 1
#define AMX_TARGET __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512bf16")))


typedef struct {
    uint8_t palette, start_row;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tile_config;

/* tmm0, tmm1: sums of columns 0-15, 16-31 ([rows][16] float32); tmm2: x ([rows][2 * pairs]
 * bf16); tmm3, tmm4: weights of columns 0-15, 16-31 ([pairs][16][2] bf16). */
AMX_TARGET static void amx_configure(long rows, long pairs) {
    tile_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 2; t++) { cfg.rows[t] = (uint8_t)rows; cfg.colsb[t] = 64; }
    cfg.rows[2] = (uint8_t)rows;
    cfg.colsb[2] = (uint16_t)(pairs * 4);
    for (int t = 3; t < 5; t++) { cfg.rows[t] = (uint8_t)pairs; cfg.colsb[t] = 64; }
    _tile_loadconfig(&cfg);
}

/* Rows m0..m0+rows of panel p; xpad is x copied to rows of ldx bf16, zero past K, so a
 * tile may read past the last pair. */
AMX_TARGET static void amx_tile_rows(const qgemm_call *c, long p, long m0, long rows,
                                     const uint16_t *xpad, long ldx, long pairs) {
    const uint8_t *panel = c->codes + p * c->panel_bytes;
    uint16_t b0[AMX_PAIRS_MAX * 32] __attribute__((aligned(64)));
    uint16_t b1[AMX_PAIRS_MAX * 32] __attribute__((aligned(64)));
    float sums[2][16 * 16] __attribute__((aligned(64)));
    float out[16][PANEL] __attribute__((aligned(64)));
    const __m512i table = _mm512_set_epi16(
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0x4170, 0x4160, 0x4150, 0x4140, 0x4130, 0x4120, 0x4110, 0x4100,
        0x40E0, 0x40C0, 0x40A0, 0x4080, 0x4040, 0x4000, 0x3F80, 0x0000);
    for (int j = 0; j < 2; j++) {
        __m512 b = c->bias ? _mm512_loadu_ps(c->bias + p * PANEL + 16 * j) : _mm512_setzero_ps();
        for (long m = 0; m < rows; m++) _mm512_store_ps(out[m] + 16 * j, b);
    }
    for (long g = 0; g < c->groups; g++) {
        long s0, s1;
        group_steps(c, g, 1, &s0, &s1);
        _tile_zero(0);
        _tile_zero(1);
        for (long kp = s0; kp < s1; kp += pairs) {
            long valid = s1 - kp < pairs ? s1 - kp : pairs;
            for (long r = 0; r < valid; r++) {
                __m512bh w0, w1;
                decode_pair(panel, kp + r, c->bits, table, &w0, &w1);
                _mm512_store_si512(b0 + r * 32, (__m512i)w0);
                _mm512_store_si512(b1 + r * 32, (__m512i)w1);
            }
            for (long r = valid; r < pairs; r++) {  /* past the group: zero weights */
                _mm512_store_si512(b0 + r * 32, _mm512_setzero_si512());
                _mm512_store_si512(b1 + r * 32, _mm512_setzero_si512());
            }
            _tile_loadd(2, xpad + m0 * ldx + 2 * kp, ldx * 2);
            _tile_loadd(3, b0, 64);
            _tile_loadd(4, b1, 64);
            _tile_dpbf16ps(0, 2, 3);
            _tile_dpbf16ps(1, 2, 4);
        }
        _tile_stored(0, sums[0], 64);
        _tile_stored(1, sums[1], 64);
        for (int j = 0; j < 2; j++) {
            __m512 sc = load_group(c->scales, p, c, g, j);
            __m512 o = c->offsets ? load_group(c->offsets, p, c, g, j) : _mm512_setzero_ps();
            for (long m = 0; m < rows; m++) {
                __m512 acc = _mm512_fmadd_ps(_mm512_load_ps(sums[j] + m * 16), sc,
                                             _mm512_load_ps(out[m] + 16 * j));
                if (c->offsets)
                    acc = _mm512_fmadd_ps(_mm512_set1_ps(c->xsum[(m0 + m) * c->groups + g]), o, acc);
                _mm512_store_ps(out[m] + 16 * j, acc);
            }
        }
    }
    for (long m = 0; m < rows; m++)
        for (int j = 0; j < 2; j++)
            store_out(c, m0 + m, p * PANEL + 16 * j, _mm512_load_ps(out[m] + 16 * j),
                      c->N - p * PANEL - 16 * j);
}

AMX_TARGET static void amx_panels(const qgemm_call *c, long panels, const uint16_t *xpad,
                                  long ldx, long pairs, int threads) {
    #pragma omp parallel num_threads(threads)
    {
        long configured = -1;
        #pragma omp for schedule(static)
        for (long p = 0; p < panels; p++)
            for (long m0 = 0; m0 < c->M; m0 += 16) {
                long rows = c->M - m0 < 16 ? c->M - m0 : 16;
                if (rows != configured) {
                    amx_configure(rows, pairs);
                    configured = rows;
                }
                amx_tile_rows(c, p, m0, rows, xpad, ldx, pairs);
            }
        if (configured >= 0) _tile_release();
    }
}
#else
#define HAVE_AMX 0
#endif

/* ---- the entry point */

/* Bytes of one dense panel of `steps` k pairs (bf16) or k (float32): 128 either way, rounded
 * up to keep every thread's panel 64-byte aligned. */
static inline long dense_panel_bytes(long steps) { return (steps * 128 + 63) / 64 * 64; }

static void group_sums(qgemm_call *c, int x_f32, float *xsum) {
    /* serial: M * K additions, against the M * K * N of the product */
    for (long m = 0; m < c->M; m++)
        for (long g = 0; g < c->groups; g++) {
            long k0 = g * c->G, k1 = k0 + c->G < c->K ? k0 + c->G : c->K;
            float sum = 0.0f;
            for (long k = k0; k < k1; k++) {
                if (x_f32) {
                    sum += ((const float *)c->x)[m * c->lda + k];
                } else {
                    uint32_t bits = (uint32_t)((const uint16_t *)c->x)[m * c->lda + k] << 16;
                    float v;
                    memcpy(&v, &bits, 4);
                    sum += v;
                }
            }
            xsum[m * c->groups + g] = sum;
        }
    c->xsum = xsum;
}

typedef void (*fused_fn)(const qgemm_call *, long, long, int);

/* work: 64-byte aligned scratch: M * K/G float32 on the fused path, else one dense panel
 * (dense_panel_bytes) per thread. */
#if HAVE_AMX
/* Pairs of k per AMX tile multiply: 16, or half a group where groups are smaller. */
static long amx_pairs(long K, long G) {
    long half = K == G ? (G + 1) / 2 : G / 2;
    return half < AMX_PAIRS_MAX ? half : AMX_PAIRS_MAX;
}

/* Row length of the padded copy of x the AMX path reads, in bf16 elements (quant_gemm.py's
 * workspace computes the same). */
static long amx_row(long K, long G) {
    return (((K + 1) / 2 + amx_pairs(K, G)) * 2 + 31) / 32 * 32;
}
#endif

void bb_qgemm(const void *x, long lda, int x_f32, const uint8_t *codes, const void *scales,
              const void *offsets, int scale_dtype, const float *bias, void *y, long ldc,
              int out_f32, long M, long N, long K, long G, int bits, long fused_rows, int amx,
              void *work, int threads) {
    long panels = (N + PANEL - 1) / PANEL;
    long steps = x_f32 ? K : (K + 1) / 2;
    qgemm_call c = {x, lda, codes, scales, offsets, scale_dtype, bias, y, ldc, M, N, K, G,
                    K / G, steps * (bits == 8 ? 64 : 32) / (x_f32 ? 2 : 1), bits,
                    out_f32 || x_f32, NULL};
#if HAVE_AMX
    if (M > fused_rows && amx && !x_f32) {
        /* work: the group sums, then x copied to rows of ldx, zero past K */
        long ldx = amx_row(K, G);
        uint16_t *xpad = (uint16_t *)((uint8_t *)work + (4 * M * c.groups + 63) / 64 * 64);
        if (offsets) group_sums(&c, 0, work);
        for (long m = 0; m < M; m++) {
            memcpy(xpad + m * ldx, (const uint16_t *)x + m * lda, 2 * K);
            memset(xpad + m * ldx + K, 0, 2 * (ldx - K));
        }
        amx_panels(&c, panels, xpad, ldx, amx_pairs(K, G), threads);
        return;
    }
#endif
    if (M <= fused_rows) {
        if (offsets) group_sums(&c, x_f32, work);
        fused_fn fn = bits == 4 ? (x_f32 ? fused_4_1 : fused_4_0) : (x_f32 ? fused_8_1 : fused_8_0);
        #pragma omp parallel for num_threads(threads) schedule(static)
        for (long p = 0; p < panels; p++)
            for (long m0 = 0; m0 < M; m0 += TILE_ROWS)
                fn(&c, p, m0, (int)(M - m0 < TILE_ROWS ? M - m0 : TILE_ROWS));
        return;
    }
    #pragma omp parallel num_threads(threads)
    {
        #ifdef _OPENMP
        int t = omp_get_thread_num();
        #else
        int t = 0;
        #endif
        void *dense = (uint8_t *)work + t * dense_panel_bytes(steps);
        #pragma omp for schedule(static)
        for (long p = 0; p < panels; p++) {
            dequantize_panel(&c, p, x_f32, dense);
            const float *b = bias ? bias + p * PANEL : NULL;
            long n0 = p * PANEL;
            if (x_f32)
                gemm_panel_f32(x, lda, dense, K, b, (float *)y + n0, ldc, M, N - n0);
            else
                gemm_panel(x, lda, dense, K, b, out_f32 ? (void *)((float *)y + n0)
                           : (void *)((uint16_t *)y + n0), ldc, M, out_f32, N - n0);
        }
    }
}
