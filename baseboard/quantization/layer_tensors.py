"""Checks of a quantized layer's tensors against what its config says, from the safetensors
header (before loading) or from the loaded tensors (the same check, the same message)."""

from __future__ import annotations

import torch

from ..core.errors import ModelError

# part name -> (shape, safetensors dtype such as "I32", "BF16", "F8_E4M3")
Parts = dict[str, tuple[tuple[int, ...], str]]
FLOATS = ("F32", "BF16", "F16")
SAFETENSORS_DTYPES = {torch.int32: "I32", torch.int64: "I64", torch.int8: "I8",
                      torch.uint8: "U8", torch.float8_e4m3fn: "F8_E4M3",
                      torch.float8_e5m2: "F8_E5M2", torch.bfloat16: "BF16",
                      torch.float16: "F16", torch.float32: "F32"}


def describe(tensors: dict[str, torch.Tensor]) -> Parts:
    """Loaded tensors in the header's terms."""
    return {part: (tuple(t.shape), SAFETENSORS_DTYPES.get(t.dtype, str(t.dtype)))
            for part, t in tensors.items()}


class LayerCheck:
    """The tensors of one layer, checked part by part; ``what`` names the layout in
    messages ("compressed-tensors config group 'group_0' (pack-quantized ...)")."""

    def __init__(self, module: str, parts: Parts, what: str):
        self.module, self.parts, self.what = module, parts, what

    def fail(self, part: str, problem: str, want: str) -> ModelError:
        return ModelError(f"tensor '{self.module}.{part}' {problem}, but {self.what} needs "
                          f"{want}. The checkpoint does not match its quantization_config.")

    def shape(self, part: str) -> tuple[int, ...]:
        if part not in self.parts:
            raise ModelError(f"layer '{self.module}' lacks tensor '{self.module}.{part}', which "
                             f"{self.what} stores. The checkpoint does not match its "
                             f"quantization_config.")
        return self.parts[part][0]

    def dtype(self, part: str, *allowed: str) -> str:
        self.shape(part)
        dtype = self.parts[part][1]
        if dtype not in allowed:
            raise self.fail(part, f"has dtype {dtype}", f"{' or '.join(allowed)}")
        return dtype

    def expect(self, part: str, want: tuple[int, ...], *dtypes: str) -> None:
        """``part`` exists, has shape ``want`` and one of ``dtypes``."""
        self.dtype(part, *dtypes)
        if tuple(self.shape(part)) != tuple(want):
            raise self.fail(part, f"has shape {tuple(self.shape(part))}", f"shape {tuple(want)}")

    def matrix(self, part: str, *dtypes: str) -> tuple[int, int]:
        """``part`` is 2-D with one of ``dtypes``: its (rows, columns)."""
        self.dtype(part, *dtypes)
        shape = self.shape(part)
        if len(shape) != 2:
            raise self.fail(part, f"has shape {shape}", "a 2-D tensor")
        return shape

    def absent(self, *parts: str, because: str) -> None:
        for part in parts:
            if part in self.parts:
                raise ModelError(f"layer '{self.module}' has tensor '{self.module}.{part}', "
                                 f"which {self.what} does not store ({because}). The checkpoint "
                                 f"does not match its quantization_config.")

    def per_row_scale(self, part: str, rows: int) -> None:
        """A scale per tensor ([], [1]) or per row ([N], [N, 1])."""
        self.dtype(part, *FLOATS)
        shape = tuple(self.shape(part))
        if shape not in ((), (1,), (1, 1), (rows,), (rows, 1)):
            raise self.fail(part, f"has shape {shape}",
                            f"one scale per tensor ([] or [1]) or per output row ([{rows}, 1])")


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def block_scale_shape(shape: tuple[int, int], block: tuple[int, int]) -> tuple[int, int]:
    """The [ceil(N/BN), ceil(K/BK)] scales of an [N, K] weight in BN x BK blocks."""
    return ceil_div(shape[0], block[0]), ceil_div(shape[1], block[1])


def per_row_scales(scale: torch.Tensor, rows: int) -> torch.Tensor:
    """A channel ([N, 1] or [N]) or tensor ([1] or []) weight scale -> [N] float32 (a
    per-tensor scale repeated, which is exact)."""
    return scale.float().reshape(-1).expand(rows).contiguous() if scale.numel() == 1 \
        else scale.float().reshape(rows).contiguous()
