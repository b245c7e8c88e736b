"""The sample check: the implementation must draw the reference's token on every row.

A case's mode names its rows: a base ("greedy", "plain": temperatures only, "mixed": every
kind of top-k / top-p row) and the features laid over it ("min_p", "presence", "frequency",
"repetition", "penalties": all three), e.g. "mixed+penalties+min_p". Greedy and sampled rows
are mixed in every base but "greedy". Each row's generated tokens and prompt hold some of
its most likely tokens, so a penalty changes which token wins rather than nothing.
"""

from __future__ import annotations

from typing import Any, Iterator, NamedTuple

import torch

from ..core.sampling import SamplingTensors, token_counts
from .cases import Case, dtype_name, randn
from .compare import Mismatch, describe


class SamplingRow(NamedTuple):
    """One row's parameters; the defaults are 'off'."""

    temperature: float
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0


# (temperature, top_k, top_p) per row: greedy, plain, top-k, top-p, both, k past the
# vocabulary, a greedy row whose top-k must be ignored, a tiny nucleus
BASE_ROWS = ((0.0, 0, 1.0), (1.0, 0, 1.0), (0.7, 5, 1.0), (1.3, 0, 0.8), (0.9, 20, 0.9),
             (1.0, 100000, 1.0), (0.0, 3, 0.5), (2.0, 0, 0.1))
# per row, laid over the base rows: min_p 1 keeps only the top token; negative presence
# and frequency and repetition below 1 favour repeats
FEATURES = {
    "min_p": {"min_p": (0.3, 0.1, 0.0, 0.05, 0.2, 0.5, 0.4, 1.0)},
    "presence": {"presence_penalty": (1.5, 0.0, 0.8, -0.5, 2.0, 0.3, 1.0, 0.5)},
    "frequency": {"frequency_penalty": (0.5, 1.0, 0.0, 0.3, -0.4, 0.7, 2.0, 0.2)},
    "repetition": {"repetition_penalty": (1.5, 1.0, 1.2, 0.8, 2.0, 1.1, 3.0, 1.3)},
}
FEATURES["penalties"] = {**FEATURES["presence"], **FEATURES["frequency"],
                         **FEATURES["repetition"]}
PENALTY_FEATURES = ("presence", "frequency", "repetition", "penalties")
SAMPLING_DRAWS = 3
GENERATED_TOKENS = 24  # per row: a few of the likeliest tokens, repeated, and random ones
PROMPT_TOKENS = 16


def sampling_rows(mode: str) -> list[SamplingRow]:
    """The rows of a case's sampling mode."""
    base, *features = mode.split("+")
    if base == "greedy":
        rows = [(0.0, k, p) for _, k, p in BASE_ROWS]
    elif base == "plain":
        rows = [(t, 0, 1.0) for t, _, _ in BASE_ROWS]
    else:
        rows = list(BASE_ROWS)
    columns = {name: values for feature in features for name, values in FEATURES[feature].items()}
    return [SamplingRow(*row, **{name: values[i] for name, values in columns.items()})
            for i, row in enumerate(rows)]


def has_penalties(mode: str) -> bool:
    return any(feature in PENALTY_FEATURES for feature in mode.split("+")[1:])


def token_history(gen: torch.Generator, logits: torch.Tensor
                  ) -> tuple[list[list[int]], list[list[int]]]:
    """(generated tokens, prompt tokens) per row of logits [B, V]: the generated ones repeat
    some of the row's eight likeliest tokens, the prompt holds others of its top sixteen."""
    vocab = logits.shape[-1]
    likeliest = logits.float().cpu().topk(min(16, vocab), dim=-1).indices
    generated, prompt = [], []
    for top in likeliest.tolist():
        repeats = torch.randint(0, 4, (len(top[:8]),), generator=gen).tolist()
        random_ids = torch.randint(0, vocab, (GENERATED_TOKENS,), generator=gen).tolist()
        generated.append([t for t, n in zip(top[:8], repeats) for _ in range(n)]
                         + random_ids[:GENERATED_TOKENS - sum(repeats)])
        prompt.append(top[4::2] + torch.randint(0, vocab, (PROMPT_TOKENS,), generator=gen).tolist())
    return generated, prompt


def sampling_tensors(rows: list[SamplingRow], noise: torch.Tensor | None,
                     history: tuple[list[list[int]], list[list[int]]] | None, vocab: int,
                     device: torch.device) -> SamplingTensors:
    """The op's parameters for ``rows``, with the host flags as an engine sets them."""
    def column(name: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return torch.tensor([getattr(row, name) for row in rows], dtype=dtype, device=device)

    extra: dict[str, Any] = {}
    if any(row.min_p for row in rows):
        extra["min_p"] = column("min_p")
    if history is not None:
        generated, prompt = history
        extra.update(presence_penalty=column("presence_penalty"),
                     frequency_penalty=column("frequency_penalty"),
                     repetition_penalty=column("repetition_penalty"),
                     output_counts=token_counts(generated, vocab, device),
                     prompt_mask=token_counts(prompt, vocab, device) > 0)
    return SamplingTensors(
        temperature=column("temperature"), top_k=column("top_k", torch.int64),
        top_p=column("top_p"), noise=noise, all_greedy=all(r.temperature == 0 for r in rows),
        no_top_k=not any(r.top_k for r in rows), no_top_p=all(r.top_p == 1 for r in rows),
        **extra)


def sample_inputs(case: Case, device: torch.device
                  ) -> Iterator[tuple[torch.Tensor, torch.Tensor | None, tuple | None]]:
    """Per draw: (logits [B, V] float32, noise [B, V] or None, token history or None)."""
    gen, vocab, mode = case.generator(), case.params["vocab"], case.params["mode"]
    rows = sampling_rows(mode)
    for _ in range(SAMPLING_DRAWS):
        logits = randn(gen, (len(rows), vocab), torch.float32, device, 3.0)
        noise = None if all(r.temperature == 0 for r in rows) else \
            torch.empty((len(rows), vocab)).exponential_(generator=gen).to(device)
        history = token_history(gen, logits) if has_penalties(mode) else None
        yield logits, noise, history


def check_sample(case: Case, impl: Any, reference: Any, device: torch.device) -> None:
    """Raise Mismatch unless ``impl`` draws the reference's token on every row."""
    vocab, mode = case.params["vocab"], case.params["mode"]
    rows = sampling_rows(mode)
    for draw, (logits, noise, history) in enumerate(sample_inputs(case, device)):
        # each side gets its own parameters: an implementation may work on them in place
        got = impl(logits.clone(), sampling_tensors(rows, noise, history, vocab, device))
        expected = reference(logits.clone(),
                             sampling_tensors(rows, noise, history, vocab, device))
        what = f"sample(logits [{len(rows)}, {vocab}], params), {mode} rows, draw {draw}"
        if not isinstance(got, torch.Tensor) or got.shape != expected.shape \
                or got.dtype != expected.dtype:
            raise Mismatch(f"{what} returned {describe(got)}; expected "
                           f"{describe(expected)}")
        differ = (got.cpu() != expected.cpu()).nonzero().flatten().tolist()
        if differ:
            detail = "; ".join(f"row {r} ({rows[r]}): token {int(got[r])}, "
                               f"reference {int(expected[r])}" for r in differ)
            raise Mismatch(f"{what} [{dtype_name(case.dtype)}]: tokens differ from the "
                           f"reference with the same noise: {detail}")
