"""The layers of a compressed-tensors checkpoint: each quantized module's tensors checked
against its config group and loaded into baseboard's records (see ``packing`` for the
layouts)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import torch

from ...core.errors import ModelError
from ...core.quant import QuantScheme
from ..layer_tensors import (FLOATS, LayerCheck, Parts, block_scale_shape, ceil_div,
                             describe, per_row_scales)
from ..records import BlockQuantized, ChannelQuantized, GroupQuantized, group_order
from .config import CompressedTensorsConfig, Layout, parse_config
from .packing import unpack_codes, unpack_quantized

PARTS = ("weight", "weight_packed", "weight_shape", "weight_scale", "weight_zero_point",
         "weight_g_idx")
CODE_DTYPES = {"int8": "I8", "fp8": "F8_E4M3", "fp8_block": "F8_E4M3"}
Loaded = Union[GroupQuantized, ChannelQuantized, BlockQuantized, torch.Tensor]


@dataclass(frozen=True)
class CompressedTensorsReader:
    """A parsed compressed-tensors ``quantization_config``; reads its checkpoint's layers.
    A module is quantized when it holds a ``weight_scale`` (or ``weight_packed``)."""

    config: CompressedTensorsConfig
    markers: tuple[str, ...] = ("weight_scale", "weight_packed")
    parts: tuple[str, ...] = PARTS

    def scheme(self, module: str, tensors: Parts) -> Optional[QuantScheme]:
        layout = self.config.layout_for(module)
        check_layer(module, tensors, layout)
        return layout.scheme

    def read(self, module: str, tensors: dict[str, torch.Tensor]) -> Loaded:
        """The layer's tensors -> its record (a dense float32 [N, K] weight for asymmetric
        int8 packed layers, which gemm_w8a16 cannot take)."""
        layout = self.config.layout_for(module)
        stored = tensors.get("weight_shape")
        stored = tuple(int(v) for v in stored.tolist()) if stored is not None else None
        n, k = check_layer(module, describe(tensors), layout, stored)
        if layout.kind == "packed":
            return _packed(module, tensors, layout, n, k)
        codes, scale = tensors["weight"], tensors["weight_scale"]
        if layout.kind == "fp8_block":
            return BlockQuantized("gemm_w8a8_fp8_block", codes, scale.float(),
                                  layout.weights.block_structure, layout.scheme)
        zero = tensors.get("weight_zero_point")  # older versions saved zeros here
        if zero is not None and bool(zero.any()):
            raise ModelError(f"tensor '{module}.weight_zero_point' holds non-zero values, but "
                             f"{layout.describe()} is symmetric. The checkpoint does not match "
                             f"its quantization_config.")
        if layout.scheme.op == "gemm_w8a16":
            group = layout.weights.group_size if layout.weights.strategy == "group" else k
            scales = scale if scale.dim() == 2 and scale.shape[0] == n else \
                per_row_scales(scale, n)[:, None]
            return GroupQuantized("gemm_w8a16", codes, scales, None, group, scheme=layout.scheme)
        return ChannelQuantized(layout.scheme.op, codes, per_row_scales(scale, n), layout.scheme)


def _groups(module: str, g_idx: torch.Tensor, k: int, group: int) -> torch.Tensor:
    """int64 [K]: the group of each input; act-order groups must hold ``group`` inputs
    each, so that sorting the inputs by group makes runs of equal size."""
    groups = g_idx.to(torch.int64)
    counts = torch.bincount(groups, minlength=k // group) if groups.min() >= 0 else None
    if counts is None or counts.numel() != k // group or not bool((counts == group).all()):
        raise ModelError(f"tensor '{module}.weight_g_idx' does not put exactly group_size "
                         f"{group} inputs in each of the {k // group} groups; baseboard reads "
                         f"act-order layers whose groups are equal in size (as GPTQ writes "
                         f"them).")
    return groups


def _check_symmetric_zeros(module: str, zeros: torch.Tensor, layout: Layout, n: int) -> None:
    """Older compressed-tensors saved a symmetric layer's zero points too (int8 [N, S], or
    packed like an asymmetric layer's): they must all be zero."""
    bits = layout.weights.num_bits
    middle = 2 ** (bits - 1)
    codes = zeros.to(torch.int16) + middle if zeros.dtype == torch.int8 \
        else unpack_codes(zeros, bits, dim=0, size=n)
    if not bool((codes == middle).all()):
        raise ModelError(f"tensor '{module}.weight_zero_point' holds non-zero zero points, but "
                         f"{layout.describe()} is symmetric. The checkpoint does not match its "
                         f"quantization_config.")


