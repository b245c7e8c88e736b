"""The fp8 method (quant_method "fp8") and the block-scaled FP8 GEMM reference."""

from __future__ import annotations

import pytest
import torch

from baseboard.kernels.torch.quant_gemm import FP8_MAX, GemmW8A8Fp8Block
from baseboard.testing.quantize import quantize_fp8_blocks


def blockwise_product(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor,
                      block: tuple[int, int]) -> torch.Tensor:
    """x @ w.T the way DeepSeek-V3's kernel computes it: per K block, quantize each token's
    slice of x to fp8, multiply the codes, scale by the two scales, accumulate."""
    bn, bk = block
    n, k = qweight.shape
    out = torch.zeros(x.shape[0], n, dtype=torch.float64)
    for kb in range(0, k, bk):
        xs = x[:, kb:kb + bk].double()
        x_scale = xs.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / FP8_MAX
        xq = (xs / x_scale).clamp(-FP8_MAX, FP8_MAX).float().to(torch.float8_e4m3fn).double()
        for nb in range(0, n, bn):
            wq = qweight[nb:nb + bn, kb:kb + bk].double()
            out[:, nb:nb + bn] += (xq @ wq.T) * x_scale * float(scales[nb // bn, kb // bk])
    return out


@pytest.mark.parametrize("k, n, block", [(256, 384, (128, 128)), (200, 70, (64, 32))])
def test_block_reference_matches_a_blockwise_accumulation(k, n, block):
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(n, k, generator=gen) / k ** 0.5
    x = torch.randn(5, k, generator=gen)
    qweight, scales = quantize_fp8_blocks(weight, block)
    state = GemmW8A8Fp8Block.prepare(qweight, scales, block, None)
    got = GemmW8A8Fp8Block.apply(state, x)
    want = blockwise_product(x, qweight, scales, block)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
    # and the blocks did matter: one scale for the whole weight gives another answer
    assert not torch.allclose(got, x @ (qweight.float() * scales.mean()).T, atol=1e-3)


def test_block_reference_refuses_scales_of_the_wrong_shape():
    qweight = torch.zeros(256, 256, dtype=torch.float8_e4m3fn)
    with pytest.raises(ValueError, match=r"expected \(2, 2\)"):
        GemmW8A8Fp8Block.prepare(qweight, torch.ones(2, 3), (128, 128), None)


def test_block_records_concatenate_only_on_whole_blocks_of_rows():
    from baseboard.quantization.records import BlockQuantized, can_concat, concat_rows

    gen = torch.Generator().manual_seed(1)

    def record(n):
        qweight, scales = quantize_fp8_blocks(torch.randn(n, 96, generator=gen), (32, 32))
        return BlockQuantized("gemm_w8a8_fp8_block", qweight, scales, (32, 32))

    whole = [record(64), record(32), record(40)]  # only the last ends inside a block
    assert can_concat(whole)
    joined = concat_rows(whole)
    torch.testing.assert_close(joined.dequantize(),
                               torch.cat([r.dequantize() for r in whole]), rtol=0, atol=0)
    assert not can_concat([record(40), record(32)])


def test_channel_records_concatenate_and_dequantize_per_row():
    from baseboard.quantization.records import ChannelQuantized, can_concat, concat_rows

    codes = torch.tensor([[1, -2], [3, 4]], dtype=torch.int8)
    a = ChannelQuantized("gemm_w8a8_int8", codes, torch.tensor([0.5, 2.0]))
    b = ChannelQuantized("gemm_w8a8_int8", codes[:1], torch.tensor([0.25]))
    assert can_concat([a, b])
    assert not can_concat([a, ChannelQuantized("gemm_w8a8_fp8", codes.float().to(
        torch.float8_e4m3fn), torch.ones(2))])
    assert concat_rows([a, b]).dequantize().tolist() == [[0.5, -1.0], [6.0, 8.0], [0.25, -0.5]]
