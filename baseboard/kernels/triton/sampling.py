"""Sampling: Triton kernels for the penalties, the greedy case and the temperature-only case
(min_p included); the reference's torch ops (two sorts) when a row may use top-k or top-p.

A row is cut into chunks, each searched by its own program, and a second kernel picks each
row's winner among its chunks: one program per row would leave most of the GPU idle for a
small batch (docs/benchmarks.md, "Measurements behind the code"). min_p needs the row's
largest logit before any chunk can score, so a min_p step scores in a kernel of its own
after the chunks' maxima are known.

Which path runs is decided by the host-side flags of SamplingTensors, never by reading
device values, so sampling does not synchronise the host. Every path picks the reference's
token: argmax with the first index on ties; argmax(softmax(logits / t) / noise) otherwise.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ...core.sampling import SamplingTensors
from ..torch.sampling import select_tokens
from .common import pdl_options, pdl_prologue

BLOCK = 1024  # values a program reads per step
MAX_CHUNKS = 32  # programs per row at most
PENALTY_BLOCK = 2048  # values per program of the penalty kernel


@triton.jit
def _penalty_kernel(logits_ptr, stride, out_ptr, counts_ptr, counts_stride, prompt_ptr,
                    prompt_stride, presence_ptr, frequency_ptr, repetition_ptr, V,
                    BLOCK: tl.constexpr, PDL: tl.constexpr):
    """out[row, cols] = the reference's apply_penalties of logits[row, cols]; out is dense."""
    pdl_prologue(PDL)
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    ok = cols < V
    x = tl.load(logits_ptr + row * stride + cols, mask=ok, other=0.0)
    count = tl.load(counts_ptr + row * counts_stride + cols, mask=ok, other=0)
    in_prompt = tl.load(prompt_ptr + row * prompt_stride + cols, mask=ok, other=0) != 0
    repetition = tl.load(repetition_ptr + row)
    repeated = tl.where(x < 0, x * repetition, x / repetition)
    x = tl.where(in_prompt | (count > 0), repeated, x)
    x = x - tl.load(frequency_ptr + row) * count.to(tl.float32)
    x = x - tl.load(presence_ptr + row) * (count > 0).to(tl.float32)
    tl.store(out_ptr + row * V + cols, x, mask=ok)


@triton.jit
def _argmax_range(row_ptr, start, end, BLOCK: tl.constexpr):
    """(max, first index of the max) of row[start:end], float32."""
    cols = tl.arange(0, BLOCK)
    best = tl.full([BLOCK], float("-inf"), tl.float32)
    index = tl.zeros([BLOCK], tl.int32)
    for offset in range(start, end, BLOCK):
        x = tl.load(row_ptr + offset + cols, mask=offset + cols < end, other=float("-inf"))
        better = x > best  # strict: an earlier column keeps a tie
        best = tl.where(better, x, best)
        index = tl.where(better, offset + cols, index)
    top = tl.max(best, 0)
    return top, tl.min(tl.where(best == top, index, end), 0)


@triton.jit
def _score_range(row_ptr, noise_row_ptr, start, end, t, top, threshold,
                 MIN_P: tl.constexpr, BLOCK: tl.constexpr):
    """(largest exp(x / t - top / t) / noise, its first index) over row[start:end]; with
    MIN_P only tokens whose x / t is at least ``threshold`` count (the others score -1)."""
    cols = tl.arange(0, BLOCK)
    best = tl.full([BLOCK], -1.0, tl.float32)
    where = tl.zeros([BLOCK], tl.int32)
    for offset in range(start, end, BLOCK):
        ok = offset + cols < end
        x = tl.load(row_ptr + offset + cols, mask=ok, other=float("-inf"))
        noise = tl.load(noise_row_ptr + offset + cols, mask=ok, other=1.0)
        # the softmax's common denominator does not change the argmax
        score = tl.exp(x / t - top / t) / noise
        if MIN_P:
            score = tl.where(x / t >= threshold, score, -1.0)
        better = score > best
        best = tl.where(better, score, best)
        where = tl.where(better, offset + cols, where)
    top_score = tl.max(best, 0)
    return top_score, tl.min(tl.where(best == top_score, where, end), 0)


