import pytest

from baseboard.core.errors import ModelError
from baseboard.engine.kv_budget import CPU_RAM_FRACTION, kv_cache_budget, num_kv_blocks
from baseboard.testing.null import NullPlatform

GIB = 2**30


def test_an_explicit_budget_wins():
    platform = NullPlatform(device_type="cuda", free_memory=GIB, total_memory=2 * GIB)
    assert kv_cache_budget(platform, 12345, 10 * GIB, 0, 0.9)[0] == 12345


def test_accelerator_budget_is_what_the_utilization_leaves_after_activations():
    platform = NullPlatform(device_type="cuda", free_memory=60 * GIB, total_memory=80 * GIB)
    budget, source = kv_cache_budget(platform, None, 100 * GIB, 2 * GIB, 0.9)
    assert budget == pytest.approx(50 * GIB, abs=1)
    assert "BASEBOARD_GPU_MEMORY_UTILIZATION=0.9" in source
    assert kv_cache_budget(platform, None, GIB, 2 * GIB, 0.9) == (
        GIB, "max_num_seqs x max_model_len tokens")


def test_cpu_budget_is_a_fraction_of_free_ram_capped_by_the_need():
    platform = NullPlatform(device_type="cpu", free_memory=16 * GIB, total_memory=32 * GIB)
    assert kv_cache_budget(platform, None, GIB, 0, 0.9)[0] == GIB
    assert kv_cache_budget(platform, None, 100 * GIB, 0, 0.9)[0] == int(CPU_RAM_FRACTION * 16 * GIB)


def test_blocks_must_hold_one_sequence_of_max_model_len():
    assert num_kv_blocks(10 * 1000, "test", 1000, 16, 160) == 10
    with pytest.raises(ModelError, match="fewer than one sequence of max_model_len=176"):
        num_kv_blocks(10 * 1000, "test", 1000, 16, 176)
    with pytest.raises(ModelError, match=r"budget \(0.0 MiB"):
        num_kv_blocks(-5, "test", 1000, 16, 16)
