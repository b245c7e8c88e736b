"""Sampling reference: penalties on every row, then greedy rows take the argmax and the
others are tempered, filtered by min_p, top-k and top-p, and drawn with the given noise.

The order is vLLM's sampler's; each step is the transformers logits processor of the same
name (RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper, MinPLogitsWarper,
TopKLogitsWarper, TopPLogitsWarper), and frequency and presence penalties are OpenAI's:
logit[j] -= frequency * count[j] + presence * (count[j] > 0).
"""

from __future__ import annotations

import torch

from ...core.sampling import SamplingTensors


def apply_penalties(logits: torch.Tensor, params: SamplingTensors) -> torch.Tensor:
    """logits [B, V] float32 -> penalised logits [B, V] float32 (a new tensor, or ``logits``
    itself when the step has no penalties).

    Repetition penalty r on every token id in the row's prompt or output: a negative logit
    is multiplied by r, any other divided by it. Then, over the output tokens only,
    logit -= frequency_penalty * count, and logit -= presence_penalty where count > 0.
    """
    if params.no_penalties:
        return logits
    counts = params.output_counts
    generated = counts > 0
    seen = params.prompt_mask | generated
    repetition = params.repetition_penalty.float().unsqueeze(1)
    repeated = torch.where(logits < 0, logits * repetition, logits / repetition)
    logits = torch.where(seen, repeated, logits)
    logits = logits - params.frequency_penalty.float().unsqueeze(1) * counts
    return logits - params.presence_penalty.float().unsqueeze(1) * generated


def select_tokens(logits: torch.Tensor, params: SamplingTensors) -> torch.Tensor:
    """Penalised logits [B, V] float32 -> token ids [B] int64, without the penalties.

    Greedy rows (temperature 0) take the argmax, the first index on ties. The others:
    logits / temperature; min_p drops tokens whose probability is below min_p times the
    row's top probability (compared as scaled logits: below top + log(min_p)); top-k keeps
    the tokens at least as large as the k-th largest (ties kept; 0 or more than V keeps
    all); top-p keeps the tokens with less than top_p of the probability strictly above
    them (the smallest nucleus; 1 keeps all); then argmax(probs / noise).
    """
    greedy = logits.argmax(dim=-1)
    if params.all_greedy:
        return greedy
    temperature = params.temperature.float().clamp(min=1e-6).unsqueeze(1)
    scaled = logits / temperature
    if params.min_p is not None:
        threshold = scaled.amax(dim=-1, keepdim=True) + params.min_p.float().log().unsqueeze(1)
        scaled = scaled.masked_fill(scaled < threshold, float("-inf"))
    vocab = logits.shape[-1]
    top_k = params.top_k.clamp(min=0)
    top_k = torch.where((top_k == 0) | (top_k > vocab), torch.full_like(top_k, vocab), top_k)
    sorted_logits, _ = scaled.sort(dim=-1, descending=True)
    kth = sorted_logits.gather(1, (top_k - 1).unsqueeze(1))
    scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    probs = scaled.softmax(dim=-1)
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    before = sorted_probs.cumsum(dim=-1) - sorted_probs  # mass strictly above each token
    top_p = params.top_p.float().unsqueeze(1)
    # a rounded cumulative sum reaches 1 before the tail: top_p = 1 must not cut it
    drop_sorted = (before >= top_p) & (top_p < 1)
    drop = torch.zeros_like(drop_sorted).scatter(1, order, drop_sorted)
    probs = probs.masked_fill(drop, 0.0)
    sampled = (probs / params.noise).argmax(dim=-1)
    return torch.where(params.temperature > 0, sampled, greedy)


def sample(logits: torch.Tensor, params: SamplingTensors) -> torch.Tensor:
    """logits [B, V] float32 -> token ids [B] int64 (see the op's doc for the rule):
    ``select_tokens(apply_penalties(logits, params), params)``."""
    return select_tokens(apply_penalties(logits.float(), params), params)
