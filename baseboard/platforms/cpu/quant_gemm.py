"""Quantized GEMMs for ``gemm_w4a16`` and ``gemm_w8a16``.

``avx512_bf16`` and ``avx512_f32`` keep the weight quantized (csrc/quant_gemm.c): the
codes are packed once into 32-column panels (4-bit codes two to a byte), the scales and
offsets kept in the dtype they came in, and one native kernel multiplies. It has three
paths inside, chosen per call by the number of rows M against ``fused_rows`` (below):

- M <= fused_rows (decode): the codes are turned into numbers in registers and never
  written out, so a step streams about a quarter (4-bit) or half (int8) of a bf16
  weight's bytes; each group's sum is scaled in float32.
- larger M, bf16 activations on a CPU with AMX-BF16: 16 rows at a time, each group's
  codes decoded into AMX tiles and multiplied by the tile unit, sums scaled in float32.
- larger M otherwise: each panel is dequantized once into a per-thread dense panel and
  the dense kernels of gemm.c run on it, at the dense kernel's speed.

The thresholds are where one path overtook the other in measurements of
benchmarks/cpu_quant.py's shapes, not measured at load: on the 2-core Xeon of
docs/benchmarks.md (single thread), AMX's tile multiply wins from 2 rows (4-bit) or 3
(int8), and the register path stays ahead of the dequantizing one up to about 16 rows in
float32; without AMX (the 2-core AMD EPYC, two threads) it stays ahead in bf16 up to 8
rows for 4-bit codes and 16 for int8 (12 rows: 554 against 643 us on Qwen2.5-0.5B's
gate_up, 16 rows: 653 against 696; 24 rows: 894 against 841). Int8 codes with bf16
activations at one or two rows are multiplied as float32 (converting them to bf16 pairs
cost more than the multiply-adds).

The op's ``prepare`` is not told the activation dtype, so there is one implementation per
dtype, selected by the model's dtype: ``avx512_bf16`` for bf16 models, ``avx512_f32`` for
float32 models (GGUF checkpoints run in float32 by default, as llama.cpp computes).

``dequant_bf16`` and ``dequant_f32`` dequantize once at load to a dense weight for the
dense kernels (gemm.py): 2 or 4 bytes a weight resident. They stay registered, at a lower
priority, to be chosen by name as the plain alternative.

Numerics: the register and AMX paths multiply the exact codes and scale each group's
float32 sum, at least as precise as the reference (which rounds every weight to the
activation dtype first); the dequantizing path computes each weight as the reference does.
"""

from __future__ import annotations

import ctypes
import functools
from typing import Optional

import torch
import torch.nn.functional as F

from ...core.errors import ModelError
from ...kernels.torch.quant_gemm import GemmW4A16, GemmW8A16
from . import native
from .gemm import PANEL, Avx512Gemm, PackedLinear, pack_linear
from .platform import _cpu_flags

# rows up to which codes are decoded in registers, by code bits: bf16 with AMX, bf16
# without; float32
FUSED_ROWS_AMX, FUSED_ROWS_BF16, FUSED_ROWS_F32 = {4: 1, 8: 2}, {4: 8, 8: 16}, 16
SCALE_DTYPES = (torch.bfloat16, torch.float16, torch.float32)  # kept as given: exact


