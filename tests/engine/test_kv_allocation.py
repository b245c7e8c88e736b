"""The CPU KV cache is zero without being written: its pages are mapped as they are used."""

import torch

from baseboard.engine.model_runner import CACHE_ALIGNMENT, zeroed


def resident_bytes() -> int:
    with open("/proc/self/status") as status:
        kib = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    return kib * 1024


def test_a_large_cpu_cache_costs_no_memory_until_written():
    shape = (2, 4096, 16, 8, 64)  # 1 GiB of float32
    before = resident_bytes()
    cache = zeroed(shape, torch.float32, torch.device("cpu"))
    assert resident_bytes() - before < 64 * 2**20  # torch.zeros would map the whole GiB
    assert cache.shape == shape and cache.dtype == torch.float32
    assert cache.data_ptr() % CACHE_ALIGNMENT == 0 and cache.is_contiguous()
    assert not cache[:, ::97].any()  # reads see zeros
    cache[1, 7, 3].fill_(2.0)
    assert cache.sum().item() == 2.0 * 8 * 64


def test_bfloat16_caches_are_zero_and_aligned():
    cache = zeroed((2, 3, 16, 2, 80), torch.bfloat16, torch.device("cpu"))
    assert cache.dtype == torch.bfloat16 and cache.data_ptr() % CACHE_ALIGNMENT == 0
    assert torch.equal(cache, torch.zeros_like(cache))
