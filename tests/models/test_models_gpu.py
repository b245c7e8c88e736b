"""The model on a CUDA GPU: reference ops in float32 (exact against transformers on the
CPU), and the cuda platform's own choices in bfloat16."""

from __future__ import annotations

import pytest
import torch

from baseboard.core.ops import OPS
from baseboard.models.loader import load_checkpoint
from baseboard.frontend.plan import resolve_plan
from paged_runner import PagedRunner
from tiny_models import save_tiny, tiny_hf_model, transformers_from_gguf, write_gguf

pytestmark = pytest.mark.gpu
TOKENS = [3, 17, 200, 45, 9, 31, 77, 5]


# head size and block size within what the GPU attention kernels take
SHAPE = dict(hidden_size=256, num_attention_heads=4, num_key_value_heads=2)
BLOCK_SIZE = 16


def run_on_gpu(checkpoint, plan, dtype) -> torch.Tensor:
    runner = PagedRunner(checkpoint.model_class, checkpoint.config, plan, checkpoint.weights(),
                         dtype=dtype, device="cuda", block_size=BLOCK_SIZE)
    got = [runner.step({0: TOKENS[:5]})[0]] + [runner.step({0: [t]})[0] for t in TOKENS[5:]]
    return torch.stack(got)


def reference(model) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([TOKENS])).logits[0, 4:]


@pytest.fixture(scope="module", params=["safetensors", "gguf"])
def checkpoint_and_reference(request, tmp_path_factory):
    """(path, the transformers model it holds); the GGUF case skips without gguf."""
    root = tmp_path_factory.mktemp(request.param)
    if request.param == "safetensors":
        hf = tiny_hf_model("Qwen2ForCausalLM", tie_word_embeddings=True, **SHAPE)
        return save_tiny(hf, root / "hf"), hf
    gguf_path = write_gguf(tiny_hf_model("LlamaForCausalLM", **SHAPE), root / "tiny.gguf",
                           lambda name: "Q8_0" if "self_attn" in name else "Q4_1")
    return gguf_path, transformers_from_gguf(gguf_path)


def test_reference_ops_on_the_gpu_match_transformers(checkpoint_and_reference):
    resolution = resolve_plan(platform="cuda", dtype=torch.float32,
                              backends={op: "torch" for op in OPS},
                              environ={"BASEBOARD_CUDA_GRAPHS": "0"})  # torch attention: eager
    path, hf = checkpoint_and_reference
    got = run_on_gpu(load_checkpoint(path, resolution.catalog), resolution.plan, torch.float32)
    torch.testing.assert_close(got, reference(hf), atol=1e-4, rtol=1e-4)


def test_platform_choices_in_bfloat16_stay_close_to_transformers(checkpoint_and_reference):
    resolution = resolve_plan(platform="cuda", dtype=torch.bfloat16, head_dim=64, num_heads=4,
                         num_kv_heads=2, block_size=BLOCK_SIZE)
    path, hf = checkpoint_and_reference
    got = run_on_gpu(load_checkpoint(path, resolution.catalog), resolution.plan, torch.bfloat16)
    want = reference(hf)
    assert (got - want).abs().max() < 0.05 * want.abs().max(), resolution.plan.selected()
