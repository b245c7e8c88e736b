"""``TensorParallel``: what a model needs to run as one rank of several.

It holds the rank's ``Shard`` (which heads and rows it keeps), the process group its
collectives run on and the plan's ``all_reduce`` and ``all_gather``. A model built without
one (tensor_parallel_size=1) calls no collective at all.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F

from .sharding import Shard, shard_tensor


class TensorParallel:
    """One rank's view of the tensor-parallel group."""

    def __init__(self, shard: Shard, group: Any, all_reduce: Callable, all_gather: Callable):
        self.shard = shard
        self.rank, self.size = shard.rank, shard.size
        self.group = group
        self._all_reduce = all_reduce
        self._all_gather = all_gather

    def shard_tensor(self, name: str, weight: Any, config: Any) -> Optional[Any]:
        return shard_tensor(name, weight, config, self.shard)

    def reduced(self, linear: Any) -> ReducedLinear:
        """``linear`` (a row-parallel layer's shard) followed by the all_reduce."""
        return ReducedLinear(linear, self)

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        """x [T, N] -> the sum over ranks [T, N]."""
        return self._all_reduce(x, self.group)

    def embed(self, input_ids: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """input_ids [T] int64 and this rank's embedding rows [V / size, hidden] ->
        [T, hidden]: each rank looks up the ids it holds, the others give zeros, and an
        all_reduce sums them."""
        local = input_ids - self.shard.vocab_start
        outside = (local < 0) | (local >= rows.shape[0])
        hidden = F.embedding(local.masked_fill(outside, 0), rows)
        hidden.masked_fill_(outside.unsqueeze(-1), 0)
        return self.all_reduce(hidden)

    def gather_logits(self, logits: torch.Tensor, vocab_size: int) -> torch.Tensor:
        """This rank's logits [n, rows held] -> every rank's, [n, vocab_size]."""
        missing = self.shard.vocab_rows - logits.shape[1]
        if missing:  # the last rank's slice of a vocabulary that size does not divide
            logits = F.pad(logits, (0, missing))
        gathered = self._all_gather(logits, self.group)
        return gathered[:, :vocab_size] if gathered.shape[1] != vocab_size else gathered


class ReducedLinear:
    """A row-parallel linear layer: this rank's partial product, summed over ranks.

    The partial sums of a 16-bit model are reduced in float32 and rounded once, as one
    device's GEMM rounds its float32 accumulation once: rounding each rank's share to bf16
    first changed greedy tokens against one device within a dozen steps of a tiny model.
    The message is twice as large, which a decode step's latency-bound all_reduce hardly
    notices."""

    __slots__ = ("linear", "parallel")

    def __init__(self, linear: Any, parallel: TensorParallel):
        self.linear = linear
        self.parallel = parallel

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x [T, K / size] -> [T, N] in x's dtype, the same on every rank."""
        if x.dtype == torch.float32:
            return self.parallel.all_reduce(self.linear(x))
        return self.parallel.all_reduce(self.linear(x, torch.float32)).to(x.dtype)
