"""float8 weights for Instinct MI300 (gfx942), whose fp8 is float8_e4m3fnuz.

float8_e4m3fnuz has the bits of float8_e4m3fn with an exponent bias of 8 instead of 7: the
same byte is worth half as much. A float8_e4m3fn checkpoint is therefore taken as it is,
its bytes read as float8_e4m3fnuz and its scales doubled, so every weight keeps its value
(vLLM does the same). The one byte that changes is 0x80: negative zero in float8_e4m3fn,
NaN in float8_e4m3fnuz, written as zero.
"""

from __future__ import annotations

import torch

NEGATIVE_ZERO = -128  # 0x80 as int8


def e4m3fn_to_e4m3fnuz(qweight: torch.Tensor,
                       scales: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """qweight [N, K] float8_e4m3fn, scales [N] float32 -> (qweight [N, K]
    float8_e4m3fnuz, scales [N] float32) with qweight * scales unchanged."""
    if qweight.dtype != torch.float8_e4m3fn:
        raise TypeError(f"expected float8_e4m3fn weights, got {qweight.dtype}")
    codes = qweight.view(torch.int8).clone()
    codes[codes == NEGATIVE_ZERO] = 0
    return codes.view(torch.float8_e4m3fnuz), scales.float() * 2.0
