"""gemm_w8a8_fp8_block's Triton kernel on CUDA: against the torch reference at every M
bucket of its tiles and on the conformance kit's cases, and inside a CUDA graph (nothing
syncs with the host). Run with `make test-gpu`."""

from __future__ import annotations

import pytest
import torch

from baseboard.kernels.torch import quant_gemm as reference
from baseboard.testing.cases import cases_for
from baseboard.testing.checks import run_case
from baseboard.testing.quantize import quantize_fp8_blocks

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
              pytest.mark.skipif(torch.cuda.is_available()
                                 and torch.cuda.get_device_capability() < (8, 9),
                                 reason="float8_e4m3fn dots need compute capability 8.9+")]

K, N = 1024, 768
ROWS = (1, 5, 16, 33, 64, 200, 1000)  # every M bucket of the kernel's tiles


def kernel():
    from baseboard.kernels.triton.quant_fp8_block import GemmW8A8Fp8Block

    return GemmW8A8Fp8Block


def inputs(block=(128, 128)) -> dict:
    gen = torch.Generator().manual_seed(0)
    qweight, scales = quantize_fp8_blocks(torch.randn((N, K), generator=gen) / K ** 0.5, block)
    bias = (torch.randn(N, generator=gen) * 0.1).to("cuda", torch.bfloat16)
    return dict(qweight=qweight.cuda(), scales=scales.cuda(), block_size=block, bias=bias)


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.float() - want.float()).abs().max() / want.float().abs().max()).item()


@pytest.mark.parametrize("m", ROWS)
@pytest.mark.parametrize("block", [(128, 128), (64, 32)])
def test_matches_the_reference(m, block):
    args = inputs(block)
    x = torch.randn((m, K), device="cuda", dtype=torch.bfloat16)
    got = kernel().apply(kernel().prepare(**args), x)
    want = reference.GemmW8A8Fp8Block.apply(reference.GemmW8A8Fp8Block.prepare(**args), x)
    assert got.dtype == torch.bfloat16 and relative_error(got, want) < 2e-2


@pytest.mark.parametrize("case", cases_for("gemm_w8a8_fp8_block"), ids=lambda c: c.id)
def test_the_conformance_cases(case):
    run_case(case, kernel(), reference.GemmW8A8Fp8Block, torch.device("cuda"))


def test_runs_inside_a_cuda_graph():
    state = kernel().prepare(**inputs())
    x = torch.randn((16, K), device="cuda", dtype=torch.bfloat16)
    eager = kernel().apply(state, x)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        kernel().apply(state, x)  # compile outside the capture
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = kernel().apply(state, x)
    x.copy_(torch.randn_like(x))
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, kernel().apply(state, x)) and not torch.equal(out, eager)
