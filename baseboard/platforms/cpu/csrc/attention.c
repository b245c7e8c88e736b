/* Paged attention straight over the block cache, and the cache write.
 *
 * Cache layout (as the reference): [2, num_blocks, block_size, kv_heads, head_dim].
 * Each (query token, KV head) pair is one work item: a single pass of online softmax over
 * the token's causal context, read block by block through the block table, for all the
 * query heads of that KV head at once. */
#include <math.h>
#include <string.h>
#include "kernels.h"
#include "vec.h"

#define CHUNK 16      /* keys scored together: one vector of scores */
#define MAX_LANES 16  /* head_dim up to 256 */
#define MAX_GROUP 8   /* query heads per KV head handled in one pass */

#define PARALLEL_WORK 4096  /* (head, key) pairs below which one thread is faster */

/* k, v [T, kv_heads * head_dim] rows (row strides in elements) into the cache slots. */
static void write_kv(const attention_step *st, const void *k, long k_stride, const void *v,
                     long v_stride, char *kc, char *vc) {
    long esize = dtype_size(st->dtype), row = st->kv_heads * st->head_dim;
    for (long t = 0; t < st->num_tokens; t++) {
        long s = st->slots[t];
        memcpy(kc + s * row * esize, (const char *)k + t * k_stride * esize, row * esize);
        memcpy(vc + s * row * esize, (const char *)v + t * v_stride * esize, row * esize);
    }
}

/* The 16 sums of 16 vectors, as one vector (a transposing add tree: 45 shuffles and adds
 * where 16 separate reductions take about 130). */
static inline __m512 sum16(__m512 v[16]) {
    __m512 s[8], t[4];
    for (int i = 0; i < 8; i++)
        s[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]),
                             _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
    for (int i = 0; i < 4; i++) {
        __m512d a = _mm512_castps_pd(s[2 * i]), b = _mm512_castps_pd(s[2 * i + 1]);
        t[i] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(a, b)),
                             _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)));
    }
    __m512 x = _mm512_add_ps(_mm512_shuffle_f32x4(t[0], t[1], 0x88),
                             _mm512_shuffle_f32x4(t[0], t[1], 0xDD));
    __m512 y = _mm512_add_ps(_mm512_shuffle_f32x4(t[2], t[3], 0x88),
                             _mm512_shuffle_f32x4(t[2], t[3], 0xDD));
    return _mm512_add_ps(_mm512_shuffle_f32x4(x, y, 0x88), _mm512_shuffle_f32x4(x, y, 0xDD));
}

/* One query token against its causal context, for the `group` query heads that share
 * one KV head: each key and value row is read and converted once for the whole group.
 * Keys go in chunks of 16: a vector of 16 scores per head, one online-softmax rescale
 * per head and chunk, vectorized exp, then the chunk's values. */
static inline __attribute__((always_inline)) void attend_group(
        const char *q, char *out, long head_stride, long group, const char *kc,
        const char *vc, const int32_t *table, long end, long kv_head, long kv_heads,
        long head_dim, long block_size, float scale, int dtype) {
    long esize = dtype_size(dtype), lanes = (head_dim + 15) / 16, row = kv_heads * head_dim;
    float running_max[MAX_GROUP], total[MAX_GROUP];
    float queries[MAX_GROUP][16 * MAX_LANES] __attribute__((aligned(64)));
    float keys[CHUNK][16 * MAX_LANES] __attribute__((aligned(64)));
    float values[CHUNK][16 * MAX_LANES] __attribute__((aligned(64)));
    float acc[MAX_GROUP][16 * MAX_LANES] __attribute__((aligned(64)));
    float probs[CHUNK] __attribute__((aligned(64)));
    for (long g = 0; g < group; g++) {
        running_max[g] = -INFINITY;
        total[g] = 0.0f;
        for (long l = 0; l < lanes; l++) {
            _mm512_store_ps(queries[g] + 16 * l, _mm512_mul_ps(
                load16(q + g * head_stride * esize, 16 * l, dtype, head_dim - 16 * l),
                _mm512_set1_ps(scale)));
            _mm512_store_ps(acc[g] + 16 * l, _mm512_setzero_ps());
        }
    }
    for (long start = 0; start < end; start += CHUNK) {
        long n = end - start < CHUNK ? end - start : CHUNK;
        for (long j = 0; j < CHUNK; j++) {
            if (j >= n) {  /* zero rows past the context: finite scores, masked below */
                for (long l = 0; l < lanes; l++) _mm512_store_ps(keys[j] + 16 * l, _mm512_setzero_ps());
                continue;
            }
            long key = start + j;
            long slot = (long)table[key / block_size] * block_size + key % block_size;
            const char *kp = kc + (slot * row + kv_head * head_dim) * esize;
            const char *vp = vc + (slot * row + kv_head * head_dim) * esize;
            for (long l = 0; l < lanes; l++) {
                _mm512_store_ps(keys[j] + 16 * l, load16(kp, 16 * l, dtype, head_dim - 16 * l));
                _mm512_store_ps(values[j] + 16 * l, load16(vp, 16 * l, dtype, head_dim - 16 * l));
            }
        }
        __mmask16 valid = lanes_mask(n);
        for (long g = 0; g < group; g++) {
            __m512 dots[CHUNK];
            for (long j = 0; j < CHUNK; j++) {
                __m512 d = _mm512_mul_ps(_mm512_load_ps(queries[g]), _mm512_load_ps(keys[j]));
                for (long l = 1; l < lanes; l++)
                    d = _mm512_fmadd_ps(_mm512_load_ps(queries[g] + 16 * l),
                                        _mm512_load_ps(keys[j] + 16 * l), d);
                dots[j] = d;
            }
            __m512 s = _mm512_mask_blend_ps(valid, _mm512_set1_ps(-INFINITY), sum16(dots));
            float new_max = _mm512_reduce_max_ps(s);
            new_max = new_max > running_max[g] ? new_max : running_max[g];
            float correction = expf(running_max[g] - new_max);
            running_max[g] = new_max;
            __m512 p = _mm512_maskz_mov_ps(valid, exp_ps(_mm512_sub_ps(s, _mm512_set1_ps(new_max))));
            total[g] = total[g] * correction + _mm512_reduce_add_ps(p);
            _mm512_store_ps(probs, p);
            __m512 a[MAX_LANES];
            for (long l = 0; l < lanes; l++)
                a[l] = _mm512_mul_ps(_mm512_load_ps(acc[g] + 16 * l), _mm512_set1_ps(correction));
            for (long j = 0; j < n; j++) {
                __m512 pj = _mm512_set1_ps(probs[j]);
                for (long l = 0; l < lanes; l++)
                    a[l] = _mm512_fmadd_ps(pj, _mm512_load_ps(values[j] + 16 * l), a[l]);
            }
            for (long l = 0; l < lanes; l++) _mm512_store_ps(acc[g] + 16 * l, a[l]);
        }
    }
    for (long g = 0; g < group; g++) {
        __m512 inv = _mm512_set1_ps(1.0f / total[g]);
        for (long l = 0; l < lanes; l++)
            store16(out + g * head_stride * esize, 16 * l,
                    _mm512_mul_ps(_mm512_load_ps(acc[g] + 16 * l), inv), dtype,
                    head_dim - 16 * l);
    }
}