@triton.jit
def _chunk_kernel(logits_ptr, stride, noise_ptr, noise_stride, temperature_ptr,
                  top_ptr, top_index_ptr, score_ptr, score_index_ptr, V, CHUNK,
                  SAMPLED: tl.constexpr, BLOCK: tl.constexpr, PDL: tl.constexpr):
    """Per (row, chunk): the largest logit and its index; for a sampled row also the
    largest exp(x / t - top / t) / noise (top: the chunk's largest logit) and its index."""
    pdl_prologue(PDL)
    row = tl.program_id(0).to(tl.int64)
    chunk = tl.program_id(1)
    part = row * tl.num_programs(1) + chunk
    start = chunk * CHUNK
    end = tl.minimum(V, start + CHUNK)
    logits = logits_ptr + row * stride
    top, index = _argmax_range(logits, start, end, BLOCK)
    tl.store(top_ptr + part, top)
    tl.store(top_index_ptr + part, index)
    if SAMPLED:
        temperature = tl.load(temperature_ptr + row)
        if temperature > 0:
            t = tl.maximum(temperature, 1e-6)
            score, where = _score_range(logits, noise_ptr + row * noise_stride, start, end, t,
                                        top, 0.0, False, BLOCK)
            tl.store(score_ptr + part, score)
            tl.store(score_index_ptr + part, where)


@triton.jit
def _min_p_score_kernel(logits_ptr, stride, noise_ptr, noise_stride, temperature_ptr,
                        log_min_p_ptr, top_ptr, score_ptr, score_index_ptr, V, CHUNK,
                        num_chunks, CHUNKS_PAD: tl.constexpr, BLOCK: tl.constexpr,
                        PDL: tl.constexpr):
    """Per (row, chunk) of a sampled row: the chunk's score as in _chunk_kernel, counting
    only the tokens min_p keeps: x / t >= row max / t + log(min_p)."""
    pdl_prologue(PDL)
    row = tl.program_id(0).to(tl.int64)
    chunk = tl.program_id(1)
    temperature = tl.load(temperature_ptr + row)
    if temperature > 0:
        t = tl.maximum(temperature, 1e-6)
        chunks = tl.arange(0, CHUNKS_PAD)
        tops = tl.load(top_ptr + row * num_chunks + chunks, mask=chunks < num_chunks,
                       other=float("-inf"))
        threshold = tl.max(tops, 0) / t + tl.load(log_min_p_ptr + row)
        part = row * num_chunks + chunk
        start = chunk * CHUNK
        score, where = _score_range(logits_ptr + row * stride, noise_ptr + row * noise_stride,
                                    start, tl.minimum(V, start + CHUNK), t,
                                    tl.load(top_ptr + part), threshold, True, BLOCK)
        tl.store(score_ptr + part, score)
        tl.store(score_index_ptr + part, where)


@triton.jit
def _pick_kernel(top_ptr, top_index_ptr, score_ptr, score_index_ptr, temperature_ptr, out_ptr,
                 num_chunks, SAMPLED: tl.constexpr, CHUNKS_PAD: tl.constexpr, PDL: tl.constexpr):
    """Each row's token from its chunks' results (the first chunk wins a tie)."""
    pdl_prologue(PDL)
    row = tl.program_id(0).to(tl.int64)
    chunks = tl.arange(0, CHUNKS_PAD)
    ok = chunks < num_chunks
    parts = row * num_chunks + chunks
    tops = tl.load(top_ptr + parts, mask=ok, other=float("-inf"))
    top = tl.max(tops, 0)
    winner = tl.min(tl.where(tops == top, chunks, CHUNKS_PAD), 0)
    index = tl.load(top_index_ptr + row * num_chunks + winner)
    if SAMPLED:
        temperature = tl.load(temperature_ptr + row)
        if temperature > 0:
            t = tl.maximum(temperature, 1e-6)
            # each chunk's score was relative to its own top: bring it to the row's
            scores = tl.load(score_ptr + parts, mask=ok, other=-1.0) * tl.exp(tops / t - top / t)
            best = tl.max(scores, 0)
            winner = tl.min(tl.where(scores == best, chunks, CHUNKS_PAD), 0)
            index = tl.load(score_index_ptr + row * num_chunks + winner)
    tl.store(out_ptr + row, index.to(tl.int64))


