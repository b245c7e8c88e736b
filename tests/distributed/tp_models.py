"""Tiny random checkpoints for the tensor-parallel tests, and a helper that runs one engine
(of one or several ranks, on the CPU with gloo) and returns its greedy tokens. (A module
of its own: ``from conftest import`` would find whichever test directory's conftest was
imported first.)"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

# tiny_models.py and quantized_models.py, shared with the model and quantization tests
sys.path.insert(0, str(Path(__file__).parent.parent / "models"))
sys.path.insert(0, str(Path(__file__).parent.parent / "quantization"))

from tiny_models import save_tiny, tiny_hf_model, write_gguf  # noqa: E402

from baseboard import LLM  # noqa: E402
from baseboard.engine.sampling_params import SamplingParams  # noqa: E402

# prompts of several lengths (token ids of the 256-token vocabulary): prefills of
# different sizes in one step, then decodes
PROMPTS = [[3, 17, 200, 45, 9], [31, 77], [5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17], [250]]
MAX_TOKENS = 12


def widened(model):
    """A wider logit spread keeps greedy choices far from ties, which rounding in bf16 (in
    a different order on each number of ranks) could otherwise flip."""
    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)
    return model


def build(path: Path, architecture: str = "LlamaForCausalLM", **overrides) -> Path:
    save_tiny(widened(tiny_hf_model(architecture, **overrides)), path)
    return path


def run(path: Path, tensor_parallel_size: int, dtype: str = "float32",
        params: SamplingParams | None = None, prompts=PROMPTS, **options) -> list:
    """Each prompt's RequestOutput from an engine of ``tensor_parallel_size`` ranks."""
    llm = LLM(str(path), platform="cpu", dtype=dtype, kv_cache_memory=1 << 22, seed=0,
              skip_tokenizer_init=True, tensor_parallel_size=tensor_parallel_size, **options)
    params = params or SamplingParams(max_tokens=MAX_TOKENS, temperature=0, ignore_eos=True,
                                      detokenize=False)
    try:
        return llm.generate([{"prompt_token_ids": p} for p in prompts], params)
    finally:
        llm.engine.close()


def greedy(path: Path, tensor_parallel_size: int, dtype: str = "float32", **options
           ) -> list[list[int]]:
    return [o.outputs[0].token_ids for o in run(path, tensor_parallel_size, dtype, **options)]


def gguf_checkpoint(path: Path, tensor_type: str, architecture: str = "LlamaForCausalLM",
                    **overrides) -> Path:
    """A tiny model written as a GGUF file with every matrix in ``tensor_type``."""
    model = widened(tiny_hf_model(architecture, **overrides))
    return write_gguf(model, path, lambda name: tensor_type)