class QuantizedLinear:
    """A [N, K] weight of ``bits``-bit codes packed for the native kernel, for activations
    of ``dtype`` (bf16 or float32).

    codes    uint8, panels of 32 columns in the layout of csrc/quant_gemm.c
    scales   [panels, K/G, 32] in the dtype given (bf16, float16 or float32)
    offsets  like scales, or None (symmetric codes)
    bias     float32 padded to whole panels, or None
    fused_rows  calls of up to this many rows decode the codes in registers
    amx      whether larger calls take the AMX path (bf16 activations, amx_enabled())
    """

    __slots__ = ("codes", "scales", "offsets", "bias", "dtype", "bits", "group_size",
                 "out_features", "in_features", "fused_rows", "_x_f32", "amx", "_args",
                 "_qgemm")

    def __init__(self, qweight: torch.Tensor, scales: torch.Tensor,
                 offsets: Optional[torch.Tensor], group_size: int, bits: int,
                 bias: Optional[torch.Tensor], dtype: torch.dtype):
        n, k = qweight.shape
        _check_layout(qweight, scales, offsets, group_size, bits, dtype)
        self.dtype, self.bits, self.group_size = dtype, bits, group_size
        self.out_features, self.in_features = n, k
        self._x_f32 = dtype == torch.float32
        self.amx = not self._x_f32 and amx_enabled()
        self.fused_rows = FUSED_ROWS_F32 if self._x_f32 else \
            (FUSED_ROWS_AMX if self.amx else FUSED_ROWS_BF16)[bits]
        self.codes = _pack_codes(qweight, bits, self._x_f32)
        self.scales = _panel_groups(scales)
        self.offsets = None if offsets is None else _panel_groups(offsets.to(scales.dtype))
        self.bias = None
        if bias is not None:
            self.bias = torch.zeros(self.codes.shape[0] * PANEL, dtype=torch.float32)
            self.bias[:n] = bias.float()
        ptr = lambda t: None if t is None else t.data_ptr()  # noqa: E731
        self._args = (ptr(self.codes), ptr(self.scales), ptr(self.offsets),
                      native.dtype_code(scales.dtype), ptr(self.bias))
        self._qgemm = native.library().bb_qgemm

    def matmul(self, x: torch.Tensor, out_dtype: Optional[torch.dtype]) -> torch.Tensor:
        """x [T, K] -> [T, N] in out_dtype (default x's)."""
        if x.dtype != self.dtype or x.dim() != 2 or x.stride(1) != 1:
            return self._general(x, out_dtype)
        y = self._run(x, self._x_f32 or out_dtype == torch.float32, self._args[4],
                      self.fused_rows, self.amx)
        wanted = out_dtype or x.dtype
        return y if y.dtype == wanted else y.to(wanted)

    def _run(self, x: torch.Tensor, out_f32: bool, bias: Optional[int], fused_rows: int,
             amx: bool) -> torch.Tensor:
        rows, n, k = x.shape[0], self.out_features, self.in_features
        threads = torch.get_num_threads()
        y = torch.empty((rows, n), dtype=torch.float32 if out_f32 else torch.bfloat16)
        scratch, work = _workspace(rows, k, self.group_size, fused_rows, amx, self._x_f32,
                                   threads)
        codes, scales, offsets, scale_dtype, _ = self._args
        self._qgemm(x.data_ptr(), x.stride(0), self._x_f32, codes, scales, offsets, scale_dtype,
                    bias, y.data_ptr(), n, out_f32, rows, n, k, self.group_size, self.bits,
                    fused_rows, amx, work, threads)
        del scratch  # held until the kernel returned
        return y

    def _general(self, x: torch.Tensor, out_dtype: Optional[torch.dtype]) -> torch.Tensor:
        """Leading dimensions, strided rows or another dtype: rows of the kernel's dtype
        made contiguous, else the weight as the dequantizing path holds it (rounded to the
        kernel's dtype) through F.linear: slow, and never taken by a model of one dtype."""
        dtype = out_dtype or x.dtype
        if x.dtype == self.dtype:
            flat = x.reshape(-1, x.shape[-1]).contiguous()
            return self.matmul(flat, dtype).view(*x.shape[:-1], self.out_features)
        bias = None if self.bias is None else self.bias[:self.out_features].to(dtype)
        return F.linear(x.to(dtype), self.dequantized(dtype), bias)

    def dequantized(self, dtype: torch.dtype) -> torch.Tensor:
        """The dense [N, K] weight in ``dtype``, for the slow path and for tests: the kernel's
        dequantizing path on an identity of K rows: the reference's values, rounded to the
        kernel's dtype."""
        eye = torch.eye(self.in_features, dtype=self.dtype)
        return self._run(eye, True, None, 0, False).T.contiguous().to(dtype)  # [K, N] -> [N, K]


