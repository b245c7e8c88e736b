"""The grid of cases every implementation of an op is checked on.

A case is data: the op, the dtype, the shapes. ``checks.py`` turns a case into
inputs and compares an implementation with the reference on them. Shapes include
odd sizes (T = 1, 7, 33; K = 257) because padding and tail handling are where
kernels go wrong. Weight ops apply one prepared weight at every T, as the engine
does (prepare once at load, apply per step).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..core.platform import Platform
from ..core.quant import PER_CHANNEL, QuantScheme
from ..core.selection import SelectionContext

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
TOKENS = (1, 7, 33)  # T: a decode row, a short prefill, a prefill past a power of two
HIDDEN = (64, 96, 257)  # K: a power of two, a multiple of 32, a prime
HEAD_DIMS = (64, 96, 128)
ROTARY_HEADS = (4, 2)  # (Hq, Hk)
GEMM_SHAPES = ((64, 128), (96, 80), (257, 129))  # (K, N)
GROUP_SHAPES = ((64, 128, 32, False), (96, 80, 32, True), (96, 80, 96, False),
                (96, 80, 16, True), (257, 129, 257, True))
# (K, N, group size G, bias); G = K is per-channel; 16 and 32 are GGUF's (Q6_K, Q4_K)
CHANNEL_SHAPES = ((64, 128, False), (96, 80, True), (257, 129, True))  # (K, N, bias)
# gemm_w4a16 also with symmetric codes (offset = -8 * scale, as GPTQ sym and GGUF Q4_0 store)
SYMMETRIC_4BIT_SHAPES = ((256, 64, 128, False),)  # (K, N, G, bias)
# the layout each quantized GEMM's cases hand to supports(ctx): (weight, activation)
CASE_SCHEMES = {"gemm_w4a16": ("uint4", "16bit"), "gemm_w8a16": ("int8", "16bit"),
                "gemm_w8a8_int8": ("int8", "int8"),
                "gemm_w8a8_fp8": ("float8_e4m3fn", "float8_e4m3fn")}
# (K, N, (BN, BK), bias): whole 128x128 blocks, partial last blocks, small blocks
BLOCK_SHAPES = ((256, 256, (128, 128), False), (257, 129, (128, 128), True),
                (96, 80, (32, 32), True))
ATTENTION_CONFIGS = ((4, 4, 64, 16), (8, 2, 128, 16), (8, 1, 64, 32),
                     (6, 2, 80, 16), (8, 2, 128, 64))
# (Hq, Hk, D, block size): MHA, GQA, MQA, odd D, blocks holding whole key tiles
VOCAB_SIZES = (257, 1000)
# A base (mixed: every kind of row; plain: temperatures only, with the no_top_k / no_top_p
# flags set; greedy: all_greedy and no noise) and the features over it (sample_check.py)
SAMPLING_MODES = ("mixed", "plain", "greedy", "mixed+min_p", "plain+min_p", "mixed+presence",
                  "mixed+frequency", "mixed+repetition", "mixed+penalties+min_p",
                  "plain+penalties+min_p", "greedy+penalties")

CONTEXT_FIELDS = ("head_dim", "num_heads", "num_kv_heads", "block_size", "quant_schemes",
                  "tensor_parallel_size")
# (T, N) of the communication ops' messages: a decode row, a prefill, an odd width
COLLECTIVE_SHAPES = ((1, 64), (7, 96), (33, 257))
COLLECTIVE_WORLD = 2  # ranks (processes, and devices on an accelerator) of each case


@dataclass(frozen=True)
class Case:
    """One point of an op's grid. ``params`` holds the shapes the check reads."""

    op: str
    id: str
    dtype: torch.dtype
    params: dict[str, Any] = field(default_factory=dict, hash=False)

    def context(self, platform: Platform) -> SelectionContext:
        """What ``supports(ctx)`` sees for this case."""
        extra = {name: self.params[name] for name in CONTEXT_FIELDS if name in self.params}
        return SelectionContext(platform=platform, dtype=self.dtype, **extra)

    def generator(self) -> torch.Generator:
        """A CPU generator seeded by the case id, so a failing case reproduces exactly."""
        return torch.Generator().manual_seed(zlib.crc32(f"{self.op}/{self.id}".encode()))


def randn(gen: torch.Generator, shape: tuple[int, ...], dtype: torch.dtype,
          device: torch.device, scale: float = 1.0) -> torch.Tensor:
    """Standard normal values * scale, drawn in float32 on the CPU, then moved and cast."""
    return (torch.randn(shape, generator=gen) * scale).to(device=device, dtype=dtype)


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _case(op: str, dtype: torch.dtype, label: str, **params: Any) -> Case:
    return Case(op, f"{dtype_name(dtype)}-{label}", dtype, params)


