/* Row-wise kernels of the decoder layer: RMSNorm (plain and fused with the residual add),
 * SiLU-and-multiply and rotary embedding. One pass over each row, float32 inside, results
 * rounded to the activation dtype exactly where the torch references round. */
#include <math.h>
#include "kernels.h"
#include "vec.h"

#define PARALLEL_ELEMENTS 65536  /* below this, a fork-join costs more than it saves */

static inline __attribute__((always_inline)) void norm_row(
        const void *x, void *out, const void *weight, long K, float eps, int dtype,
        int wdtype) {
    __m512 sq = _mm512_setzero_ps();
    for (long i = 0; i < K; i += 16) {
        __m512 v = load16(x, i, dtype, K - i);
        sq = _mm512_fmadd_ps(v, v, sq);
    }
    __m512 inv = _mm512_set1_ps(1.0f / sqrtf(_mm512_reduce_add_ps(sq) / K + eps));
    for (long i = 0; i < K; i += 16) {
        __m512 v = _mm512_mul_ps(load16(x, i, dtype, K - i), inv);
        store16(out, i, _mm512_mul_ps(v, load16(weight, i, wdtype, K - i)), dtype, K - i);
    }
}

/* out[t] = rms_norm(x[t]); rows of x and out have strides in elements. */
#define NORM(NAME, DTYPE, WDTYPE)                                                           \
static void NAME(const void *x, long x_stride, void *out, long out_stride,                  \
                 const void *weight, long T, long K, float eps, int threads) {              \
    long es = dtype_size(DTYPE);                                                            \
    _Pragma("omp parallel for num_threads(threads) if(T * K >= PARALLEL_ELEMENTS)")         \
    for (long t = 0; t < T; t++)                                                            \
        norm_row((const char *)x + t * x_stride * es, (char *)out + t * out_stride * es,    \
                 weight, K, eps, DTYPE, WDTYPE);                                            \
}

/* residual[t] = round(x[t] + residual[t]); x[t] = rms_norm(residual[t]) (both in place). */
#define ADD_NORM(NAME, DTYPE, WDTYPE)                                                       \
static void NAME(void *x, long x_stride, void *residual, long r_stride,                    \
                 const void *weight, long T, long K, float eps, int threads) {              \
    long es = dtype_size(DTYPE);                                                            \
    _Pragma("omp parallel for num_threads(threads) if(T * K >= PARALLEL_ELEMENTS)")         \
    for (long t = 0; t < T; t++) {                                                          \
        char *xr = (char *)x + t * x_stride * es, *rr = (char *)residual + t * r_stride * es; \
        for (long i = 0; i < K; i += 16) {                                                  \
            __m512 s = _mm512_add_ps(load16(xr, i, DTYPE, K - i), load16(rr, i, DTYPE, K - i)); \
            store16(rr, i, s, DTYPE, K - i);                                                \
        }                                                                                   \
        norm_row(rr, xr, weight, K, eps, DTYPE, WDTYPE);                                    \
    }                                                                                       \
}