def apply_penalties(logits: torch.Tensor, params: SamplingTensors) -> torch.Tensor:
    """logits [B, V] float32 (last dimension dense) -> a new dense [B, V] float32 tensor
    with the reference's penalties; ``logits`` itself when the step has none."""
    if params.no_penalties:
        return logits
    num_rows, vocab = logits.shape
    out = torch.empty(num_rows, vocab, dtype=torch.float32, device=logits.device)
    if not num_rows:
        return out
    counts = params.output_counts
    prompt = params.prompt_mask.view(torch.uint8)  # same bytes; Triton loads bytes
    if counts.stride(-1) != 1:
        counts = counts.contiguous()
    if prompt.stride(-1) != 1:
        prompt = prompt.contiguous()
    # no fused multiply-add: logit - penalty * count rounds twice, as in the reference
    _penalty_kernel[(num_rows, triton.cdiv(vocab, PENALTY_BLOCK))](
        logits, logits.stride(0), out, counts, counts.stride(0), prompt, prompt.stride(0),
        params.presence_penalty.float(), params.frequency_penalty.float(),
        params.repetition_penalty.float(), vocab, BLOCK=PENALTY_BLOCK, num_warps=4,
        enable_fp_fusion=False, **pdl_options(logits.device))
    return out


def sample(logits: torch.Tensor, params: SamplingTensors) -> torch.Tensor:
    """logits [B, V] float32 -> token ids [B] int64 (see the op's doc for the rule)."""
    logits = logits.float()
    if logits.stride(-1) != 1:
        logits = logits.contiguous()
    logits = apply_penalties(logits, params)
    if not params.all_greedy and not (params.no_top_k and params.no_top_p):
        return select_tokens(logits, params)
    num_rows, vocab = logits.shape
    out = torch.empty(num_rows, dtype=torch.int64, device=logits.device)
    if not num_rows:
        return out
    chunk = BLOCK * triton.cdiv(triton.cdiv(vocab, BLOCK), MAX_CHUNKS)
    num_chunks = triton.cdiv(vocab, chunk)
    chunks_pad = triton.next_power_of_2(num_chunks)
    sampled = not params.all_greedy
    min_p = sampled and not params.no_min_p
    parts = num_rows * num_chunks
    values = torch.empty(2, parts, dtype=torch.float32, device=logits.device)
    indices = torch.empty(2, parts, dtype=torch.int32, device=logits.device)
    noise = params.noise if sampled else logits
    _chunk_kernel[(num_rows, num_chunks)](
        logits, logits.stride(0), noise, noise.stride(0), params.temperature, values[0],
        indices[0], values[1], indices[1], vocab, chunk, SAMPLED=sampled and not min_p,
        BLOCK=BLOCK, num_warps=4, **pdl_options(logits.device))
    if min_p:
        _min_p_score_kernel[(num_rows, num_chunks)](
            logits, logits.stride(0), noise, noise.stride(0), params.temperature,
            params.min_p.float().log(), values[0], values[1], indices[1], vocab, chunk,
            num_chunks, CHUNKS_PAD=chunks_pad, BLOCK=BLOCK, num_warps=4,
            **pdl_options(logits.device))
    _pick_kernel[(num_rows,)](values[0], indices[0], values[1], indices[1], params.temperature,
                              out, num_chunks, SAMPLED=sampled, CHUNKS_PAD=chunks_pad,
                              num_warps=1, **pdl_options(logits.device))
    return out
