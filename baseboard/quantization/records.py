"""Quantized weights as plain records, the form a checkpoint loader hands to a model and
the torch reference GEMMs keep as their prepared state.

A record names the GEMM op that multiplies by it and holds its codes in the layout that
op's ``prepare`` takes (see ``baseboard.core.ops``), so a model prepares any of them with
``record.prepare(plan.impl(record.op), bias)`` and never looks inside. Every record type
derives from ``QuantizedWeight``: a method of a plugin adds its own record type the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Optional, Sequence

import torch

from ..core.quant import QuantScheme


class QuantizedWeight:
    """What a model and a loader ask of every quantized weight record.

    op          the GEMM op whose ``prepare`` takes this record's tensors
    shape       (N, K) of the dense weight
    input_perm  int64 [K] or None: the layer multiplies ``x[:, input_perm]`` by this
                weight (GPTQ act-order; see ``baseboard.models.linear``)
    scheme      the record's ``QuantScheme`` (None where the method does not say)
    """

    op: str
    input_perm: Optional[torch.Tensor] = None
    scheme: Optional[QuantScheme] = None

    @property
    def shape(self) -> tuple[int, int]:
        raise NotImplementedError

    def prepare(self, impl: Any, bias: Optional[torch.Tensor]) -> Any:
        """Call ``impl.prepare`` (an implementation of ``self.op``) with this record's tensors."""
        raise NotImplementedError

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The dense [N, K] weight in the checkpoint's input order (``input_perm`` undone)."""
        raise NotImplementedError

    def float_tensors(self) -> list[torch.Tensor]:
        """The float tensors of the record: those that can hold a NaN."""
        raise NotImplementedError

    def to(self, device: torch.device) -> QuantizedWeight:
        raise NotImplementedError


