"""Drives a model step by step over a paged KV cache, the way the engine does, for one or
more sequences (no scheduler: every sequence gets blocks of its own up front)."""

from __future__ import annotations

import torch

from baseboard.core.attention import AttentionBatch, AttentionSpec
from baseboard.models.config import ModelConfig

BLOCK_SIZE = 4  # small, so short prompts already span several blocks (the default)


class PagedRunner:
    def __init__(self, model_class, config: ModelConfig, plan, weights, num_seqs: int = 1,
                 max_len: int = 64, dtype: torch.dtype = torch.float32, device: str = "cpu",
                 block_size: int = BLOCK_SIZE):
        self.device = torch.device(device)
        spec = AttentionSpec(num_heads=config.num_heads, num_kv_heads=config.num_kv_heads,
                             head_dim=config.head_dim, scale=config.head_dim ** -0.5,
                             block_size=block_size, dtype=dtype, device=self.device,
                             max_num_seqs=num_seqs, max_model_len=max_len)
        self.attention = plan.attention(spec)
        self.model = model_class(config, plan, self.attention, dtype, self.device)
        self.model.load_weights(weights)
        self.block_size = block_size
        blocks_per_seq = -(-max_len // block_size)
        # block ids handed out in reverse so that block order != cache order
        ids = list(range(num_seqs * blocks_per_seq))[::-1]
        self.block_tables = [ids[i * blocks_per_seq:(i + 1) * blocks_per_seq]
                             for i in range(num_seqs)]
        self.caches = [torch.zeros(self.attention.kv_cache_shape(num_seqs * blocks_per_seq),
                                   dtype=dtype, device=self.device)
                       for _ in range(config.num_layers)]
        self.lengths = [0] * num_seqs

    def _slot(self, seq: int, position: int) -> int:
        size = self.block_size
        return self.block_tables[seq][position // size] * size + position % size

    def step(self, tokens: dict[int, list[int]]) -> dict[int, torch.Tensor]:
        """Feed new tokens to some sequences (decodes first, as the engine orders them) ->
        {seq: logits [vocab] float32 at its last new token}."""
        order = sorted(tokens, key=lambda s: len(tokens[s]) != 1)
        ids, positions, slots, query_lens, context_lens, tables = [], [], [], [], [], []
        for seq in order:
            start = self.lengths[seq]
            new = tokens[seq]
            ids += new
            positions += range(start, start + len(new))
            slots += [self._slot(seq, p) for p in range(start, start + len(new))]
            query_lens.append(len(new))
            context_lens.append(start + len(new))
            tables.append(self.block_tables[seq])
            self.lengths[seq] += len(new)
        metadata = self.attention.build_metadata(
            AttentionBatch(query_lens, context_lens, tables, slots))
        hidden = self.model.forward(torch.tensor(ids, device=self.device),
                                    torch.tensor(positions, device=self.device), self.caches,
                                    metadata)
        last = torch.tensor(query_lens, device=self.device).cumsum(0) - 1
        logits = self.model.compute_logits(hidden[last]).cpu()
        return {seq: logits[i] for i, seq in enumerate(order)}

    def greedy(self, prompt: list[int], new_tokens: int, seq: int = 0) -> list[int]:
        """Greedy continuation of ``prompt`` by ``new_tokens`` tokens."""
        out: list[int] = []
        logits = self.step({seq: prompt})[seq]
        for _ in range(new_tokens):
            out.append(int(logits.argmax()))
            if len(out) < new_tokens:
                logits = self.step({seq: [out[-1]]})[seq]
        return out
