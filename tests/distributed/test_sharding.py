"""Cutting weights for tensor parallelism: every quantized layout's shard dequantizes to the
same rows or columns of the whole weight, and a cut a layout cannot take names the layer."""

from __future__ import annotations

import pytest
import torch

from baseboard.core.errors import ModelError
from baseboard.distributed.sharding import columns, rows
from baseboard.quantization.records import BlockQuantized, ChannelQuantized, GroupQuantized
from baseboard.testing import quantize

N, K = 96, 256


def dense() -> torch.Tensor:
    return torch.randn((N, K), generator=torch.Generator().manual_seed(0)) / K ** 0.5


def group_4bit(group_size: int) -> GroupQuantized:
    qweight, scales, offsets = quantize.quantize_4bit_groups(dense(), group_size)
    return GroupQuantized("gemm_w4a16", qweight, scales, offsets, group_size)


def layouts() -> dict:
    w8, s8 = quantize.quantize_int8_groups(dense(), 64)
    c8, cs = quantize.quantize_int8_per_channel(dense())
    fp8, bs = quantize.quantize_fp8_blocks(dense(), (8, 32))
    return {"w4a16-g32": group_4bit(32),
            "w8a16-g64": GroupQuantized("gemm_w8a16", w8, s8, None, 64),
            "w4a16-per-channel": group_4bit(K),  # G = K: one scale per row
            "w8a8-int8": ChannelQuantized("gemm_w8a8_int8", c8, cs),
            "fp8-blocks": BlockQuantized("gemm_w8a8_fp8_block", fp8, bs, (8, 32))}


@pytest.mark.parametrize("layout", list(layouts()))
@pytest.mark.parametrize("size", [2, 4])
def test_every_shard_dequantizes_to_its_slice_of_the_weight(layout, size):
    record = layouts()[layout]
    whole = record.dequantize()
    n, k = N // size, K // size
    for rank in range(size):
        cut = rows(record, rank * n, (rank + 1) * n, "layer", size)
        torch.testing.assert_close(cut.dequantize(), whole[rank * n:(rank + 1) * n],
                                   atol=0, rtol=0)
        cut = columns(record, rank * k, (rank + 1) * k, "layer", size)
        assert cut.shape == (N, k)
        torch.testing.assert_close(cut.dequantize(), whole[:, rank * k:(rank + 1) * k],
                                   atol=0, rtol=0)


def test_a_split_that_cuts_a_group_names_layer_k_group_and_size():
    with pytest.raises(ModelError, match=r"layer model.layers.3.mlp.down_proj: tensor "
                                         r"parallelism over 4 ranks cuts its K=256 inputs into "
                                         r"slices of 64, which does not keep groups of 128"):
        columns(group_4bit(128), 64, 128, "model.layers.3.mlp.down_proj", 4)


def test_a_split_that_cuts_a_scale_block_names_the_layer():
    fp8, scales = quantize.quantize_fp8_blocks(dense(), (64, 128))
    record = BlockQuantized("gemm_w8a8_fp8_block", fp8, scales, (64, 128))
    with pytest.raises(ModelError, match="layer o_proj: .* scale blocks of 128"):
        columns(record, 64, 128, "o_proj", 4)


def test_an_act_order_permutation_is_cut_only_within_a_rank():
    record = group_4bit(32)
    inside = torch.cat([torch.randperm(128), 128 + torch.randperm(128)])
    cut = columns(GroupQuantized(**{**record.__dict__, "input_perm": inside}), 128, 256,
                  "layer", 2)
    assert torch.equal(cut.input_perm, inside[128:] - 128)
    across = torch.randperm(K, generator=torch.Generator().manual_seed(1))
    with pytest.raises(ModelError, match="act-order input permutation .* mixes inputs"):
        columns(GroupQuantized(**{**record.__dict__, "input_perm": across}), 0, 128,
                "layer", 2)


def test_cpu_ranks_share_the_hosts_ram_fraction_for_their_kv_caches():
    from baseboard.engine.kv_budget import CPU_RAM_FRACTION, kv_cache_budget
    from baseboard.testing.null import GIB, NullPlatform

    host = NullPlatform(free_memory=16 * GIB, total_memory=32 * GIB)  # device_type "cpu"
    budget, source = kv_cache_budget(host, None, 100 * GIB, 0, 0.9, ranks=4)
    assert budget == int(CPU_RAM_FRACTION * 16 * GIB) // 4
    assert source.endswith("shared by 4 ranks")
