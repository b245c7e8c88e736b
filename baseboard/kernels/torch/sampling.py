"""Sampling reference."""

from __future__ import annotations

import torch

from ...core.sampling import SamplingTensors


def sample(logits: torch.Tensor, params: SamplingTensors) -> torch.Tensor:
    """logits [B, V] float32 -> token ids [B] int64 (see the op's doc for the rule)."""
    greedy = logits.argmax(dim=-1)
    if params.all_greedy:
        return greedy
    logits = logits.float()
    temperature = params.temperature.float().clamp(min=1e-6).unsqueeze(1)
    scaled = logits / temperature
    vocab = logits.shape[-1]
    top_k = params.top_k.clamp(min=0)
    top_k = torch.where((top_k == 0) | (top_k > vocab), torch.full_like(top_k, vocab), top_k)
    sorted_logits, _ = scaled.sort(dim=-1, descending=True)
    kth = sorted_logits.gather(1, (top_k - 1).unsqueeze(1))
    scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    probs = scaled.softmax(dim=-1)
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    before = sorted_probs.cumsum(dim=-1) - sorted_probs  # mass strictly above each token
    drop_sorted = before >= params.top_p.float().unsqueeze(1)
    drop = torch.zeros_like(drop_sorted).scatter(1, order, drop_sorted)
    probs = probs.masked_fill(drop, 0.0)
    sampled = (probs / params.noise).argmax(dim=-1)
    return torch.where(params.temperature > 0, sampled, greedy)
