from types import SimpleNamespace

from baseboard.engine.block_manager import BlockManager
from baseboard.engine.scheduler import Scheduler
from baseboard.engine.sequence import SequenceStatus
from test_block_manager import check_accounting, make_seq


def scheduler_for(block_manager: BlockManager, max_num_seqs: int,
                  max_num_batched_tokens: int) -> Scheduler:
    limits = SimpleNamespace(max_num_seqs=max_num_seqs,
                             max_num_batched_tokens=max_num_batched_tokens, max_model_len=1024)
    return Scheduler(limits, block_manager)


def run_step(scheduler: Scheduler) -> list:
    """Schedule one step and pretend each sequence sampled token 7."""
    seqs = scheduler.schedule()
    for seq in seqs:
        seq.num_computed_tokens = len(seq)
        seq.token_ids.append(7)
    return seqs


def test_decodes_come_first_then_prefills_in_arrival_order():
    scheduler = scheduler_for(BlockManager(16, 4), max_num_seqs=8, max_num_batched_tokens=64)
    a = make_seq(range(5), "a")
    scheduler.add(a)
    assert run_step(scheduler) == [a]
    b, c = make_seq(range(3), "b"), make_seq(range(6), "c")
    scheduler.add(b)
    scheduler.add(c)
    step = run_step(scheduler)
    assert step == [a, b, c]
    assert [s.query_len for s in step] == [1, 1, 1]  # all computed now
    assert all(s.status is SequenceStatus.RUNNING for s in step)


def test_one_token_prefill_is_ordered_with_the_decodes():
    scheduler = scheduler_for(BlockManager(16, 4), max_num_seqs=8, max_num_batched_tokens=64)
    long, single = make_seq(range(6), "long"), make_seq([3], "single")
    scheduler.add(long)
    scheduler.add(single)
    assert scheduler.schedule() == [single, long]


def test_admission_stops_at_max_num_seqs_and_the_token_budget():
    scheduler = scheduler_for(BlockManager(32, 4), max_num_seqs=2, max_num_batched_tokens=10)
    seqs = [make_seq(range(4), str(i)) for i in range(3)]
    for seq in seqs:
        scheduler.add(seq)
    assert run_step(scheduler) == seqs[:2]
    assert list(scheduler.waiting) == [seqs[2]]
    scheduler = scheduler_for(BlockManager(32, 4), max_num_seqs=8, max_num_batched_tokens=10)
    seqs = [make_seq(range(4), str(i)) for i in range(3)]
    for seq in seqs:
        scheduler.add(seq)
    assert run_step(scheduler) == seqs[:2]  # 4 + 4 tokens; 4 more would pass 10
    assert run_step(scheduler) == seqs  # 2 decodes + 4 prefill tokens fit


def test_preemption_frees_the_youngest_and_requeues_it_first_with_its_tokens():
    bm = BlockManager(num_blocks=3, block_size=4)
    scheduler = scheduler_for(bm, max_num_seqs=8, max_num_batched_tokens=64)
    old, young = make_seq(range(4), "old"), make_seq(range(10, 14), "young")
    scheduler.add(old)
    scheduler.add(young)
    run_step(scheduler)  # both prefilled: 2 blocks, each sequence now has 5 tokens
    late = make_seq(range(20, 22), "late")
    scheduler.add(late)
    step = run_step(scheduler)  # old takes the last block; young must give its block up
    assert step == [old]
    assert scheduler.num_preemptions == 1
    assert list(scheduler.waiting) == [young, late]
    assert young.status is SequenceStatus.WAITING and young.block_table == []
    assert young.token_ids == [10, 11, 12, 13, 7]
    check_accounting(bm, [old])
    scheduler.finish(old)
    step = run_step(scheduler)
    assert step == [young, late]
    assert young.token_ids == [10, 11, 12, 13, 7, 7]
    for seq in step:
        scheduler.finish(seq)
    assert not scheduler.has_unfinished() and bm.num_free_blocks == 3


def test_finish_releases_waiting_and_running_sequences():
    bm = BlockManager(8, 4)
    scheduler = scheduler_for(bm, max_num_seqs=1, max_num_batched_tokens=64)
    a, b = make_seq(range(4), "a"), make_seq(range(4), "b")
    scheduler.add(a)
    scheduler.add(b)
    run_step(scheduler)
    scheduler.finish(b)  # still waiting
    scheduler.finish(a)  # running
    assert a.finished and b.finished
    assert not scheduler.has_unfinished() and bm.num_free_blocks == 8