/* For each paged token t of sequence token_seq[t], at position
 * context_lens[seq] - (query_start[seq + 1] - t): every head attends causally to the
 * sequence's cached keys. q and out are [T, heads, head_dim] with row strides in elements.
 * Work items are (token, KV head); group heads beyond MAX_GROUP run in several passes. */
#define PAGED(NAME, DTYPE)                                                                    \
static void NAME(const attention_step *st, const void *q, long q_stride, const char *kc,     \
                 const char *vc, void *out, long out_stride, int threads) {                   \
    long esize = dtype_size(DTYPE), heads = st->heads, kv_heads = st->kv_heads;               \
    long head_dim = st->head_dim, group = heads / kv_heads;                                   \
    long passes = (group + MAX_GROUP - 1) / MAX_GROUP;                                         \
    long items = st->num_paged * kv_heads * passes, work = 0;                                  \
    for (long i = 0; i < st->num_paged; i++) {                                                 \
        long t = st->paged_tokens[i], seq = st->token_seq[t];                                  \
        work += (st->context_lens[seq] - (st->query_start[seq + 1] - t) + 1) * heads;          \
    }                                                                                          \
    _Pragma("omp parallel for num_threads(threads) schedule(static) if(work >= PARALLEL_WORK)") \
    for (long item = 0; item < items; item++) {                                                \
        long t = st->paged_tokens[item / (kv_heads * passes)];                                 \
        long kv_head = item / passes % kv_heads, pass = item % passes;                         \
        long first = kv_head * group + pass * MAX_GROUP;                                       \
        long count = group - pass * MAX_GROUP < MAX_GROUP ? group - pass * MAX_GROUP : MAX_GROUP; \
        long seq = st->token_seq[t], context = st->context_lens[seq];                          \
        long position = context - (st->query_start[seq + 1] - t);                              \
        long end = position + 1 < context ? position + 1 : context;                            \
        attend_group((const char *)q + (t * q_stride + first * head_dim) * esize,              \
                     (char *)out + (t * out_stride + first * head_dim) * esize, head_dim,       \
                     count, kc, vc, st->block_tables + seq * st->max_blocks, end, kv_head,     \
                     kv_heads, head_dim, st->block_size, st->scale, DTYPE);                    \
    }                                                                                          \
}
PAGED(paged_bf16, DTYPE_BF16)
PAGED(paged_f16, DTYPE_F16)
PAGED(paged_f32, DTYPE_F32)

/* One layer's attention for one step: write the new k and v into the cache
 * [2, num_blocks, block_size, kv_heads, head_dim], then attend the paged tokens. */
void bb_attention(const attention_step *st, const void *q, long q_stride, const void *k,
                  long k_stride, const void *v, long v_stride, void *cache, long num_blocks,
                  void *out, long out_stride, int threads) {
    long half = num_blocks * st->block_size * st->kv_heads * st->head_dim;
    char *kc = (char *)cache, *vc = kc + half * dtype_size(st->dtype);
    write_kv(st, k, k_stride, v, v_stride, kc, vc);
    if (st->num_paged == 0) return;
    if (st->dtype == DTYPE_BF16) paged_bf16(st, q, q_stride, kc, vc, out, out_stride, threads);
    else if (st->dtype == DTYPE_F16) paged_f16(st, q, q_stride, kc, vc, out, out_stride, threads);
    else paged_f32(st, q, q_stride, kc, vc, out, out_stride, threads);
}
