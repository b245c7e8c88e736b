"""torch's own quantized GEMM kernels behind the quantized ops, as alternatives to the
Triton kernels (selection and the benchmark compare them):

``ScaledMmFp8``   gemm_w8a8_fp8 through ``torch._scaled_mm`` with row-wise scales
``IntMmInt8``     gemm_w8a8_int8 through ``torch._int_mm`` (int32 result, rescaled after)
``TinyGemmW4A16`` gemm_w4a16 through ``torch._weight_int4pack_mm`` ("tinygemm"; CUDA, bf16)

Each quantizes activations per token with plain torch ops, as the reference defines it.
Every call is a fixed sequence of kernels with no host synchronisation, so each runs
inside a CUDA graph. ``supports_*`` are their ``supports(ctx)``.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import torch

from ...core.errors import ConfigError
from ...core.quant import PER_CHANNEL
from .quant_gemm import FP8_MAX

TINYGEMM_GROUPS = (32, 64, 128, 256)
INT_MM_MIN_ROWS = 17  # torch._int_mm on CUDA takes more than 16 rows


class ScaledState(NamedTuple):
    weight_t: torch.Tensor  # [K, N] int8 / float8_e4m3fn, column-major (the [N, K] weight, .t())
    scales: torch.Tensor  # [1, N] float32
    bias: Optional[torch.Tensor]  # [N]
    unit: torch.Tensor  # [] float32 1.0: the scale of a product scaled after


def _scaled_state(qweight: torch.Tensor, scales: torch.Tensor, bias: Optional[torch.Tensor],
                  dtype: torch.dtype, op: str) -> ScaledState:
    n, k = qweight.shape
    if qweight.dtype != dtype or scales.shape != (n,):
        raise ConfigError(f"{op}: expected qweight [N, K] {dtype} and scales [N]; got "
                          f"{tuple(qweight.shape)} {qweight.dtype} and {tuple(scales.shape)}")
    if qweight.is_cuda and (k % 16 or n % 16):
        raise ConfigError(f"{op}: torch's 8-bit GEMMs need K and N multiples of 16 on CUDA; "
                          f"this weight is [N={n}, K={k}]. Use the Triton kernel ({op}=triton)")
    return ScaledState(qweight.contiguous().t(), scales.float().reshape(1, n), bias,
                       torch.ones((), device=qweight.device))


def _per_token(x: torch.Tensor, qmax: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(x / scale as float32 [T, K], scale [T, 1] float32), scale = amax / qmax."""
    x = x.float()
    scale = x.abs().amax(dim=-1, keepdim=True).clamp(min=1e-12) / qmax
    return x / scale, scale


def _rows(x: torch.Tensor, k: int) -> torch.Tensor:
    return x.reshape(-1, k)


