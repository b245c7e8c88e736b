"""gemlite's GEMMs on CUDA against the torch references: every row count where gemlite
switches kernels (GEMV, split-K, GEMM), each group size it takes, float32 results, and a
replay inside a CUDA graph. Run with `make test-gpu` where gemlite is installed."""

from __future__ import annotations

import pytest
import torch

from baseboard.core.errors import ConfigError
from baseboard.kernels import gemlite_gemm
from baseboard.kernels.torch import quant_gemm as reference
from baseboard.testing import quantize

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
pytest.importorskip("gemlite")

K, N = 1024, 768
ROWS = (1, 2, 5, 16, 33, 64, 200)  # gemlite's GEMV, split-K and GEMM ranges
KINDS = {"w4a16": (gemlite_gemm.GemliteW4A16, reference.GemmW4A16),
         "w8a16": (gemlite_gemm.GemliteW8A16, reference.GemmW8A16)}


def inputs(kind: str, group: int = 128, k: int = K) -> dict:
    gen = torch.Generator().manual_seed(0)
    dense = torch.randn((N, k), generator=gen) / k ** 0.5
    bias = (torch.randn(N, generator=gen) * 0.1).to("cuda", torch.bfloat16)
    if kind == "w4a16":
        codes, scales, offsets = quantize.quantize_4bit_groups(dense, group)
        return dict(qweight=codes.cuda(), scales=scales.to("cuda", torch.float16),
                    offsets=offsets.cuda(), group_size=group, bias=bias)
    codes, scales = quantize.quantize_int8_groups(dense, group)
    return dict(qweight=codes.cuda(), scales=scales.to("cuda", torch.float16),
                group_size=group, bias=bias)


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.float() - want.float()).norm() / want.float().norm()).item()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_matches_the_reference_at_every_kernel_range(kind, dtype):
    impl, ref = KINDS[kind]
    args = inputs(kind)
    state, ref_state = impl.prepare(**args), ref.prepare(**args)
    for m in ROWS:
        x = torch.randn(m, K, device="cuda", dtype=dtype)
        got, want = impl.apply(state, x), ref.apply(ref_state, x)
        assert got.dtype == dtype and got.shape == (m, N)
        error = relative_error(got, want)
        assert error < 2e-2, f"gemlite {kind} {dtype} at M={m}: relative error {error:.2e}"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("group", [32, 64, 256, K])  # K: one scale per channel
def test_group_sizes_and_float32_results(kind, group):
    impl, ref = KINDS[kind]
    args = inputs(kind, group)
    state, ref_state = impl.prepare(**args), ref.prepare(**args)
    x = torch.randn(2, 3, K, device="cuda", dtype=torch.bfloat16)  # leading dims are kept
    got = impl.apply(state, x, torch.float32)
    assert got.dtype == torch.float32 and got.shape == (2, 3, N)
    assert relative_error(got, ref.apply(ref_state, x, torch.float32)) < 1e-2


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("k", [1184, 257])  # 37 x 32 (as Qwen2.5's 4864 is 152 x 32); prime
def test_per_channel_scales_for_any_k(kind, k):
    impl, ref = KINDS[kind]
    args = inputs(kind, group=k, k=k)
    state, ref_state = impl.prepare(**args), ref.prepare(**args)
    for m in (1, 7, 16, 100):
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        assert relative_error(impl.apply(state, x), ref.apply(ref_state, x)) < 2e-2


@pytest.mark.parametrize("group", [16, 96])
def test_prepare_names_a_group_gemlite_cannot_take(group):
    with pytest.raises(ConfigError, match="groups of a power of two from 32"):
        gemlite_gemm.GemliteW4A16.prepare(**inputs("w4a16", group=group, k=1056))


@pytest.mark.parametrize("kind", KINDS)
def test_replays_in_a_cuda_graph(kind):
    impl, _ = KINDS[kind]
    state = impl.prepare(**inputs(kind))
    x = torch.randn(4, K, device="cuda", dtype=torch.bfloat16)
    eager = impl.apply(state, x)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        impl.apply(state, x)  # warm-up: autotune and compile before capture
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = impl.apply(state, x)
    for _ in range(3):
        graph.replay()
    torch.cuda.synchronize()
    # split-K adds its partial sums atomically, in no fixed order
    assert relative_error(out, eager) < 1e-2
    x.copy_(torch.randn_like(x))
    graph.replay()
    torch.cuda.synchronize()
    assert relative_error(out, impl.apply(state, x)) < 1e-2


@pytest.mark.parametrize("kind", KINDS)
def test_no_rows_give_no_rows(kind):
    impl, _ = KINDS[kind]
    state = impl.prepare(**inputs(kind))
    x = torch.empty(0, K, device="cuda", dtype=torch.bfloat16)
    assert impl.apply(state, x, torch.float32).shape == (0, N)
