"""How StepGraphs.split cuts a step that no captured graph runs whole into graph replays
(the replays themselves: tests/engine/test_engine_gpu.py)."""

from baseboard.core.attention import AttentionBatch
from baseboard.engine.cuda_graphs import StepGraphs


def graphs_of(decode_sizes, prefill_sizes, max_model_len=256, max_replays=4) -> StepGraphs:
    """The sizes a StepGraphs captured and the replays it allows a step, without capturing
    or timing (no GPU here)."""
    graphs = StepGraphs.__new__(StepGraphs)
    graphs.decode_sizes, graphs.prefill_sizes = decode_sizes, prefill_sizes
    graphs.max_model_len, graphs.max_replays = max_model_len, max_replays
    return graphs


def step(query_lens, context_lens) -> AttentionBatch:
    tables = [[row] for row in range(len(query_lens))]
    slots = [100 * row + t for row, n in enumerate(query_lens) for t in range(n)]
    return AttentionBatch(query_lens, context_lens, tables, slots)


def test_decodes_then_each_prefill_replay_their_own_graphs():
    batch = step([1, 1, 1, 10, 20], [7, 9, 30, 10, 25])
    parts = graphs_of([1, 2, 4, 8], [16, 32]).split(batch)
    assert [(key, start) for key, start, _ in parts] == [
        ((False, 4), 0), ((True, 16), 3), ((True, 32), 13)]
    decodes, first, second = (part for _, _, part in parts)
    assert decodes.query_lens == [1, 1, 1] and decodes.context_lens == [7, 9, 30]
    assert first.block_tables == [[3]] and first.slot_mapping == list(range(300, 310))
    assert second.context_lens == [25] and second.slot_mapping == list(range(400, 420))


def test_prefills_alone_split_too():
    parts = graphs_of([1, 2], [16]).split(step([5, 9], [5, 9]))
    assert [(key, start) for key, start, _ in parts] == [((True, 16), 0), ((True, 16), 5)]


def test_no_split_past_the_replay_limit_or_outside_the_graphs():
    five = step([1, 4, 4, 4, 4], [3, 4, 4, 4, 4])
    assert graphs_of([1, 2], [16], max_replays=4).split(five) is None
    assert len(graphs_of([1, 2], [16], max_replays=5).split(five)) == 5
    # a model whose eager step costs a replay or less never splits, nor any with
    # BASEBOARD_GRAPH_PARTS=0 (no replay allowed)
    assert graphs_of([1, 2], [16], max_replays=1).split(step([1, 4], [3, 4])) is None
    assert graphs_of([1, 2], [16], max_replays=0).split(step([4], [4])) is None
    assert graphs_of([1, 2], [16]).split(step([1, 40], [3, 40])) is None  # no 64 graph
    assert graphs_of([1], [16]).split(step([1, 1, 8], [3, 3, 8])) is None  # 2 decodes
    # padded past the block table's max_model_len
    assert graphs_of([1], [16], max_model_len=18).split(step([1, 9], [3, 12])) is None
