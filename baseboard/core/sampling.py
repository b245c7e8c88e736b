"""Data passed from the engine to the ``sample`` op: one step's per-row parameters."""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass

import torch

from .errors import ConfigError

PENALTY_FIELDS = ("presence_penalty", "frequency_penalty", "repetition_penalty",
                  "output_counts", "prompt_mask")


@dataclass
class SamplingTensors:
    """Per-row sampling parameters for the ``sample`` op (B rows, V token ids).

    temperature         [B] float32, 0 = greedy row
    top_k               [B] int64, 0 = off
    top_p               [B] float32, 1 = off
    noise               [B, V] float32 Exp(1) draws, or None when every row is greedy
    min_p               [B] float32, 0 = off
    presence_penalty    [B] float32, 0 = off
    frequency_penalty   [B] float32, 0 = off
    repetition_penalty  [B] float32, 1 = off
    output_counts       [B, V] int32: how often each token id occurs among the row's
                        generated tokens
    prompt_mask         [B, V] bool: which token ids occur in the row's prompt

    The host-side flags let an implementation skip work without reading device values:
    all_greedy (every temperature is 0), no_top_k (every top_k is 0), no_top_p (every top_p
    is 1), no_min_p (every min_p is 0), no_penalties (every penalty is off); False promises
    nothing. The fields after all_greedy's flags are keyword-only. A min_p of None means
    no_min_p; five penalty fields all None mean no_penalties. output_counts and
    prompt_mask are None exactly when no_penalties is True, so an implementation that
    applies penalties always has them. The flags are settled at construction:
    dataclasses.replace copies them, so a replacement that adds min_p or penalties must
    also pass no_min_p=False or no_penalties=False.
    """

    temperature: torch.Tensor
    top_k: torch.Tensor
    top_p: torch.Tensor
    noise: torch.Tensor | None
    all_greedy: bool
    no_top_k: bool = False
    no_top_p: bool = False
    _: KW_ONLY
    min_p: torch.Tensor | None = None
    presence_penalty: torch.Tensor | None = None
    frequency_penalty: torch.Tensor | None = None
    repetition_penalty: torch.Tensor | None = None
    output_counts: torch.Tensor | None = None
    prompt_mask: torch.Tensor | None = None
    no_min_p: bool = False
    no_penalties: bool = False

    def __post_init__(self) -> None:
        if self.min_p is None:
            self.no_min_p = True
        given = [name for name in PENALTY_FIELDS if getattr(self, name) is not None]
        if not given:
            self.no_penalties = True
            return
        if self.no_penalties:
            raise ConfigError(f"SamplingTensors(no_penalties=True) was given {', '.join(given)}; "
                              "pass no penalty tensors with no_penalties=True, or "
                              "no_penalties=False to apply them.")
        missing = [name for name in PENALTY_FIELDS if getattr(self, name) is None]
        if missing:
            raise ConfigError(f"SamplingTensors has {', '.join(given)} but not "
                              f"{', '.join(missing)}; penalties need all of "
                              f"{', '.join(PENALTY_FIELDS)} (or none, for a step without "
                              "penalties).")


def token_counts(rows: list[list[int]], vocab_size: int,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """[B, V] int32: how often each token id occurs in each row of ``rows`` (B lists of ids
    below ``vocab_size``). ``token_counts(prompts, V) > 0`` is a prompt_mask."""
    counts = torch.zeros(len(rows), vocab_size, dtype=torch.int32)
    for row, ids in enumerate(rows):
        if ids:
            index = torch.tensor(ids, dtype=torch.int64)
            counts[row].scatter_add_(0, index, torch.ones_like(index, dtype=torch.int32))
    return counts.to(device)
