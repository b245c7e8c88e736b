"""``ipex`` weight-only quantized GEMMs: ``gemm_w8a16`` and ``gemm_w4a16`` on IPEX's WoQ
linear (``ipex_prepack.weight_only_qlinear_prepack*`` once at load, ``ipex_woq_linear``
per call), which keeps the weight in its codes (1 or 0.5 bytes per weight) where the
native path (quant_gemm.py) dequantizes it to 2 bytes once at load.

What the adapters bridge:

* int8 is built from the codes plus scales (IPEX's ``qweight`` + ``scales`` API). Where
  the CPU has AMX it runs in bf16 (IPEX's lowp mode BF16): ``out_dtype=float32`` hands
  IPEX float32 activations, which it rounds to bf16 (exact: they were bf16) and
  accumulates in float32 in the AMX tiles, so the lm_head's logits are the float32 sums.
  Without AMX, IPEX's BF16 mode returns sums rounded to bf16 from 8 rows up (found by the
  conformance kit on an AMD EPYC), so there int8 runs in float32 like int4.
* int4 is built from a packed weight: two codes per byte, the even column in the low
  nibble. IPEX computes (code - zero) * scale, so our ``offset`` becomes the zero point
  ``-offset / scale`` (a float; GGUF Q4_1's offsets are not whole codes). In bf16 IPEX
  rounds that zero point and the scales to bf16, which is further from the weight than the
  conformance tolerance allows, so int4 runs with float32 activations (lowp mode NONE,
  float32 scales and zero points) and rounds the result once.
* IPEX takes K in multiples of 4 only (K_ALIGN); another K gets zero columns on the
  weight and on every input, which change no sum.
* IPEX may transpose the scales it is given in place: they are always copied first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F

from ...core.errors import ConfigError
from .ipex_runtime import ipex

INT8, INT4 = 1, 2  # IPEX's WoqWeightDtype
LOWP_NONE, LOWP_BF16 = 0, 2  # IPEX's WoqLowpMode: compute dtype of the dequantized weight
ACT_QUANT_NONE, ACT_QUANT_PER_IC_BLOCK = -1, 1  # only read in lowp mode INT8, unused here
PLAIN_FORMAT = 0  # IPEX's WoqWeightFormat for codes packed as below
PER_CHANNEL = -1  # IPEX's group_size for one scale per output row
# IPEX's WoQ kernels take K and group sizes in blocks of 4: int8 raises on an odd K, int4
# aborts the process ('Kb must be a multiple of 4 for int8 VNNI') on other K or groups
K_ALIGN = 4


@dataclass
class WoqLinear:
    """An IPEX WoQ context and how to call it.

    context       IPEX's WoqLinearOpContext (the packed weight, scales, bias)
    in_features   K of the checkpoint
    padded        zero columns IPEX's weight has past K (K_ALIGN)
    compute       the activation dtype IPEX is called with (None: the input's own)
    """

    context: Any
    handle: torch.Tensor
    in_features: int
    out_features: int
    padded: int
    compute: Optional[torch.dtype]


def _aligned_k(qweight: torch.Tensor, scales: torch.Tensor, offsets: Optional[torch.Tensor],
               group_size: int) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor], int,
                                         int]:
    """Pad K to a multiple of K_ALIGN with zero columns, in groups of their own (scale 1,
    offset 0) when groups are smaller than K; returns (qweight, scales, offsets, IPEX group
    size, columns added)."""
    n, k = qweight.shape
    per_channel = group_size >= k
    if not per_channel and group_size % K_ALIGN:
        raise ConfigError(f"IPEX's weight-only linear takes group sizes that are multiples of "
                          f"{K_ALIGN} (it aborts the process on others), and this weight has "
                          f"group_size {group_size}; choose another implementation of the op "
                          f"(BASEBOARD_BACKEND=gemm_w4a16=avx512_bf16,gemm_w8a16=avx512_bf16).")
    groups = PER_CHANNEL if per_channel else group_size
    pad = -k % K_ALIGN
    if not pad:
        return qweight, scales, offsets, groups, 0
    qweight = F.pad(qweight, (0, pad))  # code 0 in a group of scale 1 and offset 0: 0.0
    if not per_channel:
        extra = -(-(k + pad) // group_size) - k // group_size
        scales = torch.cat((scales, torch.ones_like(scales[:, :1]).expand(n, extra)), dim=1)
        if offsets is not None:
            offsets = torch.cat((offsets, torch.zeros_like(offsets[:, :1]).expand(n, extra)),
                                dim=1)
    return qweight, scales, offsets, groups, pad


def _bias(bias: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return None if bias is None else bias.detach().float().contiguous()


def _linear(state: WoqLinear, x: torch.Tensor, out_dtype: Optional[torch.dtype]) -> torch.Tensor:
    out_dtype = out_dtype or x.dtype
    rows = x.reshape(-1, state.in_features)
    compute = state.compute or (torch.float32 if out_dtype == torch.float32 else x.dtype)
    if rows.dtype != compute:
        rows = rows.to(compute)
    if state.padded:
        rows = F.pad(rows, (0, state.padded))
    y = torch.ops.torch_ipex.ipex_woq_linear(rows.contiguous(), state.handle)
    if y.dtype != out_dtype:
        y = y.to(out_dtype)
    return y.view(*x.shape[:-1], state.out_features)


def _bf16_keeps_float32_sums() -> bool:
    return torch._C._cpu._is_amx_tile_supported()


class IpexW8A16:
    """int8 codes with group (or per-channel) scales on IPEX's WoQ linear: bf16 compute
    on AMX, float32 elsewhere (see the module doc)."""

    @staticmethod
    def prepare(qweight: torch.Tensor, scales: torch.Tensor, group_size: int,
                bias: Optional[torch.Tensor]) -> WoqLinear:
        ipex()
        n, k = qweight.shape
        codes, scales, _, groups, padded = _aligned_k(qweight.contiguous(), scales.clone(), None,
                                                   group_size)
        scales = scales.float().contiguous()
        if groups == PER_CHANNEL:
            scales = scales.reshape(n)
        bf16 = _bf16_keeps_float32_sums()
        context = torch.ops.ipex_prepack.weight_only_qlinear_prepack(
            codes, INT8, [n, codes.shape[1]], scales, None, _bias(bias), None, None, groups,
            LOWP_BF16 if bf16 else LOWP_NONE, ACT_QUANT_NONE, False)
        return WoqLinear(context, context.get_data_handle(), k, n, padded,
                         None if bf16 else torch.float32)

    @staticmethod
    def apply(state: WoqLinear, x: torch.Tensor,
              out_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        return _linear(state, x, out_dtype)


class IpexW4A16:
    """4-bit codes (0..15) with group scales and offsets on IPEX's WoQ linear, float32
    compute (see the module doc for why)."""

    @staticmethod
    def prepare(qweight: torch.Tensor, scales: torch.Tensor, offsets: torch.Tensor,
                group_size: int, bias: Optional[torch.Tensor]) -> WoqLinear:
        ipex()
        n, k = qweight.shape
        codes, scales, offsets = qweight.contiguous(), scales.clone().float(), offsets.float()
        # w = code * scale + offset = (code - zero) * scale. A group of scale 0 (a constant
        # one: GGUF writes all-zero blocks so) becomes codes 0, scale 1, zero -offset
        constant = scales == 0
        if bool(constant.any()):
            codes = codes.masked_fill(constant.repeat_interleave(k // scales.shape[1], 1), 0)
            scales = scales.masked_fill(constant, 1.0)
        codes, scales, offsets, groups, padded = _aligned_k(codes, scales, offsets, group_size)
        zeros = (-offsets / scales).contiguous()
        packed = (codes[:, 0::2] | (codes[:, 1::2] << 4)).contiguous()  # [N, K/2] uint8
        if groups == PER_CHANNEL:
            scales, zeros = scales.reshape(n).contiguous(), zeros.reshape(n).contiguous()
        context = torch.ops.ipex_prepack.weight_only_qlinear_prepack_int4(
            packed, scales, zeros, _bias(bias), None, None, groups, LOWP_NONE,
            ACT_QUANT_PER_IC_BLOCK, False, PLAIN_FORMAT)
        return WoqLinear(context, context.get_data_handle(), k, n, padded, torch.float32)

    @staticmethod
    def apply(state: WoqLinear, x: torch.Tensor,
              out_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        return _linear(state, x, out_dtype)
