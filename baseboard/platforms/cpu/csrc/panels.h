/* The dense GEMM's per-panel loops (gemm.c), shared with the dequantizing path of
 * quant_gemm.c: one packed panel of 32 output columns times M rows of x; y points at the
 * panel's first output column, `columns` of which are real (the rest is padding). */
#ifndef BASEBOARD_PANELS_H
#define BASEBOARD_PANELS_H
#include <stdint.h>

void gemm_panel(const uint16_t *x, long lda, const uint16_t *panel, long K, const float *bias,
                void *y, long ldc, long M, int out_f32, long columns);
void gemm_panel_f32(const float *x, long lda, const float *panel, long K, const float *bias,
                    float *y, long ldc, long M, long columns);

#endif