#define FOR_DTYPES(MACRO, NAME)                                                             \
MACRO(NAME##_bf16_bf16, DTYPE_BF16, DTYPE_BF16) MACRO(NAME##_bf16_f32, DTYPE_BF16, DTYPE_F32) \
MACRO(NAME##_f16_f16, DTYPE_F16, DTYPE_F16) MACRO(NAME##_f16_f32, DTYPE_F16, DTYPE_F32)     \
MACRO(NAME##_f32_f32, DTYPE_F32, DTYPE_F32) MACRO(NAME##_f32_bf16, DTYPE_F32, DTYPE_BF16)  \
MACRO(NAME##_f32_f16, DTYPE_F32, DTYPE_F16) MACRO(NAME##_bf16_f16, DTYPE_BF16, DTYPE_F16)  \
MACRO(NAME##_f16_bf16, DTYPE_F16, DTYPE_BF16)
FOR_DTYPES(NORM, norm)
FOR_DTYPES(ADD_NORM, add_norm)

typedef void (*row_kernel)(const void *, long, void *, long, const void *, long, long, float, int);
#define TABLE(NAME) {                                                                       \
    {(row_kernel)NAME##_bf16_bf16, (row_kernel)NAME##_bf16_f16, (row_kernel)NAME##_bf16_f32}, \
    {(row_kernel)NAME##_f16_bf16, (row_kernel)NAME##_f16_f16, (row_kernel)NAME##_f16_f32},  \
    {(row_kernel)NAME##_f32_bf16, (row_kernel)NAME##_f32_f16, (row_kernel)NAME##_f32_f32}}
static const row_kernel norm_kernels[3][3] = TABLE(norm);
static const row_kernel add_norm_kernels[3][3] = TABLE(add_norm);

void bb_rms_norm(const void *x, long x_stride, void *out, long out_stride, const void *weight,
                 long T, long K, float eps, int dtype, int wdtype, int threads) {
    norm_kernels[dtype][wdtype](x, x_stride, out, out_stride, weight, T, K, eps, threads);
}

void bb_fused_add_rms_norm(void *x, long x_stride, void *residual, long r_stride,
                           const void *weight, long T, long K, float eps, int dtype,
                           int wdtype, int threads) {
    add_norm_kernels[dtype][wdtype](x, x_stride, residual, r_stride, weight, T, K, eps,
                                    threads);
}

/* out [T, I] = round(silu(gate)) * up with x [T, 2I] = gate | up; silu rounded first, as
 * the unfused reference does. */
#define SILU(NAME, DTYPE)                                                                   \
static void NAME(const void *x, long x_stride, void *out, long out_stride, long T, long I,  \
                 int threads) {                                                             \
    long es = dtype_size(DTYPE);                                                            \
    _Pragma("omp parallel for num_threads(threads) if(T * I >= PARALLEL_ELEMENTS)")         \
    for (long t = 0; t < T; t++) {                                                          \
        const char *g = (const char *)x + t * x_stride * es, *u = g + I * es;               \
        char *o = (char *)out + t * out_stride * es;                                        \
        for (long i = 0; i < I; i += 16) {                                                  \
            __m512 v = load16(g, i, DTYPE, I - i);                                          \
            __m512 s = _mm512_div_ps(v, _mm512_add_ps(_mm512_set1_ps(1.0f),                 \
                                                      exp_ps(_mm512_sub_ps(_mm512_setzero_ps(), v)))); \
            s = round_to(s, DTYPE);                                                         \
            store16(o, i, _mm512_mul_ps(s, load16(u, i, DTYPE, I - i)), DTYPE, I - i);      \
        }                                                                                   \
    }                                                                                       \
}
SILU(silu_bf16, DTYPE_BF16)
SILU(silu_f16, DTYPE_F16)
SILU(silu_f32, DTYPE_F32)

void bb_silu_and_mul(const void *x, long x_stride, void *out, long out_stride, long T, long I,
                     int dtype, int threads) {
    if (dtype == DTYPE_BF16) silu_bf16(x, x_stride, out, out_stride, T, I, threads);
    else if (dtype == DTYPE_F16) silu_f16(x, x_stride, out, out_stride, T, I, threads);
    else silu_f32(x, x_stride, out, out_stride, T, I, threads);
}

/* Rotate heads [T, H, D] in place (rotate-half style); rows have stride x_stride, heads are
 * head_dim apart. cos_sin [max_pos, D] float32 holds cos | sin. */
static inline __attribute__((always_inline)) void rotate_heads(
        char *x, long heads, long head_dim, const float *cs, int dtype) {
    long half = head_dim / 2, es = dtype_size(dtype);
    for (long h = 0; h < heads; h++) {
        char *a = x + h * head_dim * es, *b = a + half * es;
        for (long i = 0; i < half; i += 16) {
            __m512 x1 = load16(a, i, dtype, half - i), x2 = load16(b, i, dtype, half - i);
            __m512 c = _mm512_maskz_loadu_ps(lanes_mask(half - i), cs + i);
            __m512 s = _mm512_maskz_loadu_ps(lanes_mask(half - i), cs + half + i);
            __m512 r1 = _mm512_fmsub_ps(x1, c, _mm512_mul_ps(x2, s));
            __m512 r2 = _mm512_fmadd_ps(x2, c, _mm512_mul_ps(x1, s));
            store16(a, i, r1, dtype, half - i);
            store16(b, i, r2, dtype, half - i);
        }
    }
}

#define ROPE(NAME, DTYPE)                                                                   \
static void NAME(const int64_t *positions, void *q, long q_stride, long q_heads, void *k,   \
                 long k_stride, long k_heads, long head_dim, const float *cos_sin, long T,   \
                 int threads) {                                                              \
    long es = dtype_size(DTYPE);                                                            \
    _Pragma("omp parallel for num_threads(threads) if(T * (q_heads + k_heads) * head_dim >= PARALLEL_ELEMENTS)") \
    for (long t = 0; t < T; t++) {                                                          \
        const float *cs = cos_sin + positions[t] * head_dim;                                \
        rotate_heads((char *)q + t * q_stride * es, q_heads, head_dim, cs, DTYPE);          \
        rotate_heads((char *)k + t * k_stride * es, k_heads, head_dim, cs, DTYPE);          \
    }                                                                                       \
}
ROPE(rope_bf16, DTYPE_BF16)
ROPE(rope_f16, DTYPE_F16)
ROPE(rope_f32, DTYPE_F32)

void bb_rotary_embedding(const int64_t *positions, void *q, long q_stride, long q_heads,
                         void *k, long k_stride, long k_heads, long head_dim,
                         const float *cos_sin, long T, int dtype, int threads) {
    if (dtype == DTYPE_BF16)
        rope_bf16(positions, q, q_stride, q_heads, k, k_stride, k_heads, head_dim, cos_sin, T, threads);
    else if (dtype == DTYPE_F16)
        rope_f16(positions, q, q_stride, q_heads, k, k_stride, k_heads, head_dim, cos_sin, T, threads);
    else
        rope_f32(positions, q, q_stride, q_heads, k, k_stride, k_heads, head_dim, cos_sin, T, threads);
}
