"""baseboard's op signatures over FlagGems' calls. Imported only once a record is selected.

FlagGems' layouts against the contract's:
- its norms take ``normalized_shape`` like torch's, and its fused add+norm works in place,
  writing the normed rows into x and the sum into residual (the contract allows both);
- its rotary takes position ids and separate cos and sin caches of [max_position, D/2]
  with any row stride, so the halves of baseboard's [max_position, D] cache are passed as
  views; it rotates q and k in place through their strides;
- silu_and_mul takes gate and up as two tensors of any strides: the halves of x, as views;
- mm multiplies [M, K] by [K, N] through their strides, so the [N, K] weight is passed
  transposed as a view. A float32 result of 16-bit inputs (the lm_head's) comes from the
  portable mm_out (flag_gems.ops.mm_out), whose kernel stores its float32 accumulator in
  the output's dtype: the Hopper mm_out that ``flag_gems.mm_out`` is on sm_90 (5.0.2)
  cannot. Its pointer kernel does not compile for an output dtype other than the
  inputs', and its TMA kernel is cached by the output's shape and strides but not its
  dtype, so a float32 output of the shape of a bf16 one ran the bf16 binary and came
  back as garbage (the conformance kit on an H200).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import flag_gems
import torch


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x [T, K], weight [K] -> [T, K] in x's dtype, statistics and product in float32."""
    normed, _inverse_rms = flag_gems.rms_norm_forward(x, [x.shape[-1]], weight, eps)
    return normed


def fused_add_rms_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
                       eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """x, residual [T, K] -> (rms_norm(x + residual) [T, K], x + residual [T, K]), both
    written over the storage of x and residual (over copies, where those are not
    contiguous). The norm reads the float32 sum, not the sum rounded to x's dtype."""
    return flag_gems.fused_add_rms_norm(x, residual, [x.shape[-1]], weight, eps)


def rotary_embedding(positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor,
                     cos_sin_cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """positions [T] int64, q [T, Hq, D], k [T, Hk, D] (strided views are fine),
    cos_sin_cache [max_position, D] float32 -> (q, k) rotated in place, rotate-half style."""
    half = cos_sin_cache.shape[-1] // 2
    cos, sin = cos_sin_cache[:, :half], cos_sin_cache[:, half:]  # [P, D/2] views, row stride D
    return flag_gems.apply_rotary_pos_emb(q, k, cos, sin, positions,
                                          rotary_interleaved=False, inplace=True)


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """x [T, 2I] -> [T, I] = silu(x[:, :I]) * x[:, I:], in x's dtype."""
    half = x.shape[-1] // 2
    out = torch.empty((*x.shape[:-1], half), dtype=x.dtype, device=x.device)
    return flag_gems.silu_and_mul_out(x[..., :half], x[..., half:], out)


class GemmWeights(NamedTuple):
    weight_kn: torch.Tensor  # [K, N]: the [N, K] weight transposed, a view
    bias: Optional[torch.Tensor]  # [N]


class FlagGemsGemm:
    """y = x @ weight.T + bias with FlagGems' mm (addmm with a bias)."""

    @staticmethod
    def prepare(weight: torch.Tensor, bias: Optional[torch.Tensor]) -> GemmWeights:
        """weight [N, K], bias [N] | None -> the state ``apply`` takes; nothing is copied."""
        return GemmWeights(weight.t(), bias)

    @staticmethod
    def apply(state: GemmWeights, x: torch.Tensor,
              out_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """x [T, K] -> [T, N] in out_dtype (default: x's dtype). float32 is the kernel's
        float32 accumulator itself, stored without rounding to x's dtype first."""
        weight_kn, bias = state
        rows = x.reshape(-1, x.shape[-1])
        if out_dtype is None or out_dtype == x.dtype:
            if bias is None:
                out = flag_gems.mm(rows, weight_kn)
            else:
                out = flag_gems.addmm(bias, rows, weight_kn)
        else:
            out = torch.empty((rows.shape[0], weight_kn.shape[1]), dtype=out_dtype,
                              device=x.device)
            flag_gems.ops.mm_out(rows, weight_kn, out=out)
            if bias is not None:
                out += bias.to(out_dtype)
        return out.view(*x.shape[:-1], out.shape[-1])
