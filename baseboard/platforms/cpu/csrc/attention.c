/* Paged attention straight over the block cache, and the cache write.
 *
 * Cache layout (as the reference): [2, num_blocks, block_size, kv_heads, head_dim].
 * Each (query token, query head) pair is one work item: a single pass of online softmax
 * over the token's causal context, read block by block through the block table. */
#include <math.h>
#include <string.h>
#include "vec.h"

#define CHUNK 32   /* keys scored before one softmax rescale */
#define MAX_LANES 32  /* head_dim up to 512 */

/* k, v [T, kv_heads * head_dim] rows (row strides in elements) into the cache at slots. */
void bb_kv_write(const void *k, long k_stride, const void *v, long v_stride, void *cache,
                 long num_blocks, long block_size, long row, const int64_t *slots, long T,
                 int dtype) {
    long esize = dtype_size(dtype), half = num_blocks * block_size * row;
    char *kc = (char *)cache, *vc = (char *)cache + half * esize;
    for (long t = 0; t < T; t++) {
        long s = slots[t];
        memcpy(kc + s * row * esize, (const char *)k + t * k_stride * esize, row * esize);
        memcpy(vc + s * row * esize, (const char *)v + t * v_stride * esize, row * esize);
    }
}

static inline __attribute__((always_inline)) void attend_one(
        const void *q, void *out, const char *kc, const char *vc, const int32_t *table,
        long context, long position, long kv_head, long kv_heads, long head_dim,
        long block_size, float scale, int dtype) {
    long esize = dtype_size(dtype), lanes = (head_dim + 15) / 16, row = kv_heads * head_dim;
    __m512 qv[MAX_LANES], acc[MAX_LANES];
    for (long l = 0; l < lanes; l++) {
        qv[l] = _mm512_mul_ps(load16(q, 16 * l, dtype, head_dim - 16 * l), _mm512_set1_ps(scale));
        acc[l] = _mm512_setzero_ps();
    }
    float running_max = -INFINITY, total = 0.0f, scores[CHUNK];
    long end = position + 1 < context ? position + 1 : context;
    for (long start = 0; start < end; start += CHUNK) {
        long n = end - start < CHUNK ? end - start : CHUNK;
        float chunk_max = -INFINITY;
        for (long j = 0; j < n; j++) {
            long key = start + j;
            long slot = (long)table[key / block_size] * block_size + key % block_size;
            const char *kp = kc + (slot * row + kv_head * head_dim) * esize;
            __m512 dot = _mm512_setzero_ps();
            for (long l = 0; l < lanes; l++)
                dot = _mm512_fmadd_ps(qv[l], load16(kp, 16 * l, dtype, head_dim - 16 * l), dot);
            scores[j] = _mm512_reduce_add_ps(dot);
            chunk_max = scores[j] > chunk_max ? scores[j] : chunk_max;
        }
        if (chunk_max > running_max) {
            float correction = expf(running_max - chunk_max);
            total *= correction;
            for (long l = 0; l < lanes; l++)
                acc[l] = _mm512_mul_ps(acc[l], _mm512_set1_ps(correction));
            running_max = chunk_max;
        }
        for (long j = 0; j < n; j++) {
            long key = start + j;
            long slot = (long)table[key / block_size] * block_size + key % block_size;
            const char *vp = vc + (slot * row + kv_head * head_dim) * esize;
            float p = expf(scores[j] - running_max);
            total += p;
            __m512 pv = _mm512_set1_ps(p);
            for (long l = 0; l < lanes; l++)
                acc[l] = _mm512_fmadd_ps(pv, load16(vp, 16 * l, dtype, head_dim - 16 * l), acc[l]);
        }
    }
    __m512 inv = _mm512_set1_ps(1.0f / total);
    for (long l = 0; l < lanes; l++)
        store16(out, 16 * l, _mm512_mul_ps(acc[l], inv), dtype, head_dim - 16 * l);
}

/* For each listed token t (tokens[i]) of sequence token_seq[t], at position
 * context_lens[seq] - (query_start[seq + 1] - t): every head attends causally to the
 * sequence's cached keys. q and out are [T, heads, head_dim] with row strides in elements. */
#define PAGED(NAME, DTYPE)                                                                    \
static void NAME(const void *q, long q_stride, void *out, long out_stride, const void *cache, \
                 long num_blocks, const int32_t *block_tables, long max_blocks,                \
                 const int32_t *context_lens, const int32_t *query_start,                      \
                 const int32_t *token_seq, const int32_t *tokens, long num_tokens, long heads, \
                 long kv_heads, long head_dim, long block_size, float scale, int threads) {     \
    long esize = dtype_size(DTYPE), group = heads / kv_heads;                                 \
    const char *kc = (const char *)cache;                                                      \
    const char *vc = kc + num_blocks * block_size * kv_heads * head_dim * esize;               \
    long items = num_tokens * heads;                                                           \
    _Pragma("omp parallel for num_threads(threads) schedule(static) if(items > 1)")            \
    for (long item = 0; item < items; item++) {                                                \
        long t = tokens[item / heads], h = item % heads, seq = token_seq[t];                   \
        long context = context_lens[seq];                                                      \
        long position = context - (query_start[seq + 1] - t);                                  \
        attend_one((const char *)q + (t * q_stride + h * head_dim) * esize,                    \
                   (char *)out + (t * out_stride + h * head_dim) * esize, kc, vc,              \
                   block_tables + seq * max_blocks, context, position, h / group, kv_heads,    \
                   head_dim, block_size, scale, DTYPE);                                        \
    }                                                                                          \
}
PAGED(paged_bf16, DTYPE_BF16)
PAGED(paged_f16, DTYPE_F16)
PAGED(paged_f32, DTYPE_F32)

void bb_paged_attention(const void *q, long q_stride, void *out, long out_stride,
                        const void *cache, long num_blocks, const int32_t *block_tables,
                        long max_blocks, const int32_t *context_lens, const int32_t *query_start,
                        const int32_t *token_seq, const int32_t *tokens, long num_tokens,
                        long heads, long kv_heads, long head_dim, long block_size, float scale,
                        int dtype, int threads) {
    if (dtype == DTYPE_BF16)
        paged_bf16(q, q_stride, out, out_stride, cache, num_blocks, block_tables, max_blocks,
                   context_lens, query_start, token_seq, tokens, num_tokens, heads, kv_heads,
                   head_dim, block_size, scale, threads);
    else if (dtype == DTYPE_F16)
        paged_f16(q, q_stride, out, out_stride, cache, num_blocks, block_tables, max_blocks,
                  context_lens, query_start, token_seq, tokens, num_tokens, heads, kv_heads,
                  head_dim, block_size, scale, threads);
    else
        paged_f32(q, q_stride, out, out_stride, cache, num_blocks, block_tables, max_blocks,
                  context_lens, query_start, token_seq, tokens, num_tokens, heads, kv_heads,
                  head_dim, block_size, scale, threads);
}
