"""GPTQ checkpoints (AutoGPTQ, optimum, transformers, GPTQModel): their config, and the
``qweight`` / ``qzeros`` / ``scales`` / ``g_idx`` tensors of each linear layer.

Layout of a layer with N outputs, K inputs, ``bits`` b, groups of G inputs (G = K for
``group_size: -1``), p = 32 / b codes per int32 word:

    qweight  int32 [K / p, N]      codes packed along K (``packing.pack_int32``)
    qzeros   int32 [K / G, N / p]  zero points packed along N
    scales   float16 [K / G, N]
    g_idx    int32 [K]             the group of each input (act-order: not k // G)

    w[n, k] = (code[k, n] - zero[g_idx[k], n]) * scale[g_idx[k], n]

Zero points: ``checkpoint_format: "gptq"`` (what AutoGPTQ, optimum and transformers write,
and the default) stores ``zero - 1``, modulo 2**b, as AutoGPTQ's kernels read it;
``"gptq_v2"`` (GPTQModel's own) stores ``zero``. Both are read; ``pack`` writes "gptq".

4-bit layers load as ``gemm_w4a16`` records (offset = -zero * scale), symmetric 8-bit
layers as ``gemm_w8a16`` (code - 128, int8). ``gemm_w8a16`` has no zero point, so an
asymmetric 8-bit layer is dequantized at load into a dense weight (its scheme is None and
the layer calls "gemm", as ``baseboard info`` shows). With ``desc_act`` the inputs are
sorted by group at load (``GroupQuantized.input_perm``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ..core.errors import ModelError
from ..core.quant import PER_CHANNEL, QuantScheme
from .packing import pack_int32, unpack_int32
from .records import GroupQuantized, group_order

BITS = (4, 8)
FORMATS = {"gptq": 1, "gptq_v2": 0}  # checkpoint_format -> what the stored zero lacks
PARTS = ("qweight", "qzeros", "scales", "g_idx")
SCALE_DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32}


@dataclass(frozen=True)
class GptqReader:
    """A parsed GPTQ ``quantization_config``; reads the layers of its checkpoint."""

    bits: int
    group_size: int  # -1: one group per row
    sym: bool
    desc_act: bool
    zero_offset: int  # 1 for checkpoint_format "gptq" (stored zero = zero - 1), else 0
    markers: tuple[str, ...] = ("qweight",)
    parts: tuple[str, ...] = PARTS

    def scheme(self, module: str, tensors: dict) -> Optional[QuantScheme]:
        shapes = {part: shape for part, (shape, _) in tensors.items()}
        _n, k = self._check_shapes(module, shapes)
        per_channel = self.group_size == -1 or self.group_size == k
        act_order = self.desc_act and not per_channel
        group = PER_CHANNEL if per_channel else self.group_size
        if self.bits == 4:
            return QuantScheme("gemm_w4a16", "uint4", group, self.sym, act_order)
        if self.sym:
            return QuantScheme("gemm_w8a16", "int8", group, True, act_order)
        return None  # asymmetric 8-bit: dense at load

    def read(self, module: str, tensors: dict[str, torch.Tensor]):
        """The layer's tensors -> a GroupQuantized record, or a dense float32 [N, K]
        weight (asymmetric 8-bit)."""
        for part in ("qweight", "qzeros"):
            if tensors[part].dtype != torch.int32:
                raise ModelError(f"tensor '{module}.{part}' has dtype {tensors[part].dtype}; "
                                 f"GPTQ stores it as int32.")
        if "g_idx" in tensors and tensors["g_idx"].dtype not in (torch.int32, torch.int64):
            raise ModelError(f"tensor '{module}.g_idx' has dtype {tensors['g_idx'].dtype}; "
                             f"GPTQ stores it as int32 (or int64).")
        if tensors["scales"].dtype not in SCALE_DTYPES.values():
            raise ModelError(f"tensor '{module}.scales' has dtype {tensors['scales'].dtype}; "
                             f"GPTQ stores float16 (or bfloat16, float32) scales.")
        n, k = self._check_shapes(module, {p: tuple(t.shape) for p, t in tensors.items()})
        groups = self._groups(module, k, tensors.get("g_idx"))
        codes = unpack_int32(tensors["qweight"], self.bits, dim=0).T  # [N, K]
        zeros = (unpack_int32(tensors["qzeros"], self.bits, dim=1).T.to(torch.int64)
                 + self.zero_offset) & (2 ** self.bits - 1)  # [N, K/G]
        scales = tensors["scales"].T.contiguous()  # [N, K/G]
        scheme = self.scheme(module, {p: (tuple(t.shape), "") for p, t in tensors.items()})
        if scheme is None:  # asymmetric 8-bit: (code - zero) * scale per column, in float32
            return (codes.float() - zeros[:, groups]) * scales.float()[:, groups]
        size = k // scales.shape[1]
        # stored columns sorted by group, so that groups are runs
        perm = group_order(groups) if scheme.act_order else None
        if perm is not None:
            codes = codes[:, perm]
        if self.bits == 8:
            if not bool((zeros == 128).all()):
                raise ModelError(f"tensor '{module}.qzeros' holds zero points other than 128, "
                                 f"but quantization_config says sym: true. Set sym: false "
                                 f"(the layer is then dequantized at load).")
            qweight = (codes.to(torch.int16) - 128).to(torch.int8).contiguous()
            return GroupQuantized("gemm_w8a16", qweight, scales, None, size, perm, scheme)
        # (code - zero) * scale = code * scale + offset; exact in float32 (a 4-bit zero
        # times a float16 scale needs at most 15 significant bits)
        offsets = -(zeros.float() * scales.float())
        return GroupQuantized("gemm_w4a16", codes.contiguous(), scales, offsets, size, perm,
                              scheme)

    def _check_shapes(self, module: str, shapes: dict[str, tuple[int, ...]]) -> tuple[int, int]:
        """(N, K) of the layer; a tensor whose shape contradicts qweight and the config is a
        ModelError naming it."""
        for part in ("qweight", "qzeros", "scales"):
            if part not in shapes:
                raise ModelError(f"GPTQ layer '{module}' has qweight but no '{module}.{part}'.")
        per_word = 32 // self.bits
        qweight = shapes["qweight"]
        if len(qweight) != 2:
            raise ModelError(f"tensor '{module}.qweight' has shape {qweight}; GPTQ stores "
                             f"[K / {per_word}, N] for {self.bits}-bit codes.")
        k, n = qweight[0] * per_word, qweight[1]
        size = k if self.group_size == -1 else self.group_size
        if k % size:
            raise ModelError(f"tensor '{module}.qweight' of shape {qweight} holds K = {k} "
                             f"inputs, which is not a multiple of group_size {size}.")
        want = {"scales": (k // size, n), "qzeros": (k // size, n // per_word), "g_idx": (k,)}
        for part, shape in want.items():
            if part in shapes and tuple(shapes[part]) != shape:
                raise ModelError(
                    f"tensor '{module}.{part}' has shape {tuple(shapes[part])}, but qweight "
                    f"{qweight} with bits {self.bits} and group_size {self.group_size} (K = {k}, "
                    f"N = {n}) needs {shape}. The checkpoint does not match its "
                    f"quantization_config.")
        if n % per_word:
            raise ModelError(f"tensor '{module}.qweight' has N = {n} outputs, which is not a "
                             f"multiple of {per_word}, as GPTQ's packed qzeros need.")
        return n, k

    def _groups(self, module: str, k: int, g_idx: Optional[torch.Tensor]) -> torch.Tensor:
        """int64 [K]: the group of each input, checked against the config."""
        size = k if self.group_size == -1 else self.group_size
        plain = torch.arange(k) // size
        if g_idx is None:
            if self.desc_act and size != k:
                raise ModelError(f"quantization_config has desc_act: true, but layer "
                                 f"'{module}' has no '{module}.g_idx' to say each input's group.")
            return plain
        groups = g_idx.to(torch.int64)
        if not self.desc_act:
            if not torch.equal(groups, plain):
                raise ModelError(f"tensor '{module}.g_idx' is not k // group_size, but "
                                 f"quantization_config has desc_act: false. Set desc_act: true "
                                 f"if the checkpoint was quantized in act-order.")
            return plain
        counts = torch.bincount(groups, minlength=k // size) if groups.min() >= 0 else None
        if counts is None or counts.numel() != k // size or not bool((counts == size).all()):
            raise ModelError(f"tensor '{module}.g_idx' does not put exactly group_size "
                             f"{size} inputs in each of the {k // size} groups; baseboard "
                             f"reads act-order checkpoints whose groups are equal in size "
                             f"(as GPTQ writes them).")
        return groups


def read_config(config: dict, source: str) -> GptqReader:
    """Parse and validate a GPTQ ``quantization_config``; a ModelError says what is
    supported."""
    bits = config.get("bits")
    if bits not in BITS:
        raise ModelError(f"{source}: bits {bits!r} is not supported by the gptq method; "
                         f"supported: {', '.join(map(str, BITS))}.")
    group_size = config.get("group_size", 128)
    if not isinstance(group_size, int) or not (group_size == -1 or group_size > 0):
        raise ModelError(f"{source}: group_size {group_size!r} is not supported; use -1 (one "
                         f"group per output row) or a positive group size such as 32, 64, "
                         f"128.")
    checkpoint_format = config.get("checkpoint_format", "gptq")
    if checkpoint_format not in FORMATS:
        raise ModelError(f"{source}: checkpoint_format {checkpoint_format!r} is not supported "
                         f"by the gptq method; supported: {', '.join(FORMATS)} (re-save a "
                         f"Marlin or BitBLAS repacked checkpoint in the gptq format).")
    if config.get("dynamic"):
        raise ModelError(f"{source}: 'dynamic' (GPTQModel's per-module bits and group sizes) "
                         f"is not supported; the gptq method reads one bits and group_size "
                         f"for every layer.")
    if config.get("is_marlin_format"):
        raise ModelError(f"{source}: is_marlin_format is set; the gptq method reads the gptq "
                         f"layout only (qweight packed along K).")
    for flag in ("sym", "desc_act"):
        if not isinstance(config.get(flag, flag == "sym"), bool):
            raise ModelError(f"{source}: {flag} is {config[flag]!r}; it must be true or false.")
    return GptqReader(bits, group_size, config.get("sym", True), config.get("desc_act", False),
                      FORMATS[checkpoint_format])


def pack(codes: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, g_idx: torch.Tensor,
         bits: int) -> dict[str, torch.Tensor]:
    """One layer in the GPTQ layout, checkpoint_format "gptq": codes [N, K] (0 .. 2**b - 1),
    scales [N, K/G], zeros [N, K/G] int, g_idx [K] -> qweight, qzeros, scales (float16) and
    g_idx (int32), by part name."""
    stored_zeros = (zeros.to(torch.int64) - 1) & (2 ** bits - 1)  # "zero - 1", as AutoGPTQ
    return {"qweight": pack_int32(codes.T, bits, dim=0).contiguous(),
            "qzeros": pack_int32(stored_zeros.T, bits, dim=1).contiguous(),
            "scales": scales.T.to(torch.float16).contiguous(),
            "g_idx": g_idx.to(torch.int32).contiguous()}


def unpack(tensors: dict[str, torch.Tensor], bits: int,
           zero_offset: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The inverse of ``pack``: (codes [N, K] uint8, scales [N, K/G], zeros [N, K/G] int64)."""
    codes = unpack_int32(tensors["qweight"], bits, dim=0).T
    zeros = (unpack_int32(tensors["qzeros"], bits, dim=1).T.to(torch.int64) + zero_offset) \
        & (2 ** bits - 1)
    return codes.contiguous(), tensors["scales"].T.contiguous(), zeros.contiguous()