class ScaledMmFp8:
    """torch._scaled_mm: float8_e4m3fn rows times the column-major weight. For a bf16 result
    the kernel applies the row-wise scales (x's per token, the weight's per channel) itself;
    CUDA's row-wise kernels write bf16 only, so any other result (float32 for the lm_head,
    float16) comes from the float32 product with unit scales, scaled after."""

    @staticmethod
    def prepare(qweight: torch.Tensor, scales: torch.Tensor,
                bias: Optional[torch.Tensor]) -> ScaledState:
        return _scaled_state(qweight, scales, bias, torch.float8_e4m3fn, "gemm_w8a8_fp8")

    @staticmethod
    def apply(state: ScaledState, x: torch.Tensor,
              out_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        k, n = state.weight_t.shape
        lead, out_dtype = x.shape[:-1], out_dtype or x.dtype
        scaled, x_scale = _per_token(_rows(x, k), FP8_MAX)
        xq = scaled.clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
        if out_dtype == torch.bfloat16:
            y = torch._scaled_mm(xq, state.weight_t, scale_a=x_scale, scale_b=state.scales,
                                 out_dtype=out_dtype)
        else:
            y = torch._scaled_mm(xq, state.weight_t, scale_a=state.unit, scale_b=state.unit,
                                 out_dtype=torch.float32) * x_scale * state.scales
        if state.bias is not None:
            y = y + state.bias.to(y.dtype)
        return y.to(out_dtype).reshape(*lead, n)


class IntMmInt8:
    """torch._int_mm: int8 rows times the column-major int8 weight into int32, then both
    scales and the bias in float32."""

    @staticmethod
    def prepare(qweight: torch.Tensor, scales: torch.Tensor,
                bias: Optional[torch.Tensor]) -> ScaledState:
        return _scaled_state(qweight, scales, bias, torch.int8, "gemm_w8a8_int8")

    @staticmethod
    def apply(state: ScaledState, x: torch.Tensor,
              out_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        k, n = state.weight_t.shape
        lead, out_dtype = x.shape[:-1], out_dtype or x.dtype
        scaled, x_scale = _per_token(_rows(x, k), 127.0)
        xq = scaled.round().clamp(-128, 127).to(torch.int8)
        m = xq.shape[0]
        if xq.is_cuda and m < INT_MM_MIN_ROWS:  # zero rows in, zero rows out: dropped after
            xq = torch.cat([xq, xq.new_zeros(INT_MM_MIN_ROWS - m, k)])
        acc = torch._int_mm(xq, state.weight_t)[:m]
        y = acc.float() * x_scale * state.scales
        if state.bias is not None:
            y = y + state.bias.float()
        return y.to(out_dtype).reshape(*lead, n)


class TinyGemmState(NamedTuple):
    packed: torch.Tensor  # tinygemm's tiled int4 layout
    scales_and_zeros: torch.Tensor  # [K/G, N, 2] bf16: w = (q - 8) * scale + zero
    group_size: int
    n: int
    bias: Optional[torch.Tensor]


class TinyGemmW4A16:
    """torch._weight_int4pack_mm: int4 weights in tinygemm's tiled layout, bf16 activations,
    groups of 32..256. Computes and rounds in bf16, so it cannot give the float32
    accumulation that out_dtype=float32 asks (the lm_head): such a call raises."""

    @staticmethod
    def prepare(qweight: torch.Tensor, scales: torch.Tensor, offsets: torch.Tensor,
                group_size: int, bias: Optional[torch.Tensor]) -> TinyGemmState:
        n, k = qweight.shape
        inner_k_tiles = next((t for t in (8, 4, 2) if k % (t * 16) == 0), None)
        if group_size not in TINYGEMM_GROUPS or n % 8 or inner_k_tiles is None:
            raise ConfigError(
                f"gemm_w4a16=tinygemm: weight [N={n}, K={k}] in groups of {group_size}; "
                f"tinygemm takes groups of {', '.join(map(str, TINYGEMM_GROUPS))}, N a "
                f"multiple of 8 and K of 32. Use gemm_w4a16=triton for this weight")
        codes = qweight.to(torch.uint8)
        pairs = (codes[:, ::2] << 4) | codes[:, 1::2]  # [N, K/2], even k in the high nibble
        packed = torch.ops.aten._convert_weight_to_int4pack(pairs.contiguous(), inner_k_tiles)
        # ours: w = q * s + o; tinygemm's: w = (q - 8) * s + z, so z = o + 8 s
        zeros = offsets.float() + 8 * scales.float()
        scales_and_zeros = torch.stack([scales.float().t(), zeros.t()], dim=-1)
        return TinyGemmState(packed, scales_and_zeros.to(torch.bfloat16).contiguous(),
                             group_size, n, bias)

    @staticmethod
    def apply(state: TinyGemmState, x: torch.Tensor,
              out_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        if out_dtype not in (None, torch.bfloat16) or x.dtype != torch.bfloat16:
            raise ConfigError(
                f"gemm_w4a16=tinygemm computes and rounds in bfloat16; it cannot take x of "
                f"{x.dtype} with out_dtype {out_dtype} (out_dtype=float32 asks for the "
                f"float32 accumulation). Choose gemm_w4a16=triton for this model")
        k = x.shape[-1]
        y = torch.ops.aten._weight_int4pack_mm(_rows(x, k).contiguous(), state.packed,
                                               state.group_size, state.scales_and_zeros)
        if state.bias is not None:
            y = y + state.bias.to(y.dtype)
        return y.reshape(*x.shape[:-1], state.n)


def _scheme_reason(ctx: Any, op: str, weights: tuple[str, ...], activation: str,
                   groups: tuple[int, ...] = (PER_CHANNEL,)) -> Optional[str]:
    for scheme in ctx.schemes_for(op):
        if scheme.weight not in weights or scheme.activation != activation \
                or scheme.block is not None or scheme.group_size not in groups:
            names = ", ".join("per-channel" if g == PER_CHANNEL else f"g{g}" for g in groups)
            return (f"quantized layout '{scheme.describe()}' is not {' or '.join(weights)} "
                    f"weights with {names} scales and {activation} activations")
    return None


def supports_scaled_mm(ctx: Any) -> Optional[str]:
    """torch._scaled_mm with row-wise scales: CUDA compute capability 8.9+ (Ada, Hopper)."""
    if ctx.platform.device_type == "cuda" and torch.cuda.is_available() \
            and torch.cuda.get_device_capability() < (8, 9):
        return "torch._scaled_mm needs compute capability 8.9+ for float8_e4m3fn"
    return _scheme_reason(ctx, "gemm_w8a8_fp8", ("float8_e4m3fn",), "float8_e4m3fn")


def supports_int_mm(ctx: Any) -> Optional[str]:
    return _scheme_reason(ctx, "gemm_w8a8_int8", ("int8",), "int8")


def supports_tinygemm(ctx: Any) -> Optional[str]:
    """tinygemm: bf16 models, 4-bit codes in groups of 32..256."""
    if ctx.dtype != torch.bfloat16:
        return f"bfloat16 models only; this one runs in {str(ctx.dtype).removeprefix('torch.')}"
    return _scheme_reason(ctx, "gemm_w4a16", ("uint4", "int4"), "16bit", TINYGEMM_GROUPS)
