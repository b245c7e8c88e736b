"""gemlite (a Triton low-bit GEMM library from the package index) behind gemm_w4a16 and
gemm_w8a16, an optional candidate on cuda below our own Triton kernels and tinygemm: it
serves where it is chosen by name (``--backend gemm_w4a16=gemlite``). The measured selection
(BASEBOARD_TUNE) does not time the quantized GEMMs yet, so it never picks gemlite itself.

``GemliteW4A16``  4-bit codes packed eight to an int32 along K, w = q x scale + offset per
                  group (gemlite's "fma" mode, so our offsets are used as they are)
``GemliteW8A16``  int8 codes as they are, w = q x scale per group, or the product scaled
                  per output channel after the dot (per-channel layers)

Scales and offsets stay float32 (gemlite dequantizes in the dtype of its scales and casts
to the activations' dtype for the dot), so one prepared weight serves bf16 and fp16
activations and float32 results. gemlite picks its kernel per call from the row count
(GEMV up to a few rows, split-K GEMM, then GEMM) and autotunes it at the first call of
each row bucket; every call afterwards is a fixed sequence of launches with no host
synchronisation (split-K output zeroed by a captured kernel), so it runs inside a CUDA
graph once the warm-up before capture has tuned it.

Nothing here imports gemlite at import time: ``supports_*`` are read at discovery.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from ..core.errors import ConfigError
from ..core.quant import PER_CHANNEL

# gemlite's K tiles are powers of two of at least 32 inputs, each within one group (its
# tile pruning rounds a tile up to a power of two, past a group of 96)
MIN_GROUP = 32
# gemlite refuses in_features that are not a multiple of 32: a per-channel weight of
# another K gets zero codes up to the next multiple, and x zero columns per call
K_MULTIPLE = 32
WEIGHT_TYPES = {"gemm_w4a16": ("uint4", "int4"), "gemm_w8a16": ("int8",)}
HALF_DTYPES = (torch.bfloat16, torch.float16)
# gemlite ships tile configurations per GPU name; the H200 (an H100 with more and faster
# memory) matches none, and without one every new shape is autotuned at its first call
NEAREST_CONFIG = {"h200": "h100"}
_configs_loaded: set[str] = set()  # device names whose nearest configuration is loaded


@dataclass
class GemliteState:
    """One prepared weight: gemlite's packed layer, and its argument lists per
    (activation dtype, result dtype), built at the first call of each pair."""

    layer: Any  # gemlite.GemLiteLinearTriton, packed; no bias (added here, in y's dtype)
    n: int
    k: int
    pad: int  # zero columns appended to x (a per-channel K not a multiple of 32), else 0
    bias: Optional[torch.Tensor]
    meta_args: dict = field(default_factory=dict)


def _gemlite():
    import gemlite

    return gemlite


def _load_nearest_config(device: torch.device) -> None:
    """Load gemlite's tiles of the nearest GPU where it has none for this one (once)."""
    name = torch.cuda.get_device_name(device).lower()
    if name in _configs_loaded:
        return
    _configs_loaded.add(name)
    for ours, theirs in NEAREST_CONFIG.items():
        path = Path(_gemlite().__file__).parent / "configs" / f"{theirs}.json"
        if ours in name and path.exists():
            _gemlite().load_config(str(path), print_error=False)


def group_fits(group_size: int) -> bool:
    """Whether gemlite's tiles fit groups of ``group_size`` inputs: 32, 64, 128, ..."""
    return group_size >= MIN_GROUP and group_size & (group_size - 1) == 0


