"""baseboard's op signatures over Liger Kernel's forward functions. Imported only once a
record is selected.

The forward functions of Liger's modules are called, not its autograd Functions: they are
what those Functions run, without recording anything for a backward pass.

Liger's layouts against the contract's:
- its norms take an ``offset`` added to the weight (0 for Llama) and a casting mode:
  "gemma" keeps the product with the weight in float32 and rounds once, as baseboard's
  reference does ("llama" rounds before multiplying by the weight);
- its rotary takes q [B, Hq, T, D] and k [B, Hk, T, D] as transposes of [B, T, H, D]
  storage, and cos/sin per token rather than a cache indexed by position;
- its SwiGLU takes gate and up as two tensors.
"""

from __future__ import annotations

import torch
from liger_kernel.ops.fused_add_rms_norm import fused_add_rms_norm_forward
from liger_kernel.ops.rms_norm import rms_norm_forward
from liger_kernel.ops.rope import rope_forward
from liger_kernel.ops.swiglu import swiglu_forward

CASTING_MODE = "gemma"  # float32 throughout, one rounding at the end
OFFSET = 0.0  # Llama-family norms scale by the weight itself, not (1 + weight)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x [T, K], weight [K] -> [T, K] in x's dtype."""
    normed, *_ = rms_norm_forward(x, weight, eps, OFFSET, CASTING_MODE, None)
    return normed


def fused_add_rms_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
                       eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """x, residual [T, K] -> (rms_norm(x + residual), x + residual), both new tensors; the
    sum is rounded to x's dtype before the norm reads it, as in the reference."""
    normed, summed, *_ = fused_add_rms_norm_forward(x, residual, weight, eps, OFFSET,
                                                    CASTING_MODE)
    return normed, summed


def rotary_embedding(positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor,
                     cos_sin_cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """positions [T] int64, q [T, Hq, D], k [T, Hk, D], cos_sin_cache [max_position, D]
    float32 -> (q, k) rotated, rotate-half style."""
    half = cos_sin_cache.shape[-1] // 2
    # Liger reads cos and sin row by row of the step's tokens, so they are gathered by
    # position: two [T, D/2] copies. Half-width rows need rotary_dim = D, else Liger takes
    # the width of cos for the rotated width.
    cos = cos_sin_cache[positions, :half]
    sin = cos_sin_cache[positions, half:]
    # [T, H, D] is Liger's [B, T, H, D] storage with B = 1, passed as its [B, H, T, D]
    # transpose. Liger makes that storage contiguous before rotating it in place: q and k
    # are views of the qkv projection with a longer row stride, so this copies them.
    q_bhtd, k_bhtd = q.unsqueeze(0).transpose(1, 2), k.unsqueeze(0).transpose(1, 2)
    q_out, k_out, _, _ = rope_forward(q_bhtd, k_bhtd, cos, sin, rotary_dim=q.shape[-1])
    return q_out.transpose(1, 2).squeeze(0), k_out.transpose(1, 2).squeeze(0)


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """x [T, 2I] -> [T, I] = silu(x[:, :I]) * x[:, I:], in x's dtype."""
    half = x.shape[-1] // 2
    # Liger's kernel takes one row stride for gate, up and its output, so the halves of x
    # (row stride 2I) must be made contiguous: two [T, I] copies, none when T == 1.
    gate, up = x[..., :half].contiguous(), x[..., half:].contiguous()
    _, _, out = swiglu_forward(gate, up)
    return out