def _packed(module: str, tensors: dict[str, torch.Tensor], layout: Layout, n: int,
            k: int) -> Loaded:
    bits = layout.weights.num_bits
    if layout.weights.symmetric and "weight_zero_point" in tensors:
        _check_symmetric_zeros(module, tensors["weight_zero_point"], layout, n)
        tensors = {p: t for p, t in tensors.items() if p != "weight_zero_point"}
    codes, scales, zeros = unpack_quantized(tensors, bits)
    group = layout.weights.group_size if layout.weights.strategy == "group" else k
    middle = 2 ** (bits - 1)  # the stored zero point of a symmetric layer
    groups = _groups(module, tensors["weight_g_idx"], k, group) if layout.act_order \
        else torch.arange(k) // group
    if layout.scheme is None:  # asymmetric int8: (u - u_zero) * scale, dense in float32
        return (codes.float() - zeros.float()[:, groups]) * scales.float()[:, groups]
    # stored sorted by group, so that each group is a run of inputs
    perm = group_order(groups) if layout.act_order else None
    if perm is not None:
        codes = codes[:, perm].contiguous()
    if bits == 8:
        qweight = (codes.to(torch.int16) - middle).to(torch.int8)
        return GroupQuantized("gemm_w8a16", qweight, scales, None, group, perm, layout.scheme)
    # (q - zero) * scale = u * scale - u_zero * scale; the offset is exact in float32 for
    # 16-bit scales, within an ulp for float32 ones
    zero = zeros.float() if zeros is not None else torch.full(scales.shape, float(middle))
    offsets = -(zero * scales.float())
    return GroupQuantized("gemm_w4a16", codes, scales, offsets, group, perm, layout.scheme)


def check_layer(module: str, parts: Parts, layout: Layout,
                stored_shape: Optional[tuple[int, ...]] = None) -> tuple[int, int]:
    """(N, K) of the layer; a tensor that contradicts ``layout`` is a ModelError naming it.
    ``stored_shape``: the value of a pack-quantized layer's weight_shape once loaded (the
    header alone gives K only up to the padding of the last word)."""
    check = LayerCheck(module, parts, f"compressed-tensors {layout.describe()}")
    weights = layout.weights
    if layout.kind == "packed":
        check.absent("weight", because="its codes are in weight_packed")
        n, words = check.matrix("weight_packed", "I32")
        check.expect("weight_shape", (2,), "I64", "I32")
        rows, per_row = check.matrix("weight_scale", *FLOATS)
        group = weights.group_size if weights.strategy == "group" else None
        k = per_row * group if group else words * 32 // weights.num_bits
        if stored_shape is not None:
            if len(stored_shape) != 2 or stored_shape[0] != n:
                raise check.fail("weight_shape", f"holds {list(stored_shape)}",
                                 f"[{n}, K] for weight_packed {(n, words)}")
            k = stored_shape[1]
        if rows != n:
            raise check.fail("weight_scale", f"has {rows} rows", f"{n}, one per output row "
                             f"of weight_packed {(n, words)}")
        if group and (k % group or per_row != k // group):
            raise check.fail("weight_scale", f"has shape {(rows, per_row)} for K = {k}",
                             f"K a multiple of group_size {group} and shape {(n, k // group)}")
        if not group and per_row != 1:
            raise check.fail("weight_scale", f"has shape {(rows, per_row)}", f"shape ({n}, 1)")
        if ceil_div(k * weights.num_bits, 32) != words:
            raise check.fail("weight_packed", f"has shape {(n, words)}",
                             f"{ceil_div(k * weights.num_bits, 32)} words per row for "
                             f"K = {k} inputs of {weights.num_bits} bits")
        if layout.act_order:
            check.expect("weight_g_idx", (k,), "I32", "I64")
        else:
            check.absent("weight_g_idx", because=f"its actorder is {weights.actorder!r}")
        if weights.symmetric:
            if "weight_zero_point" in parts:  # older versions saved zeros: read() checks them
                rows_or_words = (n, ceil_div(n * weights.num_bits, 32))
                zp_rows, zp_cols = check.matrix("weight_zero_point", "I8", "I32")
                if zp_rows not in rows_or_words or zp_cols != per_row:
                    raise check.fail("weight_zero_point", f"has shape {(zp_rows, zp_cols)}",
                                     f"shape ({n}, {per_row}) or packed "
                                     f"({rows_or_words[1]}, {per_row})")
        else:
            check.expect("weight_zero_point", (ceil_div(n * weights.num_bits, 32), per_row),
                         "I32")
        return n, k
    check.absent("weight_packed", "weight_shape", "weight_g_idx",
                 because="its codes are stored unpacked in 'weight'")
    n, k = check.matrix("weight", CODE_DTYPES[layout.kind])
    if layout.kind == "fp8_block":
        check.expect("weight_scale", block_scale_shape((n, k), weights.block_structure), *FLOATS)
    elif weights.strategy == "group":
        size = weights.group_size
        if k % size:
            raise check.fail("weight", f"has K = {k} inputs", f"a multiple of group_size {size}")
        check.expect("weight_scale", (n, k // size), *FLOATS)
    else:
        check.per_row_scale("weight_scale", n)
    return n, k


def read_config(quantization_config: dict, source: str) -> CompressedTensorsReader:
    """The ``layers`` function of the compressed-tensors method."""
    return CompressedTensorsReader(parse_config(quantization_config, source))
