from baseboard.engine.block_manager import BlockManager
from baseboard.engine.detokenizer import IncrementalDetokenizer
from baseboard.engine.sampling_params import SamplingParams
from baseboard.engine.sequence import Sequence


def make_seq(ids, name="0", **params):
    return Sequence(name, None, list(ids), SamplingParams(**params),
                    IncrementalDetokenizer(None, ids), None)


def check_accounting(bm: BlockManager, live: list[Sequence]) -> None:
    """Every block is free exactly when no live sequence holds it."""
    refs = [0] * bm.num_blocks
    for seq in live:
        for block in seq.block_table:
            refs[block] += 1
    assert refs == bm.ref_counts
    assert set(bm.free) == {b for b in range(bm.num_blocks) if refs[b] == 0}


def test_allocate_append_free_accounting():
    bm = BlockManager(num_blocks=4, block_size=4)
    a = make_seq(range(6), "a")
    assert bm.allocate(a)
    assert len(a.block_table) == 2 and a.num_computed_tokens == 0
    b = make_seq(range(100, 109), "b")  # needs 3 blocks, 2 are free
    assert not bm.allocate(b)
    assert b.block_table == [] and bm.num_free_blocks == 2
    check_accounting(bm, [a])
    a.num_computed_tokens = 6
    a.token_ids += [6, 7]  # 8 tokens fill two blocks exactly: no new block
    assert bm.can_append(a)
    bm.append_slot(a)
    assert len(a.block_table) == 2
    a.token_ids.append(8)
    bm.append_slot(a)
    assert len(a.block_table) == 3
    check_accounting(bm, [a])
    bm.free_blocks(a)
    assert bm.num_free_blocks == 4 and a.block_table == []
    check_accounting(bm, [])


def test_can_append_is_false_only_when_a_new_block_is_needed_and_none_is_free():
    bm = BlockManager(num_blocks=1, block_size=4)
    seq = make_seq(range(4))
    assert bm.allocate(seq)
    assert bm.can_append(seq)  # the 4th token's slot is in the block already
    seq.token_ids.append(4)
    assert not bm.can_append(seq)


def test_prefix_cache_shares_full_blocks_and_counts_references():
    bm = BlockManager(num_blocks=8, block_size=4)
    prompt = list(range(10))  # two full blocks + 2 tokens
    a = make_seq(prompt, "a")
    assert bm.allocate(a)
    a.num_computed_tokens = len(a)
    bm.register_full_blocks(a)
    assert len(a.block_hashes) == 2
    b = make_seq(prompt[:8] + [50, 51, 52], "b")
    assert bm.allocate(b)
    assert b.block_table[:2] == a.block_table[:2]
    assert b.num_computed_tokens == 8
    assert bm.ref_counts[a.block_table[0]] == 2
    check_accounting(bm, [a, b])
    c = make_seq(prompt[:4] + [9, 9, 9, 9, 9], "c")  # only the first block matches
    assert bm.allocate(c)
    assert c.block_table[0] == a.block_table[0] and c.block_table[1] != a.block_table[1]
    check_accounting(bm, [a, b, c])
    for seq in (a, b, c):
        bm.free_blocks(seq)
    check_accounting(bm, [])
    assert bm.num_cache_hit_tokens == 12


def test_the_block_holding_the_last_token_is_never_reused_from_the_cache():
    bm = BlockManager(num_blocks=4, block_size=4)
    a = make_seq(range(8), "a")
    assert bm.allocate(a)
    a.num_computed_tokens = 8
    bm.register_full_blocks(a)
    b = make_seq(range(8), "b")
    assert bm.allocate(b)
    assert b.num_computed_tokens == 4 and b.block_table[1] != a.block_table[1]


def test_freed_blocks_stay_cached_until_handed_out_again():
    bm = BlockManager(num_blocks=3, block_size=4)
    a = make_seq(range(9), "a")
    assert bm.allocate(a)
    a.num_computed_tokens = 9
    bm.register_full_blocks(a)
    bm.free_blocks(a)
    again = make_seq(range(9), "again")  # a preempted sequence coming back
    assert bm.allocate(again)
    assert again.num_computed_tokens == 8
    bm.free_blocks(again)
    other = make_seq(range(100, 112), "other")  # takes every block, evicting the cache
    assert bm.allocate(other)
    bm.free_blocks(other)
    late = make_seq(range(9), "late")
    assert bm.allocate(late)
    assert late.num_computed_tokens == 0
    check_accounting(bm, [late])
