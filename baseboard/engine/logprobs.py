"""Log-probabilities for SamplingParams.logprobs and prompt_logprobs: gathered on the device
from the model's raw logits (log_softmax before penalties, temperature and every filter, as
vLLM returns them by default), copied back with the step's tokens, and turned into vLLM's
{token id: Logprob} dicts on the host."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Callable, Optional

import torch

from .outputs import Logprob, TokenLogprobs

# Prompt positions whose logits are computed at once: [rows, V] float32 stays near 64 MiB.
LOGIT_CHUNK_BYTES = 64 * 2**20


@dataclass
class TopLogprobs:
    """N positions' log-probabilities: the chosen token's (the sampled one, or the next
    prompt token) and the k most likely ones'.

    chosen_ids  [N] int64     the chosen tokens
    chosen      [N] float32   their log-probabilities
    ranks       [N] int64     their ranks: how many tokens are at least as likely (vLLM's)
    top_ids     [N, k] int64  the k most likely tokens, most likely first
    top         [N, k] float32 their log-probabilities
    """

    chosen_ids: torch.Tensor
    chosen: torch.Tensor
    ranks: torch.Tensor
    top_ids: torch.Tensor
    top: torch.Tensor

    @classmethod
    def gather(cls, logprobs: torch.Tensor, chosen_ids: torch.Tensor, k: int) -> TopLogprobs:
        """From logprobs [N, V] float32 (log_softmax of raw logits) and chosen_ids [N]."""
        chosen = logprobs.gather(1, chosen_ids.unsqueeze(1))  # [N, 1]
        ranks = (logprobs >= chosen).sum(dim=-1)
        top, top_ids = logprobs.topk(k, dim=-1)
        return cls(chosen_ids, chosen.squeeze(1), ranks, top_ids, top)

    @classmethod
    def cat(cls, parts: list[TopLogprobs]) -> TopLogprobs:
        return cls(*(torch.cat([getattr(p, f.name) for p in parts]) for f in fields(cls)))

    def to_host(self, pinned: bool) -> TopLogprobs:
        """Copies on the host, started without waiting (read them after the step's event)."""
        if self.chosen.device.type == "cpu":
            return self
        return TopLogprobs(*(_host_copy(getattr(self, f.name), pinned) for f in fields(self)))

    def to_dicts(self, ks: list[Optional[int]],
                 decode: Callable[[list[int]], list[Optional[str]]]
                 ) -> list[Optional[TokenLogprobs]]:
        """Per position i, {token id: Logprob}: the chosen token first, then the ks[i] most
        likely ones (the chosen one is not repeated); None where ks[i] is None."""
        chosen_ids, chosen, ranks = (self.chosen_ids.tolist(), self.chosen.tolist(),
                                     self.ranks.tolist())
        top_ids, top = self.top_ids.tolist(), self.top.tolist()
        texts = iter(decode([t for i, k in enumerate(ks) if k is not None
                             for t in [chosen_ids[i], *top_ids[i][:k]]]))
        result: list[Optional[TokenLogprobs]] = []
        for i, k in enumerate(ks):
            if k is None:
                result.append(None)
                continue
            entry = {chosen_ids[i]: Logprob(chosen[i], ranks[i], next(texts))}
            for rank, (token, value) in enumerate(zip(top_ids[i][:k], top[i][:k]), start=1):
                entry.setdefault(token, Logprob(value, rank, next(texts)))
            result.append(entry)
        return result


def prompt_logprobs(model: Any, hidden: torch.Tensor, next_ids: torch.Tensor, k: int,
                    vocab_size: int) -> TopLogprobs:
    """The log-probabilities that the hidden states [P, hidden] of a prompt's positions
    0..P-1 give to next_ids [P] (the prompt's tokens 1..P), computed in chunks of
    positions so that a long prompt's logits [P, V] never exist at once."""
    rows = max(1, LOGIT_CHUNK_BYTES // (4 * vocab_size))
    parts = [TopLogprobs.gather(model.compute_logits(hidden[at:at + rows]).log_softmax(-1),
                                next_ids[at:at + rows], k)
             for at in range(0, hidden.shape[0], rows)]
    return TopLogprobs.cat(parts)


def _host_copy(tensor: torch.Tensor, pinned: bool) -> torch.Tensor:
    host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=pinned)
    return host.copy_(tensor, non_blocking=True)


def token_texts(tokenizer: Any) -> Callable[[list[int]], list[Optional[str]]]:
    """Each token id's text alone, as Logprob.decoded_token (None without a tokenizer)."""
    if tokenizer is None:
        return lambda ids: [None] * len(ids)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # one call into the Rust tokenizer for the whole step
        return lambda ids: backend.decode_batch([[i] for i in ids], skip_special_tokens=False)
    return lambda ids: [tokenizer.decode([i]) for i in ids]
