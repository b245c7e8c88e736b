"""Sampling: Triton kernels for the greedy and the temperature-only cases; the reference's
torch ops (two sorts) when a row may use top-k or top-p.

Which path runs is decided by the host-side flags of SamplingTensors, never by reading
device values, so sampling does not synchronise the host. Every path picks the reference's
token: argmax with the first index on ties; argmax(softmax(logits / t) / noise) otherwise.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ...core.attention import SamplingTensors
from ..torch.sampling import sample as sample_with_filters

BLOCK = 2048


@triton.jit
def _row_argmax(row_ptr, V, BLOCK: tl.constexpr):
    """(max, first index of the max) of one row of V float32 values."""
    cols = tl.arange(0, BLOCK)
    best = tl.full([BLOCK], float("-inf"), tl.float32)
    index = tl.zeros([BLOCK], tl.int32)
    for start in range(0, V, BLOCK):
        x = tl.load(row_ptr + start + cols, mask=start + cols < V, other=float("-inf"))
        better = x > best  # strict: an earlier column keeps a tie
        best = tl.where(better, x, best)
        index = tl.where(better, start + cols, index)
    top = tl.max(best, 0)
    return top, tl.min(tl.where(best == top, index, V), 0)


@triton.jit
def _argmax_kernel(logits_ptr, stride, out_ptr, V, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    _, index = _row_argmax(logits_ptr + row * stride, V, BLOCK)
    tl.store(out_ptr + row, index.to(tl.int64))


@triton.jit
def _temperature_kernel(logits_ptr, stride, noise_ptr, noise_stride, temperature_ptr, out_ptr,
                        V, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    logits = logits_ptr + row * stride
    top, index = _row_argmax(logits, V, BLOCK)
    temperature = tl.load(temperature_ptr + row)
    if temperature > 0:
        t = tl.maximum(temperature, 1e-6)
        top = top / t
        cols = tl.arange(0, BLOCK)
        best = tl.full([BLOCK], -1.0, tl.float32)
        where = tl.zeros([BLOCK], tl.int32)
        for start in range(0, V, BLOCK):
            ok = start + cols < V
            x = tl.load(logits + start + cols, mask=ok, other=float("-inf"))
            noise = tl.load(noise_ptr + row * noise_stride + start + cols, mask=ok, other=1.0)
            # the softmax's common denominator does not change the argmax
            score = tl.exp(x / t - top) / noise
            better = score > best
            best = tl.where(better, score, best)
            where = tl.where(better, start + cols, where)
        top_score = tl.max(best, 0)
        index = tl.min(tl.where(best == top_score, where, V), 0)
    tl.store(out_ptr + row, index.to(tl.int64))


def sample(logits: torch.Tensor, params: SamplingTensors) -> torch.Tensor:
    """logits [B, V] float32 -> token ids [B] int64 (see the op's doc for the rule)."""
    if not params.all_greedy and not (params.no_top_k and params.no_top_p):
        return sample_with_filters(logits, params)
    logits = logits.float()
    if logits.stride(-1) != 1:
        logits = logits.contiguous()
    num_rows, vocab = logits.shape
    out = torch.empty(num_rows, dtype=torch.int64, device=logits.device)
    if not num_rows:
        return out
    if params.all_greedy:
        _argmax_kernel[(num_rows,)](logits, logits.stride(0), out, vocab, BLOCK=BLOCK,
                                    num_warps=8)
    else:
        noise = params.noise
        _temperature_kernel[(num_rows,)](logits, logits.stride(0), noise, noise.stride(0),
                                         params.temperature, out, vocab, BLOCK=BLOCK,
                                         num_warps=8)
    return out
