/* Loads and stores of 16 lanes as float32 for the three activation dtypes, so each kernel
 * is written once and instantiated per dtype (DTYPE_BF16 = 0, DTYPE_F16 = 1, DTYPE_F32 = 2,
 * the codes native.py passes). A lane count below 16 masks the tail. */
#ifndef BASEBOARD_VEC_H
#define BASEBOARD_VEC_H
#include <immintrin.h>
#include <stdint.h>

enum { DTYPE_BF16 = 0, DTYPE_F16 = 1, DTYPE_F32 = 2 };

static inline __mmask16 lanes_mask(long lanes) {
    return lanes >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << lanes) - 1);
}

static inline __m512 load16(const void *base, long i, int dtype, long lanes) {
    __mmask16 m = lanes_mask(lanes);
    if (dtype == DTYPE_F32) return _mm512_maskz_loadu_ps(m, (const float *)base + i);
    __m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)base + i);
    if (dtype == DTYPE_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

static inline void store16(void *base, long i, __m512 v, int dtype, long lanes) {
    __mmask16 m = lanes_mask(lanes);
    if (dtype == DTYPE_F32) {
        _mm512_mask_storeu_ps((float *)base + i, m, v);
    } else if (dtype == DTYPE_F16) {
        _mm256_mask_storeu_epi16((uint16_t *)base + i, m,
                                 _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    } else {
        _mm256_mask_storeu_epi16((uint16_t *)base + i, m, (__m256i)_mm512_cvtneps_pbh(v));
    }
}

/* Round float32 lanes to the dtype and back, as storing and reloading would. */
static inline __m512 round_to(__m512 v, int dtype) {
    if (dtype == DTYPE_F32) return v;
    if (dtype == DTYPE_F16)
        return _mm512_cvtph_ps(_mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    __m256i h = (__m256i)_mm512_cvtneps_pbh(v);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* exp for float32 lanes: 2^(x log2 e) by range reduction and a degree-6 polynomial
 * (relative error below 2e-7), with overflow and underflow saturating like expf. */
static inline __m512 exp_ps(__m512 x) {
    x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(88.7f)), _mm512_set1_ps(-103.9f));
    __m512 t = _mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f));
    __m512 n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    /* r = x - n ln2 in two steps for accuracy */
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187045e-06f), r);
    __m512 p = _mm512_set1_ps(1.0f / 720);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

static inline long dtype_size(int dtype) { return dtype == DTYPE_F32 ? 4 : 2; }

#endif