def _rows(op: str) -> list[Case]:
    """Ops over [T, K] rows: the norms and silu_and_mul."""
    return [_case(op, dtype, f"T{t}-K{k}", tokens=t, hidden=k)
            for dtype in DTYPES for t in TOKENS for k in HIDDEN]


def _rotary(op: str) -> list[Case]:
    hq, hk = ROTARY_HEADS
    return [_case(op, dtype, f"T{t}-D{d}", tokens=t, head_dim=d, num_heads=hq, num_kv_heads=hk)
            for dtype in DTYPES for t in TOKENS for d in HEAD_DIMS]


def _bias_label(bias: bool) -> str:
    return "-bias" if bias else ""


def _gemm(op: str) -> list[Case]:
    return [_case(op, dtype, f"K{k}-N{n}{_bias_label(bias)}", hidden=k, out=n, bias=bias)
            for dtype in DTYPES for k, n in GEMM_SHAPES for bias in (False, True)]


def _schemes(op: str, k: int, group_size: int, symmetric: bool) -> tuple[QuantScheme]:
    weight, activation = CASE_SCHEMES[op]
    group = PER_CHANNEL if group_size == k else group_size
    return (QuantScheme(op, weight, group, symmetric, activation=activation),)


def _group_gemm(op: str) -> list[Case]:
    shapes = [(k, n, g, bias, op != "gemm_w4a16") for k, n, g, bias in GROUP_SHAPES]
    if op == "gemm_w4a16":
        shapes += [(k, n, g, bias, True) for k, n, g, bias in SYMMETRIC_4BIT_SHAPES]
    return [_case(op, dtype, f"K{k}-N{n}-G{g}{_bias_label(bias)}"
                  f"{'-sym' if sym and op == 'gemm_w4a16' else ''}", hidden=k, out=n,
                  group_size=g, bias=bias, symmetric=sym,
                  quant_schemes=_schemes(op, k, g, sym))
            for dtype in DTYPES for k, n, g, bias, sym in shapes]


def _channel_gemm(op: str) -> list[Case]:
    return [_case(op, dtype, f"K{k}-N{n}{_bias_label(bias)}", hidden=k, out=n, bias=bias,
                  quant_schemes=_schemes(op, k, k, True))
            for dtype in DTYPES for k, n, bias in CHANNEL_SHAPES]


def _block_gemm(op: str) -> list[Case]:
    return [_case(op, dtype, f"K{k}-N{n}-B{bn}x{bk}{_bias_label(bias)}", hidden=k, out=n,
                  block_size=(bn, bk), bias=bias)
            for dtype in DTYPES for k, n, (bn, bk), bias in BLOCK_SHAPES]


def _attention(op: str) -> list[Case]:
    return [_case(op, dtype, f"H{hq}-KV{hk}-D{d}-B{bs}", num_heads=hq, num_kv_heads=hk,
                  head_dim=d, block_size=bs)
            for dtype in DTYPES for hq, hk, d, bs in ATTENTION_CONFIGS]


def _sample(op: str) -> list[Case]:
    # logits are float32 whatever the model dtype; the dtype is there for supports(ctx)
    return [_case(op, dtype, f"V{v}-{mode}", vocab=v, mode=mode)
            for dtype in DTYPES for v in VOCAB_SIZES for mode in SAMPLING_MODES]


def _collective(op: str) -> list[Case]:
    return [_case(op, dtype, f"W{COLLECTIVE_WORLD}-T{t}-N{n}", tokens=t, hidden=n,
                  world=COLLECTIVE_WORLD, tensor_parallel_size=COLLECTIVE_WORLD)
            for dtype in DTYPES for t, n in COLLECTIVE_SHAPES]


GENERATORS: dict[str, Callable[[str], list[Case]]] = {
    "rms_norm": _rows, "fused_add_rms_norm": _rows, "silu_and_mul": _rows,
    "rotary_embedding": _rotary, "gemm": _gemm,
    "gemm_w4a16": _group_gemm, "gemm_w8a16": _group_gemm,
    "gemm_w8a8_int8": _channel_gemm, "gemm_w8a8_fp8": _channel_gemm,
    "gemm_w8a8_fp8_block": _block_gemm,
    "attention": _attention, "sample": _sample,
    "all_reduce": _collective, "all_gather": _collective,
}


def cases_for(op: str) -> list[Case]:
    """Every case of ``op``'s grid; [] for an op the kit has no cases for yet."""
    generator = GENERATORS.get(op)
    return generator(op) if generator else []