@dataclass(frozen=True)
class GroupQuantized(QuantizedWeight):
    """A [N, K] weight quantized in groups of ``group_size`` consecutive inputs.

    op          "gemm_w4a16": qweight [N, K] uint8 holding 0..15, offsets [N, K/G]
                "gemm_w8a16": qweight [N, K] int8, offsets None
    scales      [N, K/G]; w[n, k] = qweight[n, k] * scales[n, k/G] (+ offsets[n, k/G])
    input_perm  int64 [K] or None. With act-order the columns are stored sorted by group:
                stored column j is the checkpoint's input ``input_perm[j]``.
    Scales and offsets keep the dtype they were stored in (float16 for GGUF and GPTQ),
    which is exact; an op's ``prepare`` converts them to what its kernel wants.
    """

    op: str
    qweight: torch.Tensor
    scales: torch.Tensor
    offsets: Optional[torch.Tensor]
    group_size: int
    input_perm: Optional[torch.Tensor] = None
    scheme: Optional[QuantScheme] = None

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.qweight.shape)

    def prepare(self, impl: Any, bias: Optional[torch.Tensor]) -> Any:
        if self.op == "gemm_w4a16":
            return impl.prepare(self.qweight, self.scales, self.offsets, self.group_size, bias)
        return impl.prepare(self.qweight, self.scales, self.group_size, bias)

    def dequantize_stored(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The dense [N, K] weight in stored column order (``input_perm`` not undone): each
        value computed in float32 and rounded once to ``dtype``."""
        n, k = self.shape
        # [N, K/G, G], scaled and offset in place: one [N, K] float32 allocation
        dense = self.qweight.reshape(n, k // self.group_size, self.group_size).to(
            torch.float32, copy=True)
        dense *= self.scales.float()[..., None]
        if self.offsets is not None:
            dense += self.offsets.float()[..., None]
        return dense.reshape(n, k).to(dtype)

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        dense = self.dequantize_stored(dtype)
        if self.input_perm is None:
            return dense
        unpermuted = torch.empty_like(dense)
        unpermuted[:, self.input_perm] = dense
        return unpermuted

    def float_tensors(self) -> list[torch.Tensor]:
        return [self.scales] if self.offsets is None else [self.scales, self.offsets]

    def to(self, device: torch.device) -> GroupQuantized:
        offsets = None if self.offsets is None else self.offsets.to(device)
        perm = None if self.input_perm is None else self.input_perm.to(device)
        return replace(self, qweight=self.qweight.to(device), scales=self.scales.to(device),
                       offsets=offsets, input_perm=perm)


@dataclass(frozen=True)
class ChannelQuantized(QuantizedWeight):
    """A [N, K] weight with one scale per output row, multiplied with activations that the
    op quantizes per token (W8A8).

    op       "gemm_w8a8_int8": qweight [N, K] int8
             "gemm_w8a8_fp8": qweight [N, K] float8_e4m3fn
    scales   [N] float32; w[n, k] = qweight[n, k] * scales[n] (a checkpoint's per-tensor
             scale is repeated per row, which is exact)
    """

    op: str
    qweight: torch.Tensor
    scales: torch.Tensor
    scheme: Optional[QuantScheme] = None

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.qweight.shape)

    def prepare(self, impl: Any, bias: Optional[torch.Tensor]) -> Any:
        return impl.prepare(self.qweight, self.scales, bias)

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return (self.qweight.float() * self.scales.float()[:, None]).to(dtype)

    def float_tensors(self) -> list[torch.Tensor]:
        return [self.scales]

    def to(self, device: torch.device) -> ChannelQuantized:
        return replace(self, qweight=self.qweight.to(device), scales=self.scales.to(device))


@dataclass(frozen=True)
class BlockQuantized(QuantizedWeight):
    """A [N, K] float8_e4m3fn weight with one scale per BN x BK block (DeepSeek-V3, Qwen3
    FP8; op "gemm_w8a8_fp8_block").

    qweight     [N, K] float8_e4m3fn
    scales      [ceil(N/BN), ceil(K/BK)] float32; w[n, k] = qweight[n, k] * scales[n/BN, k/BK]
    block_size  (BN, BK)
    """

    op: str
    qweight: torch.Tensor
    scales: torch.Tensor
    block_size: tuple[int, int]
    scheme: Optional[QuantScheme] = None

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.qweight.shape)

    def prepare(self, impl: Any, bias: Optional[torch.Tensor]) -> Any:
        return impl.prepare(self.qweight, self.scales, self.block_size, bias)

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        (bn, bk), (n, k) = self.block_size, self.shape
        scales = self.scales.float().repeat_interleave(bn, 0)[:n].repeat_interleave(bk, 1)
        return (self.qweight.float() * scales[:, :k]).to(dtype)

    def float_tensors(self) -> list[torch.Tensor]:
        return [self.scales]

    def to(self, device: torch.device) -> BlockQuantized:
        return replace(self, qweight=self.qweight.to(device), scales=self.scales.to(device))


def _same_perm(a: Optional[torch.Tensor], b: Optional[torch.Tensor]) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.shape == b.shape and bool(torch.equal(a, b))


def can_concat(records: Sequence[object]) -> bool:
    """Whether ``concat_rows`` can join these weights into one record: same op, group size,
    scale dtype, K, and input permutation. GPTQ act-order layers fed the same input (q, k, v;
    gate, up) get the same permutation from the same Hessian, so they concatenate; parts with
    different permutations cannot share one gather of x."""
    first = records[0]
    if isinstance(first, ChannelQuantized):
        return all(isinstance(r, ChannelQuantized) and r.op == first.op
                   and r.shape[1] == first.shape[1] for r in records)
    if isinstance(first, BlockQuantized):
        # a part that ends inside a block of rows would share that block's scales with the
        # next part; only the last part may end with a partial block
        return all(isinstance(r, BlockQuantized) and r.block_size == first.block_size
                   and r.shape[1] == first.shape[1] for r in records) \
            and all(r.shape[0] % first.block_size[0] == 0 for r in records[:-1])
    return all(isinstance(r, GroupQuantized) and r.op == first.op
               and r.group_size == first.group_size and r.scales.dtype == first.scales.dtype
               and r.shape[1] == first.shape[1] and _same_perm(r.input_perm, first.input_perm)
               for r in records)


def concat_rows(records: Sequence[GroupQuantized]) -> GroupQuantized:
    """Stack records along N (fusing q/k/v or gate/up); see ``can_concat``."""
    first = records[0]
    if isinstance(first, (ChannelQuantized, BlockQuantized)):
        return replace(first, qweight=torch.cat([r.qweight for r in records]),
                       scales=torch.cat([r.scales for r in records]))
    offsets = None if first.offsets is None else torch.cat([r.offsets for r in records])
    return replace(first, qweight=torch.cat([r.qweight for r in records]),
                   scales=torch.cat([r.scales for r in records]), offsets=offsets)


def group_order(groups: torch.Tensor) -> Optional[torch.Tensor]:
    """The permutation that sorts a layer's inputs by group (stable), or None where they are
    in group order already (an act-order checkpoint with static groups): such a layer then
    needs no gather of its inputs on every call."""
    if bool((groups[1:] >= groups[:-1]).all()):
        return None
    return torch.argsort(groups, stable=True)
