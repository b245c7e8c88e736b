"""AWQ checkpoints (AutoAWQ's GEMM layout, as transformers reads them): their config, and
the ``qweight`` / ``qzeros`` / ``scales`` tensors of each linear layer.

Layout of a layer with N outputs, K inputs and groups of G inputs, 4-bit codes:

    qweight  int32 [K, N / 8]      codes packed along N in AWQ's order (packing.AWQ_ORDER)
    qzeros   int32 [K / G, N / 8]  zero points, packed the same way (stored as is)
    scales   float16 [K / G, N]

    w[n, k] = (code[k, n] - zero[k / G, n]) * scale[k / G, n]

Each layer loads as a ``gemm_w4a16`` record (offset = -zero * scale).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.errors import ModelError
from ..core.quant import PER_CHANNEL, QuantScheme
from .packing import AWQ_ORDER, pack_int32, unpack_int32
from .records import GroupQuantized

BITS = 4
PER_WORD = 32 // BITS
VERSIONS = ("gemm",)
PARTS = ("qweight", "qzeros", "scales")


@dataclass(frozen=True)
class AwqReader:
    """A parsed AWQ ``quantization_config``; reads the layers of its checkpoint."""

    group_size: int
    markers: tuple[str, ...] = ("qweight",)
    parts: tuple[str, ...] = PARTS

    def scheme(self, module: str, tensors: dict) -> QuantScheme:
        _n, k = self._check_shapes(module, {p: shape for p, (shape, _) in tensors.items()})
        group = PER_CHANNEL if self.group_size == k else self.group_size
        return QuantScheme("gemm_w4a16", "uint4", group, symmetric=False)

    def read(self, module: str, tensors: dict[str, torch.Tensor]) -> GroupQuantized:
        for part in ("qweight", "qzeros"):
            if tensors[part].dtype != torch.int32:
                raise ModelError(f"tensor '{module}.{part}' has dtype {tensors[part].dtype}; "
                                 f"AWQ stores it as int32.")
        if not tensors["scales"].is_floating_point():
            raise ModelError(f"tensor '{module}.scales' has dtype {tensors['scales'].dtype}; "
                             f"AWQ stores float16 scales.")
        self._check_shapes(module, {p: tuple(t.shape) for p, t in tensors.items()})
        codes, scales, zeros = unpack(tensors)
        # (code - zero) * scale = code * scale + offset, exact in float32
        offsets = -(zeros.float() * scales.float())
        scheme = self.scheme(module, {p: (tuple(t.shape), "") for p, t in tensors.items()})
        return GroupQuantized("gemm_w4a16", codes, scales, offsets, self.group_size,
                              scheme=scheme)

    def _check_shapes(self, module: str, shapes: dict[str, tuple[int, ...]]) -> tuple[int, int]:
        """(N, K) of the layer; a tensor whose shape contradicts qweight and the config is a
        ModelError naming it."""
        for part in PARTS:
            if part not in shapes:
                raise ModelError(f"AWQ layer '{module}' has qweight but no '{module}.{part}'.")
        qweight = shapes["qweight"]
        if len(qweight) != 2:
            raise ModelError(f"tensor '{module}.qweight' has shape {qweight}; AWQ stores "
                             f"[K, N / 8].")
        k, n = qweight[0], qweight[1] * PER_WORD
        if k % self.group_size:
            raise ModelError(f"tensor '{module}.qweight' of shape {qweight} holds K = {k} "
                             f"inputs, which is not a multiple of group_size {self.group_size}.")
        want = {"scales": (k // self.group_size, n),
                "qzeros": (k // self.group_size, n // PER_WORD)}
        for part, shape in want.items():
            if tuple(shapes[part]) != shape:
                raise ModelError(
                    f"tensor '{module}.{part}' has shape {tuple(shapes[part])}, but qweight "
                    f"{qweight} with group_size {self.group_size} (K = {k}, N = {n}) needs "
                    f"{shape}. The checkpoint does not match its quantization_config.")
        return n, k


def read_config(config: dict, source: str) -> AwqReader:
    """Parse and validate an AWQ ``quantization_config``; a ModelError says what is
    supported."""
    bits = config.get("bits", config.get("w_bit"))
    if bits != BITS:
        raise ModelError(f"{source}: bits {bits!r} is not supported by the awq method; "
                         f"supported: 4.")
    version = str(config.get("version", "gemm")).lower()
    if version not in VERSIONS:
        raise ModelError(f"{source}: version {config.get('version')!r} is not supported by the "
                         f"awq method; supported: {', '.join(VERSIONS)} (AutoAWQ's GEMM "
                         f"packing). Quantize or save the model with version 'gemm'.")
    if config.get("zero_point", True) is not True:
        raise ModelError(f"{source}: zero_point {config.get('zero_point')!r} is not supported; "
                         f"the awq method reads zero_point: true (AutoAWQ's GEMM layout).")
    group_size = config.get("group_size", config.get("q_group_size", 128))
    if not isinstance(group_size, int) or group_size <= 0:
        raise ModelError(f"{source}: group_size {group_size!r} is not supported; use a "
                         f"positive group size such as 32, 64, 128.")
    return AwqReader(group_size)


def pack(codes: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor) -> dict[str, torch.Tensor]:
    """One layer in AWQ's GEMM layout: codes [N, K] (0..15), scales [N, K/G], zeros
    [N, K/G] -> qweight, qzeros, scales (float16), by part name."""
    return {"qweight": pack_int32(codes.T, BITS, dim=1, order=AWQ_ORDER).contiguous(),
            "qzeros": pack_int32(zeros.T, BITS, dim=1, order=AWQ_ORDER).contiguous(),
            "scales": scales.T.to(torch.float16).contiguous()}


def unpack(tensors: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The inverse of ``pack``: (codes [N, K] uint8, scales [N, K/G], zeros [N, K/G] int64)."""
    codes = unpack_int32(tensors["qweight"], BITS, dim=1, order=AWQ_ORDER).T
    zeros = unpack_int32(tensors["qzeros"], BITS, dim=1, order=AWQ_ORDER).T.to(torch.int64)
    return codes.contiguous(), tensors["scales"].T.contiguous(), zeros.contiguous()
