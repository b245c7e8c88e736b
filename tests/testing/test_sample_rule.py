"""The sample reference against transformers' logits processors and OpenAI's penalty formula,
on the kit's own cases; and the kit's sample cases against implementations that each leave
one feature out, which the kit must reject."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest
import torch
from transformers import (MinPLogitsWarper, RepetitionPenaltyLogitsProcessor,
                          TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper)

from baseboard.core.sampling import SamplingTensors
from baseboard.kernels.torch import sampling
from baseboard.testing.cases import cases_for
from baseboard.testing.compare import Mismatch
from baseboard.testing.sample_check import (SamplingRow, check_sample, sample_inputs,
                                            sampling_rows, sampling_tensors)

CPU = torch.device("cpu")
CASES = [case for case in cases_for("sample") if case.dtype == torch.float32]


def transformers_token(logits: torch.Tensor, noise: torch.Tensor | None, row: SamplingRow,
                       generated: list[int], prompt: list[int]) -> int:
    """One row's token: transformers' processors in the op's order, OpenAI's frequency and
    presence penalties; logits [V] float32."""
    scores = logits.unsqueeze(0).clone()
    if row.repetition_penalty != 1:
        ids = torch.tensor([prompt + generated])
        scores = RepetitionPenaltyLogitsProcessor(float(row.repetition_penalty))(ids, scores)
    counts = torch.zeros_like(scores)
    for token, count in Counter(generated).items():
        counts[0, token] = count
    scores = scores - counts * row.frequency_penalty - (counts > 0).float() * row.presence_penalty
    if row.temperature == 0:
        return int(scores.argmax())
    scores = TemperatureLogitsWarper(float(row.temperature))(None, scores)
    if row.min_p:
        scores = MinPLogitsWarper(float(row.min_p))(None, scores)
    if row.top_k:
        scores = TopKLogitsWarper(int(row.top_k))(None, scores)
    scores = TopPLogitsWarper(float(row.top_p))(None, scores)
    return int((scores.softmax(dim=-1) / noise).argmax())


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_reference_agrees_with_transformers(case):
    rows = sampling_rows(case.params["mode"])
    vocab = case.params["vocab"]
    for logits, noise, history in sample_inputs(case, CPU):
        generated, prompt = history or ([[]] * len(rows), [[]] * len(rows))
        got = sampling.sample(logits, sampling_tensors(rows, noise, history, vocab, CPU))
        want = [transformers_token(logits[i], None if noise is None else noise[i], row,
                                   generated[i], prompt[i]) for i, row in enumerate(rows)]
        assert got.tolist() == want, case.id


def test_penalties_change_the_kit_tokens():
    """Without this the agreement above could hold with the penalties never mattering."""
    changed = 0
    for case in CASES:
        rows = sampling_rows(case.params["mode"])
        for logits, noise, history in sample_inputs(case, CPU):
            if history is not None:
                params = sampling_tensors(rows, noise, history, case.params["vocab"], CPU)
                changed += int((sampling.sample(logits, params)
                                != sampling.select_tokens(logits, params)).sum())
    assert changed > 50


def test_top_p_one_keeps_every_token():
    # p[0] rounds to 1.0, so the cumulative sum reaches top_p = 1 before the tail
    logits = torch.full((1, 11), -20.0)
    logits[0, 0] = 0.0
    noise = torch.ones(1, 11)
    noise[0, 0], noise[0, 1] = 1e3, 1e-12  # token 1 wins if it is kept
    params = SamplingTensors(torch.ones(1), torch.zeros(1, dtype=torch.long), torch.ones(1),
                             noise, all_greedy=False)
    kept = TopPLogitsWarper(1.0)(None, logits.clone()).isfinite()
    assert kept.all()
    assert sampling.sample(logits, params).tolist() == [1]


def _replacing(fields):
    """The reference, given parameters with ``fields(params)`` replaced."""
    return lambda logits, params: sampling.sample(
        logits, dataclasses.replace(params, **fields(params)))


BROKEN = {  # mode -> an implementation that leaves that mode's feature out
    "mixed+min_p": _replacing(lambda p: {"min_p": None}),
    "plain+min_p": _replacing(lambda p: {"min_p": None}),
    "mixed+presence": _replacing(lambda p: {"presence_penalty": torch.zeros_like(p.top_p)}),
    "mixed+frequency": _replacing(lambda p: {"frequency_penalty": torch.zeros_like(p.top_p)}),
    "mixed+repetition": _replacing(lambda p: {"repetition_penalty": torch.ones_like(p.top_p)}),
    "mixed+penalties+min_p": sampling.select_tokens,
    "plain+penalties+min_p": sampling.select_tokens,
    "greedy+penalties": lambda logits, params: logits.argmax(dim=-1),
}


@pytest.mark.parametrize("mode", sorted(BROKEN))
def test_the_kit_rejects_an_implementation_without_the_feature(mode):
    for case in [c for c in CASES if c.params["mode"] == mode]:
        check_sample(case, sampling.sample, sampling.sample, CPU)
        with pytest.raises(Mismatch, match="tokens differ from the reference"):
            check_sample(case, BROKEN[mode], sampling.sample, CPU)
