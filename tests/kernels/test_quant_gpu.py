"""The quantized GEMMs on CUDA: the Triton kernels and torch's (tinygemm, _scaled_mm,
_int_mm) against the references at every M bucket of the tile tables, and inside a CUDA
graph (split-K counters reset themselves; nothing syncs with the host). Run with
`make test-gpu`."""

from __future__ import annotations

import pytest
import torch

from baseboard.kernels.torch import quant_alternatives as alt
from baseboard.kernels.torch import quant_gemm as reference
from baseboard.testing import quantize

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

K, N = 1024, 768
ROWS = (1, 2, 5, 16, 33, 64, 200, 1000)  # every bucket of quant_tiles' tables
# imported by the tests, not at collection: other modules run Triton in its interpreter
NAMES = ("triton_w4a16", "triton_w8a16", "triton_fp8", "triton_int8", "tinygemm",
         "scaled_mm", "int_mm")


def kernels():
    from baseboard.kernels.triton import quant_gemm, quant_w8a8

    return {"triton_w4a16": (quant_gemm.GemmW4A16, reference.GemmW4A16, "w4a16"),
            "triton_w8a16": (quant_gemm.GemmW8A16, reference.GemmW8A16, "w8a16"),
            "triton_fp8": (quant_w8a8.GemmW8A8Fp8, reference.GemmW8A8Fp8, "fp8"),
            "triton_int8": (quant_w8a8.GemmW8A8Int8, reference.GemmW8A8Int8, "int8"),
            "tinygemm": (alt.TinyGemmW4A16, reference.GemmW4A16, "w4a16"),
            "scaled_mm": (alt.ScaledMmFp8, reference.GemmW8A8Fp8, "fp8"),
            "int_mm": (alt.IntMmInt8, reference.GemmW8A8Int8, "int8")}


def inputs(kind: str, group: int = 128) -> dict:
    gen = torch.Generator().manual_seed(0)
    dense = torch.randn((N, K), generator=gen) / K ** 0.5
    bias = (torch.randn(N, generator=gen) * 0.1).to("cuda", torch.bfloat16)
    if kind == "w4a16":
        codes, scales, offsets = quantize.quantize_4bit_groups(dense, group)
        return dict(qweight=codes.cuda(), scales=scales.to("cuda", torch.bfloat16),
                    offsets=offsets.to("cuda", torch.bfloat16), group_size=group, bias=bias)
    if kind == "w8a16":
        codes, scales = quantize.quantize_int8_groups(dense, group)
        return dict(qweight=codes.cuda(), scales=scales.to("cuda", torch.bfloat16),
                    group_size=group, bias=bias)
    quantizer = quantize.quantize_fp8_per_channel if kind == "fp8" else \
        quantize.quantize_int8_per_channel
    codes, scales = quantizer(dense)
    return dict(qweight=codes.cuda(), scales=scales.cuda(), bias=bias)


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.float() - want.float()).norm() / want.float().norm()).item()


@pytest.mark.parametrize("name", NAMES)
def test_matches_the_reference_at_every_bucket(name):
    impl, ref, kind = kernels()[name]
    args = inputs(kind)
    state, ref_state = impl.prepare(**args), ref.prepare(**args)
    for m in ROWS:
        x = torch.randn(m, K, device="cuda", dtype=torch.bfloat16)
        error = relative_error(impl.apply(state, x), ref.apply(ref_state, x))
        assert error < 2e-2, f"{name} at M={m}: relative error {error:.2e}"


@pytest.mark.parametrize("group", [32, 64, K])
def test_triton_w4a16_groups_on_the_gpu(group):
    from baseboard.kernels.triton import quant_gemm

    args = inputs("w4a16", group)
    state = quant_gemm.GemmW4A16.prepare(**args)
    ref_state = reference.GemmW4A16.prepare(**args)
    x = torch.randn(3, K, device="cuda", dtype=torch.bfloat16)
    got = quant_gemm.GemmW4A16.apply(state, x, torch.float32)
    assert relative_error(got, reference.GemmW4A16.apply(ref_state, x, torch.float32)) < 1e-2


@pytest.mark.parametrize("name", NAMES)
def test_replays_in_a_cuda_graph(name):
    impl, _, kind = kernels()[name]
    state = impl.prepare(**inputs(kind))
    x = torch.randn(4, K, device="cuda", dtype=torch.bfloat16)
    eager = impl.apply(state, x)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        impl.apply(state, x)  # warm-up: compile before capture
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = impl.apply(state, x)
    for _ in range(3):
        graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, eager) or relative_error(out, eager) < 1e-6
    x.copy_(torch.randn_like(x))
    graph.replay()
    torch.cuda.synchronize()
    assert relative_error(out, impl.apply(state, x)) < 1e-6


@pytest.mark.parametrize("kind", ["w4a16", "w8a16"])
@pytest.mark.parametrize("group", [32, 128, K])
def test_every_weight_only_kernel_at_every_row_count(kind, group):
    """The GEMV, the tensor-core kernel (raw codes below DEQUANT_ROWS rows, scaled codes
    from there) and the dequantized weight through torch, each forced onto every bucket."""
    from baseboard.kernels.triton import quant_gemm, quant_tiles
    from baseboard.kernels.triton.splitk import arrival_counters

    impl, ref = (quant_gemm.GemmW4A16, reference.GemmW4A16) if kind == "w4a16" else \
        (quant_gemm.GemmW8A16, reference.GemmW8A16)
    args = inputs(kind, group)
    state, ref_state = impl.prepare(**args), ref.prepare(**args)
    auto = quant_tiles.AUTO_SPLIT
    tiles = {"gemv 1 row": quant_tiles.Tile(1, 32, 512, auto, resident=4,
                                            kernel=quant_tiles.GEMV),
             "gemv 4 rows": quant_tiles.Tile(4, 16, 256, auto, resident=4,
                                             kernel=quant_tiles.GEMV),
             "mma 16 rows": quant_tiles.Tile(16, 64, 128, auto, num_stages=4, resident=4),
             "mma 128 rows": quant_tiles.Tile(128, 128, 128, 1, num_warps=8),
             "dequant": quant_tiles.Tile(1, 32, 128, 1, kernel=quant_tiles.DEQUANT)}
    for name, tile in tiles.items():
        table = ((quant_tiles.UNBOUNDED, tile),)
        forced = state._replace(table=table, counters=arrival_counters(
            quant_tiles.max_split_tiles(table, N), torch.device("cuda")))
        for m in (1, 3, 16, 70):
            x = torch.randn(m, K, device="cuda", dtype=torch.bfloat16)
            error = relative_error(impl.apply(forced, x), ref.apply(ref_state, x))
            assert error < 2e-2, f"{kind} g{group} {name} at M={m}: relative error {error:.2e}"