def _check_layout(qweight: torch.Tensor, scales: torch.Tensor, offsets: Optional[torch.Tensor],
                  group_size: int, bits: int, dtype: torch.dtype) -> None:
    n, k = qweight.shape
    want = torch.uint8 if bits == 4 else torch.int8
    if qweight.dtype != want:
        raise ModelError(f"{bits}-bit codes must be {want}, got {qweight.dtype}; the op's "
                         f"prepare takes unpacked codes [N, K] (baseboard.core.ops)")
    if scales.dtype not in SCALE_DTYPES:
        raise ModelError(f"scales of dtype {scales.dtype} are not supported by the native "
                         f"quantized GEMM; pass bfloat16, float16 or float32 scales")
    if dtype == torch.bfloat16 and group_size % 2 and group_size != k:
        raise ModelError(f"group_size {group_size} is odd: the bf16 kernel multiplies pairs "
                         f"of inputs, which must not straddle two groups; use the dequant_bf16 "
                         f"implementation (--impl gemm_w{bits}a16=dequant_bf16) for this weight")
    if offsets is not None and offsets.shape != scales.shape:
        raise ModelError(f"offsets of shape {tuple(offsets.shape)} do not match scales "
                         f"{tuple(scales.shape)}")


def _pack_codes(qweight: torch.Tensor, bits: int, f32_layout: bool) -> torch.Tensor:
    """[N, K] codes -> [panels, bytes per panel] uint8 (csrc/quant_gemm.c's layout)."""
    n, k = qweight.shape
    q = qweight.contiguous().view(torch.uint8)
    panels = -(-n // PANEL)
    steps = k if f32_layout else -(-k // 2)
    step_bytes = (64 if bits == 8 else 32) // (2 if f32_layout else 1)
    packed = native.streamed_empty(panels * steps * step_bytes, torch.uint8)
    native.library().bb_qgemm_pack(q.data_ptr(), k, n, k, bits, f32_layout, packed.data_ptr(),
                                   torch.get_num_threads())
    return packed.view(panels, steps * step_bytes)


def _panel_groups(values: torch.Tensor) -> torch.Tensor:
    """[N, K/G] -> [panels, K/G, 32] (N zero-padded), the kernel's per-group vectors."""
    n, groups = values.shape
    panels = -(-n // PANEL)
    padded = torch.zeros((panels * PANEL, groups), dtype=values.dtype)
    padded[:n] = values
    return padded.view(panels, PANEL, groups).transpose(1, 2).contiguous()


def _workspace(rows: int, k: int, group_size: int, fused_rows: int, amx: bool, x_f32: bool,
               threads: int) -> tuple[torch.Tensor, int]:
    """Scratch for one call (see bb_qgemm) and its 64-byte aligned address."""
    sums = 4 * rows * (k // group_size)
    if rows <= fused_rows:
        nbytes = sums
    elif amx:  # the group sums, then x padded to rows of amx_row bf16
        half = (group_size + 1) // 2 if group_size == k else group_size // 2
        row = ((-(-k // 2) + min(half, 16)) * 2 + 31) // 32 * 32
        nbytes = -(-sums // 64) * 64 + 2 * rows * row
    else:
        steps = k if x_f32 else -(-k // 2)
        nbytes = threads * (-(-steps * 128 // 64) * 64)
    scratch = torch.empty(nbytes + 64, dtype=torch.uint8)
    return scratch, scratch.data_ptr() + (-scratch.data_ptr() % 64)


ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA, SYS_ARCH_PRCTL = 0x1023, 18, 158  # Linux x86-64


@functools.lru_cache(maxsize=None)
def amx_enabled() -> bool:
    """Whether the bf16 kernels take their AMX path above FUSED_ROWS_AMX rows: the CPU has
    AMX-BF16 and Linux granted this process the tile registers (they are opt-in since
    Linux 5.16). Elsewhere those rows take the dequantizing path, which is correct and
    slower; ``amx_unavailable_reason`` says why."""
    return amx_unavailable_reason() is None


@functools.lru_cache(maxsize=None)
def amx_unavailable_reason() -> Optional[str]:
    missing = [f for f in ("amx_tile", "amx_bf16") if f not in _cpu_flags()]
    if missing:
        return f"the CPU lacks {', '.join(missing)}"
    try:
        syscall = ctypes.CDLL(None, use_errno=True).syscall
    except (OSError, AttributeError) as exc:
        return f"no syscall() to request the AMX tile state: {exc}"
    if syscall(SYS_ARCH_PRCTL, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) != 0:
        return f"Linux refused the AMX tile state (errno {ctypes.get_errno()})"
    return None


class Avx512W4A16:
    """4-bit codes (0..15 per uint8) with group scales and offsets, bf16 activations."""

    dtype = torch.bfloat16  # of the activations, and of the model this serves

    @classmethod
    def prepare(cls, qweight: torch.Tensor, scales: torch.Tensor, offsets: torch.Tensor,
                group_size: int, bias: Optional[torch.Tensor]) -> QuantizedLinear:
        GemmW4A16.prepare(qweight, scales, offsets, group_size, bias)  # the shapes' checks
        return QuantizedLinear(qweight, scales, offsets, group_size, 4, bias, cls.dtype)

    @staticmethod
    def apply(state: QuantizedLinear, x: torch.Tensor,
              out_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        return state.matmul(x, out_dtype)


class Avx512W8A16:
    """int8 codes with group (or per-channel) scales, bf16 activations."""

    dtype = torch.bfloat16

    @classmethod
    def prepare(cls, qweight: torch.Tensor, scales: torch.Tensor, group_size: int,
                bias: Optional[torch.Tensor]) -> QuantizedLinear:
        GemmW8A16.prepare(qweight, scales, group_size, bias)
        return QuantizedLinear(qweight, scales, None, group_size, 8, bias, cls.dtype)

    apply = Avx512W4A16.apply


class Avx512W4A16Float32(Avx512W4A16):
    """4-bit codes, float32 activations."""

    dtype = torch.float32


class Avx512W8A16Float32(Avx512W8A16):
    """int8 codes, float32 activations."""

    dtype = torch.float32


class DequantW4A16:
    """4-bit codes dequantized once at load to bf16, then the avx512_bf16 dense GEMM."""

    dtype = torch.bfloat16  # of the dense weight, and of the model this serves

    @classmethod
    def prepare(cls, qweight: torch.Tensor, scales: torch.Tensor, offsets: torch.Tensor,
                group_size: int, bias: Optional[torch.Tensor]) -> PackedLinear:
        groups = GemmW4A16.prepare(qweight, scales, offsets, group_size, bias)
        return pack_linear(groups.weight.dequantize(cls.dtype), groups.bias)

    apply = staticmethod(Avx512Gemm.apply)


class DequantW8A16:
    """int8 codes dequantized once at load to bf16, then the avx512_bf16 dense GEMM."""

    dtype = torch.bfloat16

    @classmethod
    def prepare(cls, qweight: torch.Tensor, scales: torch.Tensor, group_size: int,
                bias: Optional[torch.Tensor]) -> PackedLinear:
        groups = GemmW8A16.prepare(qweight, scales, group_size, bias)
        return pack_linear(groups.weight.dequantize(cls.dtype), groups.bias)

    apply = staticmethod(Avx512Gemm.apply)


class DequantW4A16Float32(DequantW4A16):
    """4-bit codes dequantized once to float32, for float32 models. 4 bytes per weight."""

    dtype = torch.float32


class DequantW8A16Float32(DequantW8A16):
    """int8 codes dequantized once to float32, for float32 models."""

    dtype = torch.float32
