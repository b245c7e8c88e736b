"""Continuous batching: each step runs every running sequence's next token (decodes)
and admits waiting sequences (prefills) first come, first served, while blocks and the
token budget allow. When a decode finds no free block, the youngest running sequence is
preempted: its blocks are freed and it goes back to the front of the waiting queue with
its generated tokens, to be recomputed as a prefill later (same tokens, same results).
"""

from __future__ import annotations

from collections import deque

from .block_manager import BlockManager
from .config import EngineConfig
from .sequence import Sequence, SequenceStatus


class Scheduler:
    """FCFS waiting queue + running list (oldest first)."""

    def __init__(self, config: EngineConfig, block_manager: BlockManager):
        self.block_manager = block_manager
        self.max_num_seqs = config.max_num_seqs
        self.max_model_len = config.max_model_len
        self.max_num_batched_tokens = config.max_num_batched_tokens
        self.waiting: deque[Sequence] = deque()
        self.running: deque[Sequence] = deque()
        self.num_preemptions = 0

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> list[Sequence]:
        """The sequences of the next step: decodes first, then prefills (the order
        AttentionBatch needs). Every sequence in it samples one token."""
        decodes: list[Sequence] = []
        kept: list[Sequence] = []
        preempted = False
        while self.running:
            seq = self.running.popleft()
            if seq.ends_by_length(len(seq), self.max_model_len):  # its pending token is last
                kept.append(seq)
                continue
            while not self.block_manager.can_append(seq):
                preempted = True
                if not self.running:
                    self._preempt(seq)
                    break
                self._preempt(self.running.pop())
            else:
                self.block_manager.append_slot(seq)
                decodes.append(seq)
                kept.append(seq)
        self.running.extend(kept)
        # Admitting new work right after a preemption would only take the blocks back.
        prefills = [] if preempted else self._admit(len(decodes))
        # A prefill of one token is shaped like a decode, so it goes with the decodes.
        return decodes + sorted(prefills, key=lambda s: s.query_len != 1)

    def _admit(self, num_decodes: int) -> list[Sequence]:
        admitted: list[Sequence] = []
        budget = self.max_num_batched_tokens - num_decodes
        while self.waiting and num_decodes + len(admitted) < self.max_num_seqs:
            seq = self.waiting[0]
            if len(seq) > budget or not self.block_manager.allocate(seq):
                break
            budget -= seq.query_len
            self.waiting.popleft()
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            admitted.append(seq)
        return admitted

    def _preempt(self, seq: Sequence) -> None:
        self.num_preemptions += 1
        self.block_manager.free_blocks(seq)
        seq.status = SequenceStatus.WAITING
        self.waiting.appendleft(seq)

    def finish(self, seq: Sequence) -> None:
        """Release a finished (or aborted) sequence wherever it is."""
        seq.drop_pending()
        if seq.status is SequenceStatus.RUNNING:
            self.running.remove(seq)
            self.block_manager.free_blocks(seq)
        elif seq.status is SequenceStatus.WAITING:
            self.waiting.remove(seq)
        seq.status = SequenceStatus.FINISHED
