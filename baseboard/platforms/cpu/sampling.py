"""``sample`` for the cpu platform: a greedy step (the common case, and every benchmark)
takes a native argmax, far faster than torch's on a large vocabulary (docs/benchmarks.md),
after the reference's penalties when the step has any; any other step is the reference's."""

from __future__ import annotations

import torch

from ...core.sampling import SamplingTensors
from ...kernels.torch.sampling import apply_penalties, select_tokens
from . import native


def argmax(logits: torch.Tensor) -> torch.Tensor:
    """logits [B, V] float32 -> [B] int64, as torch.argmax(dim=-1) (first index wins)."""
    if logits.stride(-1) != 1:
        logits = logits.contiguous()
    rows, vocab = logits.shape
    out = torch.empty(rows, dtype=torch.int64)
    native.library().bb_argmax(logits.data_ptr(), logits.stride(0), rows, vocab, out.data_ptr(),
                               torch.get_num_threads())
    return out


def sample(logits: torch.Tensor, params: SamplingTensors) -> torch.Tensor:
    """logits [B, V] float32 -> token ids [B] int64 (the op's rule)."""
    logits = apply_penalties(logits.float(), params)
    if params.all_greedy and logits.dim() == 2:
        return argmax(logits)
    return select_tokens(logits, params)
