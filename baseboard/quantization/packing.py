"""Codes of a few bits packed into int32 words, as GPTQ and AWQ checkpoints store them.

Word ``w`` of a packed row holds ``32 // bits`` consecutive codes, the first in the lowest
bits: code ``j`` at bits ``j * bits .. (j + 1) * bits - 1``. AWQ stores each word's codes in
an interleaved ``order`` (code ``j`` of the word is element ``order[j]`` of its run).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

# AutoAWQ's GEMM layout: the word's codes j = 0..7 hold columns 0, 2, 4, 6, 1, 3, 5, 7 of
# its run of eight, so that a kernel's shift-and-mask yields pairs for its half2 math
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)


def pack_int32(codes: torch.Tensor, bits: int, dim: int,
               order: Optional[Sequence[int]] = None) -> torch.Tensor:
    """codes (any integer dtype, values 0 .. 2**bits - 1) -> int32 with ``dim`` shrunk
    ``32 // bits`` times. ``order``: the element of each run that code j of a word holds."""
    per_word = 32 // bits
    runs = codes.to(torch.int64).movedim(dim, -1)
    runs = runs.reshape(*runs.shape[:-1], runs.shape[-1] // per_word, per_word)
    if order is not None:
        runs = runs[..., list(order)]
    shifts = torch.arange(per_word, dtype=torch.int64, device=codes.device) * bits
    words = (runs << shifts).sum(-1)  # 0 .. 2**32 - 1
    # the same 32 bits as a signed int32 (safetensors checkpoints store I32)
    words = torch.where(words >= 2 ** 31, words - 2 ** 32, words).to(torch.int32)
    return words.movedim(-1, dim)


def unpack_int32(words: torch.Tensor, bits: int, dim: int,
                 order: Optional[Sequence[int]] = None) -> torch.Tensor:
    """The inverse of ``pack_int32``: int32 words -> uint8 codes with ``dim`` grown
    ``32 // bits`` times."""
    per_word = 32 // bits
    shifts = torch.arange(per_word, dtype=torch.int64, device=words.device) * bits
    unsigned = words.to(torch.int64).movedim(dim, -1) & 0xFFFFFFFF
    runs = (unsigned[..., None] >> shifts) & (2 ** bits - 1)  # [..., words, per_word]
    if order is not None:  # code j holds element order[j]: put it back at order[j]
        runs = runs[..., [list(order).index(i) for i in range(per_word)]]
    codes = runs.reshape(*runs.shape[:-2], -1).to(torch.uint8)
    return codes.movedim(-1, dim)
