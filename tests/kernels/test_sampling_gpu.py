"""The Triton sampler on CUDA: the reference's tokens at a real vocabulary size with
penalties and min_p, and the same inside a CUDA graph (nothing reads device values on the
host). Run with `make test-gpu`."""

import pytest
import torch

from baseboard.core.sampling import SamplingTensors, token_counts
from baseboard.kernels.torch import sampling
pytest.importorskip("triton")  # the Triton kernels' own module
from baseboard.kernels.triton import sampling as triton_sampling

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

ROWS, VOCAB = 16, 128256


def make_params(logits: torch.Tensor, gen: torch.Generator, all_greedy: bool,
                filtered: bool) -> SamplingTensors:
    """Half the rows greedy (all of them when all_greedy); min_p and all three penalties over
    histories that hold each row's likeliest tokens."""
    device = logits.device
    temperature = torch.rand(ROWS, generator=gen) + 0.3
    temperature[::2] = 0
    if all_greedy:
        temperature.zero_()
    top = logits.topk(8, dim=-1).indices.cpu()
    generated = [top[r, :4].tolist() * 2 + torch.randint(0, VOCAB, (20,), generator=gen).tolist()
                 for r in range(ROWS)]
    prompt = [top[r, 4:].tolist() + torch.randint(0, VOCAB, (50,), generator=gen).tolist()
              for r in range(ROWS)]

    def uniform(low: float, high: float) -> torch.Tensor:
        return (low + (high - low) * torch.rand(ROWS, generator=gen)).to(device)

    return SamplingTensors(
        temperature.to(device),
        torch.full((ROWS,), 40 if filtered else 0, dtype=torch.int64, device=device),
        torch.full((ROWS,), 0.9 if filtered else 1.0, device=device),
        None if all_greedy else torch.empty(ROWS, VOCAB).exponential_(generator=gen).to(device),
        all_greedy=all_greedy, no_top_k=not filtered, no_top_p=not filtered,
        min_p=uniform(0.0, 0.3), presence_penalty=uniform(-0.5, 1.5),
        frequency_penalty=uniform(-0.5, 1.0), repetition_penalty=uniform(0.8, 2.0),
        output_counts=token_counts(generated, VOCAB, device),
        prompt_mask=token_counts(prompt, VOCAB, device) > 0)


@pytest.mark.parametrize("all_greedy,filtered", [(True, False), (False, False), (False, True)],
                         ids=["greedy", "temperature", "top-k-top-p"])
def test_penalties_and_min_p_give_the_reference_tokens(all_greedy, filtered):
    gen = torch.Generator().manual_seed(3)
    for _ in range(4):
        logits = (torch.randn(ROWS, VOCAB, generator=gen) * 4).cuda()
        params = make_params(logits, gen, all_greedy, filtered)
        got = triton_sampling.sample(logits, params)
        assert got.tolist() == sampling.sample(logits, params).tolist()
        assert got.tolist() != sampling.select_tokens(logits, params).tolist()


def test_sampling_with_penalties_replays_in_a_cuda_graph():
    gen = torch.Generator().manual_seed(4)
    logits = (torch.randn(ROWS, VOCAB, generator=gen) * 4).cuda()
    params = make_params(logits, gen, all_greedy=False, filtered=False)
    triton_sampling.sample(logits, params)  # compiles the kernels outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = triton_sampling.sample(logits, params)
    for _ in range(3):  # new values in the same buffers
        logits.copy_(torch.randn(ROWS, VOCAB, generator=gen) * 4)
        params.noise.copy_(torch.empty(ROWS, VOCAB).exponential_(generator=gen))
        params.output_counts.copy_(torch.randint(0, 3, (ROWS, VOCAB), generator=gen))
        graph.replay()
        assert out.tolist() == sampling.sample(logits, params).tolist()
