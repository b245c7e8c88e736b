"""Attention batches over a paged cache for the kernel tests: each sequence's blocks drawn
at random from the pool, so that no kernel can pass by reading blocks in order."""

from baseboard.core.attention import AttentionBatch


def make_batch(query_lens, context_lens, block_size, num_blocks, rng) -> AttentionBatch:
    free = list(range(num_blocks))
    rng.shuffle(free)
    tables, slots = [], []
    for query_len, context in zip(query_lens, context_lens):
        table = [free.pop() for _ in range(-(-context // block_size))]
        tables.append(table)
        slots += [table[p // block_size] * block_size + p % block_size
                  for p in range(context - query_len, context)]
    return AttentionBatch(list(query_lens), list(context_lens), tables, slots)