def _check_shape(op: str, qweight: torch.Tensor, scales: torch.Tensor, group_size: int) -> None:
    n, k = qweight.shape
    if not qweight.is_cuda:
        raise ConfigError(f"{op}=gemlite runs on CUDA GPUs only; this weight is on "
                          f"{qweight.device}. Use {op}=triton or {op}=torch")
    if k % group_size or (group_size != k and not group_fits(group_size)):
        raise ConfigError(
            f"{op}=gemlite: weight [N={n}, K={k}] in groups of {group_size}; gemlite takes "
            f"groups of a power of two from {MIN_GROUP} dividing K, or one per channel. Use "
            f"{op}=triton for this weight")
    if scales.shape != (n, k // group_size):
        raise ConfigError(f"{op}=gemlite: scales of shape {tuple(scales.shape)} do not match "
                          f"qweight [N={n}, K={k}] with group_size {group_size}")


def _padded_codes(codes: torch.Tensor, group_size: int) -> tuple[torch.Tensor, int, int]:
    """(codes [N, K + pad], group size, pad): zero codes up to a multiple of K_MULTIPLE for
    a per-channel weight (with x's zero columns they add nothing, whatever the offset)."""
    k = codes.shape[1]
    pad = -k % K_MULTIPLE
    if pad == 0:
        return codes, group_size, 0
    return torch.nn.functional.pad(codes, (0, pad)), k + pad, pad


def _packed_layer(codes: torch.Tensor, scales: torch.Tensor, offsets: Optional[torch.Tensor],
                  group_size: int, bits: int) -> Any:
    """gemlite's layer for codes [N, K] (uint8 0..15 for 4 bits, int8 for 8; K a multiple
    of 32), scales and offsets [N, K/G]. Its DType arguments are placeholders: every call
    passes its own."""
    gemlite = _gemlite()
    n, k = codes.shape
    _load_nearest_config(codes.device)
    layer = gemlite.GemLiteLinearTriton(
        bits, group_size=group_size, in_features=k, out_features=n,
        input_dtype=gemlite.DType.BF16, output_dtype=gemlite.DType.BF16,
        acc_dtype=gemlite.DType.FP32)
    scales = scales.float().contiguous()
    if offsets is None:  # int8: w = q x scale (per channel: the product scaled after)
        return layer.pack(codes.to(torch.int8), scales, zeros=None, bias=None)
    # gemlite's fma mode stores -zero x scale, which is our offset: pack with zero points
    # of 0 and write the offsets in their place ([K/G, N], as gemlite keeps its scales)
    layer.pack(codes.to(torch.uint8), scales, zeros=torch.zeros_like(scales), bias=None)
    layer.zeros.data = offsets.float().t().contiguous()
    # a per-channel layer gets gemlite's post-scaled mode from pack(); the fma mode reads
    # one group as wide as K just as well, and keeps the offsets exact
    layer.W_group_mode, layer.channel_scale_mode = 4, 0
    return layer


def _meta_args(state: GemliteState, x_dtype: torch.dtype, out_dtype: torch.dtype) -> list:
    key = (x_dtype, out_dtype)
    args = state.meta_args.get(key)
    if args is None:
        from gemlite.dtypes import TORCH_TO_DTYPE

        state.layer.input_dtype = TORCH_TO_DTYPE[x_dtype]
        state.layer.output_dtype = TORCH_TO_DTYPE[out_dtype]
        args = state.meta_args[key] = state.layer.get_meta_args()
    return args


def gemlite_matmul(state: GemliteState, x: torch.Tensor,
                   out_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """y [..., N] = x [..., K] (bf16 or fp16) @ dequantized(weight).T + bias, in
    ``out_dtype`` (x's by default; float32 for the lm_head)."""
    if x.dtype not in HALF_DTYPES:
        raise ConfigError(f"gemlite multiplies bfloat16 or float16 activations; x is "
                          f"{x.dtype}. Choose gemm_w4a16=triton / gemm_w8a16=triton")
    out_dtype = out_dtype or x.dtype
    lead = x.shape[:-1]
    rows = x.reshape(-1, state.k)
    if rows.shape[0] == 0:
        return x.new_empty((*lead, state.n), dtype=out_dtype)
    if state.pad:
        rows = torch.nn.functional.pad(rows, (0, state.pad))
    y = _gemlite().forward_functional(rows, None, state.layer.get_tensor_args(),
                                      _meta_args(state, x.dtype, out_dtype))
    if state.bias is not None:
        y = y + state.bias.to(y.dtype)
    return y.reshape(*lead, state.n)


class GemliteW4A16:
    """gemm_w4a16 through gemlite: 4-bit codes, groups of 32, 64, 128... or per channel."""

    @staticmethod
    def prepare(qweight: torch.Tensor, scales: torch.Tensor, offsets: torch.Tensor,
                group_size: int, bias: Optional[torch.Tensor]) -> GemliteState:
        _check_shape("gemm_w4a16", qweight, scales, group_size)
        n, k = qweight.shape
        codes, group_size, pad = _padded_codes(qweight, group_size)
        return GemliteState(_packed_layer(codes, scales, offsets, group_size, 4), n, k, pad,
                            bias)

    apply = staticmethod(gemlite_matmul)


class GemliteW8A16:
    """gemm_w8a16 through gemlite: int8 codes, groups of 32, 64, 128... or per channel."""

    @staticmethod
    def prepare(qweight: torch.Tensor, scales: torch.Tensor, group_size: int,
                bias: Optional[torch.Tensor]) -> GemliteState:
        _check_shape("gemm_w8a16", qweight, scales, group_size)
        n, k = qweight.shape
        codes, group_size, pad = _padded_codes(qweight, group_size)
        return GemliteState(_packed_layer(codes, scales, None, group_size, 8), n, k, pad, bias)

    apply = staticmethod(gemlite_matmul)


def _scheme_reason(op: str, scheme: Any) -> Optional[str]:
    if scheme.weight not in WEIGHT_TYPES[op]:
        return f"weights of type {scheme.weight} (takes {', '.join(WEIGHT_TYPES[op])})"
    if scheme.activation != "16bit":
        return f"activations {scheme.activation} (takes 16-bit activations)"
    if scheme.block is not None:
        return "2-D block scales (takes one scale per output channel or per group of inputs)"
    if scheme.group_size != PER_CHANNEL and not group_fits(scheme.group_size):
        return (f"group size {scheme.group_size} (takes powers of two from {MIN_GROUP}, or "
                f"per-channel scales)")
    if op == "gemm_w8a16" and not scheme.symmetric:
        return "asymmetric 8-bit codes (takes symmetric int8 codes)"
    return None  # act-order: the layer has gathered x's columns before the GEMM


def supports_gemlite(op: str):
    """The ``supports(ctx)`` of gemlite's record for ``op``: CUDA (not ROCm), bf16 or fp16
    models, and every layout the model hands ``op`` one it takes: 4-bit codes with any
    offsets (symmetric or not) for gemm_w4a16, symmetric int8 for gemm_w8a16; scales per
    channel or per group of 32, 64, 128... inputs; act-order (the permutation is applied
    to x by the layer, at prepare for the weight)."""
    def supports(ctx: Any) -> Optional[str]:
        if ctx.platform.device_type != "cuda" or torch.version.hip:
            return f"gemlite is registered for NVIDIA GPUs; platform {ctx.platform.name!r} is not one"
        if ctx.dtype not in HALF_DTYPES:
            return (f"bfloat16 or float16 models only; this one runs in "
                    f"{str(ctx.dtype).removeprefix('torch.')}")
        for scheme in ctx.schemes_for(op):
            reason = _scheme_reason(op, scheme)
            if reason:
                return f"quantized layout '{scheme.describe()}': {reason}"
        return None
    supports.__name__ = f"supports_gemlite_{op}"
    return supports
