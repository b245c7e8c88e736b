"""What a CUDA-graph engine leaves in the process once it is deleted: at most one cuBLAS
workspace (cuBLAS keeps one per stream it has run on, for the life of the process, outside
what torch.cuda.empty_cache() can free). Run with `make test-gpu`."""

import gc

import pytest
import torch

from baseboard import LLM, SamplingParams

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def allocated_after(step) -> int:
    """Bytes allocated on the device once ``step`` has run and its garbage is collected."""
    step()
    gc.collect()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    return torch.cuda.memory_allocated()


def matmuls_on(stream: torch.cuda.Stream) -> None:
    """A product with and one without bias: cuBLAS's and cuBLASLt's paths, so that every
    workspace a stream can get is counted."""
    x = torch.randn(64, 64, dtype=torch.bfloat16, device="cuda")
    with torch.cuda.stream(stream):
        torch.nn.functional.linear(x, x)
        torch.nn.functional.linear(x, x, x[0])
    torch.cuda.synchronize()


def test_a_deleted_engine_leaves_at_most_one_cublas_workspace(llama_head64):
    # torch's own tests free every stream's workspace this way before measuring memory;
    # streams come from a pool of 32, some with a workspace from earlier tests
    clear_workspaces = getattr(torch._C, "_cuda_clearCublasWorkspaces", None)
    if clear_workspaces is None:
        pytest.skip("this torch cannot free cuBLAS workspaces to measure them")
    clear_workspaces()
    baseline = allocated_after(lambda: None)
    # what one stream costs: the workspace(s) cuBLAS gives it
    workspace = allocated_after(lambda: matmuls_on(torch.cuda.Stream())) - baseline
    assert workspace > 0
    clear_workspaces()
    # the default stream's workspace is the process's anyway; steps that replay no graph
    # run there
    before = allocated_after(lambda: matmuls_on(torch.cuda.current_stream()))

    def run_engine() -> None:
        # 11 decode sizes and the prefill lengths: some 16 graphs, each warmed up and
        # captured (a stream each left a workspace each, ~400 MiB on an H200)
        llm = LLM(str(llama_head64), dtype="bfloat16", max_num_seqs=64)
        assert llm.engine.runner.graphs is not None
        llm.generate(["Paris is the capital"] * 3,
                     SamplingParams(temperature=0, max_tokens=4, ignore_eos=True))

    left = allocated_after(run_engine) - before
    assert left <= workspace, (f"{left / 2**20:.0f} MiB still allocated after the engine was "
                               f"deleted; one stream's cuBLAS workspace is "
                               f"{workspace / 2**20:.0f} MiB")
