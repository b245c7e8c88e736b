"""The paged KV cache's bookkeeping: a pool of fixed-size blocks, a free list, reference
counts, and a prefix cache that lets sequences with a common prefix share full blocks.

A full block is registered under a hash of its tokens chained with the hash of the block
before it, so equal hashes mean equal prefixes. A freed block keeps its contents and its
hash until it is handed out again, so a later request (or a preempted one coming back)
can reuse it; free blocks are handed out least recently freed first.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Optional

from .sequence import Sequence

NO_HASH = -1


def chain_hash(previous: int, tokens: tuple[int, ...]) -> int:
    return hash((previous, tokens))


class BlockManager:
    """Hands out blocks of ``block_size`` token slots from a pool of ``num_blocks``."""

    def __init__(self, num_blocks: int, block_size: int):
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.ref_counts = [0] * num_blocks
        self.hashes = [NO_HASH] * num_blocks
        self.block_tokens: list[Optional[tuple[int, ...]]] = [None] * num_blocks
        self.hash_to_block: dict[int, int] = {}
        self.free: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))
        self.num_cache_hit_tokens = 0

    @property
    def num_free_blocks(self) -> int:
        return len(self.free)

    def blocks_needed(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def _cached_prefix(self, seq: Sequence) -> list[tuple[int, int]]:
        """(block id, hash) of the leading full blocks already in the cache. The block
        holding the last token is never matched: its logits must be computed. Nor is any
        block of a prompt whose log-probabilities are asked: they need every position's."""
        if seq.needs_prompt_logprobs:
            return []
        hits = []
        previous = NO_HASH
        bs = self.block_size
        for i in range((len(seq) - 1) // bs):
            tokens = tuple(seq.token_ids[i * bs:(i + 1) * bs])
            previous = chain_hash(previous, tokens)
            block = self.hash_to_block.get(previous)
            if block is None or self.block_tokens[block] != tokens:
                break
            hits.append((block, previous))
        return hits

    def allocate(self, seq: Sequence) -> bool:
        """Give a waiting sequence blocks for all its tokens, reusing cached prefix blocks.
        Returns False (and changes nothing) when there are not enough free blocks."""
        hits = self._cached_prefix(seq)
        reused_free = sum(1 for block, _ in hits if self.ref_counts[block] == 0)
        new = self.blocks_needed(len(seq)) - len(hits)
        if new > len(self.free) - reused_free:
            return False
        for block, _ in hits:
            if self.ref_counts[block] == 0:
                del self.free[block]
            self.ref_counts[block] += 1
        seq.block_table = [block for block, _ in hits] + [self._take() for _ in range(new)]
        seq.block_hashes = [h for _, h in hits]
        seq.num_computed_tokens = len(hits) * self.block_size
        self.num_cache_hit_tokens += seq.num_computed_tokens
        return True

    def _take(self) -> int:
        block, _ = self.free.popitem(last=False)
        if self.hashes[block] != NO_HASH:
            if self.hash_to_block.get(self.hashes[block]) == block:
                del self.hash_to_block[self.hashes[block]]
            self.hashes[block] = NO_HASH
            self.block_tokens[block] = None
        self.ref_counts[block] = 1
        return block

    def free_blocks(self, seq: Sequence) -> None:
        """Release the sequence's blocks; its last blocks are the first to be reused."""
        for block in reversed(seq.block_table):
            self.ref_counts[block] -= 1
            if self.ref_counts[block] == 0:
                self.free[block] = None
        seq.block_table = []
        seq.block_hashes = []
        seq.num_computed_tokens = 0

    def can_append(self, seq: Sequence) -> bool:
        """Whether the sequence's next decode has a slot (taking a free block if needed)."""
        return len(seq.block_table) * self.block_size >= len(seq) or bool(self.free)

    def append_slot(self, seq: Sequence) -> None:
        """Make room for the sequence's last token; call after ``can_append`` said yes."""
        if len(seq.block_table) * self.block_size < len(seq):
            seq.block_table.append(self._take())

    def register_full_blocks(self, seq: Sequence) -> None:
        """Make the sequence's newly computed full blocks findable by later prefixes (a
        block's tokens must be known: none of them pending)."""
        bs = self.block_size
        while len(seq.block_hashes) < min(seq.num_computed_tokens, seq.num_known_tokens) // bs:
            i = len(seq.block_hashes)
            tokens = tuple(seq.token_ids[i * bs:(i + 1) * bs])
            h = chain_hash(seq.block_hashes[-1] if seq.block_hashes else NO_HASH, tokens)
            block = seq.block_table[i]
            # Two sequences may compute the same prefix in one step; the first one wins.
            if h not in self.hash_to_block and self.hashes[block] == NO_HASH:
                self.hash_to_block[h] = block
                self.hashes[block] = h
                self.block_tokens[block] = tokens
            seq.block_hashes.append(h)
