/* The entry points of the cpu kernel library, called from Python (native.py) through
 * ctypes or through the extension module of module.c. Sizes and strides are in elements. */
#ifndef BASEBOARD_KERNELS_H
#define BASEBOARD_KERNELS_H
#include <stdint.h>

/* What one engine step's attention needs besides the tensors, filled once per step
 * (build_metadata) and read by every layer. Mirrors AttentionStep in attention.py. */
typedef struct {
    const int32_t *block_tables;  /* [seqs, max_blocks] */
    long max_blocks;
    const int32_t *context_lens;  /* [seqs] */
    const int32_t *query_start;   /* [seqs + 1] */
    const int32_t *token_seq;     /* [T]: the sequence of each new token */
    const int32_t *paged_tokens;  /* tokens this kernel attends (the others go to SDPA) */
    long num_paged;
    const int64_t *slots;         /* [T]: cache slot of each new token */
    long num_tokens;
    long heads, kv_heads, head_dim, block_size;
    float scale;
    int dtype;
} attention_step;

void bb_gemm_pack(const uint16_t *w, long ldw, long N, long K, uint16_t *packed, int threads);
void bb_gemm(const uint16_t *x, long lda, const uint16_t *packed, const float *bias, void *y,
             long ldc, long M, long N, long K, int out_f32, int threads);
void bb_gemm_pack_f32(const float *w, long ldw, long N, long K, float *packed, int threads);
void bb_gemm_f32(const float *x, long lda, const float *packed, const float *bias, float *y,
                 long ldc, long M, long N, long K, int threads);
void bb_qgemm_pack(const uint8_t *q, long ldq, long N, long K, int bits, int f32_layout,
                   uint8_t *packed, int threads);
void bb_qgemm(const void *x, long lda, int x_f32, const uint8_t *codes, const void *scales,
              const void *offsets, int scale_dtype, const float *bias, void *y, long ldc,
              int out_f32, long M, long N, long K, long G, int bits, long fused_rows, int amx,
              void *work, int threads);
void bb_attention(const attention_step *st, const void *q, long q_stride, const void *k,
                  long k_stride, const void *v, long v_stride, void *cache, long num_blocks,
                  void *out, long out_stride, int threads);
void bb_rms_norm(const void *x, long x_stride, void *out, long out_stride, const void *weight,
                 long T, long K, float eps, int dtype, int wdtype, int threads);
void bb_fused_add_rms_norm(void *x, long x_stride, void *residual, long r_stride,
                           const void *weight, long T, long K, float eps, int dtype,
                           int wdtype, int threads);
void bb_silu_and_mul(const void *x, long x_stride, void *out, long out_stride, long T, long I,
                     int dtype, int threads);
void bb_rotary_embedding(const int64_t *positions, void *q, long q_stride, long q_heads,
                         void *k, long k_stride, long k_heads, long head_dim,
                         const float *cos_sin, long T, int dtype, int threads);
void bb_argmax(const float *x, long row_stride, long rows, long n, int64_t *out, int threads);

#endif
