"""Checkpoints written by the real llm-compressor load in baseboard and run as the same
model with the dequantized weights.

llm-compressor pins an older transformers than baseboard's, so it runs in an environment
of its own (``make interop-env``, built once and kept in .venv-interop), in a subprocess
(``llmcompressor_quantize.py``): it quantizes a tiny random Llama with its W4A16,
W4A16_ASYM, W8A8 (int8), FP8_DYNAMIC and FP8_BLOCK presets, and compressed-tensors' own
converter dequantizes each checkpoint into a dense one. Here, in baseboard's environment:

- every quantized layer baseboard loads dequantizes to compressed-tensors' dense weight;
- baseboard's greedy tokens and logits (torch reference ops, float32) equal those of
  transformers on the dense checkpoint, whose linear inputs are quantized per token for
  the W8A8 schemes as their layers run (int8 with scale amax/127, as vLLM runs them);
- they also equal the tokens of llm-compressor's own in-memory simulation of the quantized
  model. (Its int8 simulation scales activations by amax/127.5, not 127, so W8A8 tokens can
  differ on a near tie; on this model none is near enough.)

The other way round, the checkpoints baseboard's packers write (what ``baseboard
quantize --method w4a16|w8a8-int8|fp8`` writes) are dequantized by compressed-tensors'
converter to the weights baseboard loads from them.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from baseboard.models.loader import load_checkpoint
from baseboard.quantization.records import QuantizedWeight
from ct_reference import fake_quantize_per_token, write_compressed, write_compressed_blocks
from paged_runner import PagedRunner
from tiny_models import save_tiny, tiny_hf_model

ROOT = Path(__file__).resolve().parents[2]
INTEROP_PYTHON = ROOT / ".venv-interop" / "bin" / "python"
SCRIPT = Path(__file__).with_name("llmcompressor_quantize.py")
PROMPT, NEW_TOKENS = [3, 17, 200, 45], 8
# preset -> (the op its layers call, how its activations are quantized)
SCHEMES = {"W4A16": ("gemm_w4a16", None), "W4A16_ASYM": ("gemm_w4a16", None),
           "W8A8": ("gemm_w8a8_int8", "int8"), "FP8_DYNAMIC": ("gemm_w8a8_fp8", "fp8"),
           "FP8_BLOCK": ("gemm_w8a8_fp8_block", "fp8/128")}

pytestmark = pytest.mark.slow  # builds the environment once, then runs llm-compressor


def interop(*args: str) -> str:
    """Run llmcompressor_quantize.py in the interop environment (built on first use);
    its standard output."""
    build = subprocess.run(["make", "-s", "interop-env"], cwd=ROOT, capture_output=True,
                           text=True)
    assert build.returncode == 0, f"make interop-env failed:\n{build.stdout}\n{build.stderr}"
    run = subprocess.run([str(INTEROP_PYTHON), str(SCRIPT), *args], capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, f"{SCRIPT.name} {args[0]} failed:\n{run.stderr[-4000:]}"
    return run.stdout


@pytest.fixture(scope="module")
def quantized(tmp_path_factory) -> tuple[Path, dict[str, list[int]]]:
    """(directory of the checkpoints, llm-compressor's greedy tokens by scheme)."""
    out = tmp_path_factory.mktemp("llmcompressor")
    # every K and N a multiple of 128: whole groups of the W4A16 preset, whole blocks of
    # FP8_BLOCK (so q, k and v still fuse into one block-scaled GEMM)
    save_tiny(tiny_hf_model(hidden_size=128, intermediate_size=256, num_attention_heads=2,
                            num_key_value_heads=2), out / "dense")
    stdout = interop("quantize", str(out / "dense"), str(out), *SCHEMES, "--prompt",
                     ",".join(map(str, PROMPT)), "--new-tokens", str(NEW_TOKENS))
    return out, json.loads(stdout.strip().splitlines()[-1])


def transformers_model(path: Path, activations):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    if activations:
        for name, module in model.named_modules():
            if name.startswith("model.layers.") and isinstance(module, torch.nn.Linear):
                module.register_forward_pre_hook(
                    lambda _, args: (fake_quantize_per_token(args[0], activations),))
    return model


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_layers_dequantize_to_compressed_tensors_own_dense_weights(quantized, scheme,
                                                                   reference_resolution):
    out, _ = quantized
    checkpoint = load_checkpoint(out / scheme, reference_resolution.catalog)
    assert checkpoint.quant_method == "compressed-tensors"
    assert set(checkpoint.linear_ops) == {"gemm", SCHEMES[scheme][0]}  # lm_head ignored
    dense = load_file(out / f"{scheme}-dense" / "model.safetensors")
    weights = dict(checkpoint.weights())
    assert set(weights) == set(dense)
    quantized_layers = [n for n, w in weights.items() if isinstance(w, QuantizedWeight)]
    assert len(quantized_layers) == 7 * 2  # q, k, v, o, gate, up, down in both layers
    for name in quantized_layers:
        got, want = weights[name].dequantize(), dense[name]
        # int8 and fp8 codes times a scale round once, as compressed-tensors does; a 4-bit
        # code u * scale - u_zero * scale rounds twice where (q - zero) * scale rounds once
        atol = 4 * torch.finfo(torch.float32).eps * float(want.abs().max()) \
            if scheme.startswith("W4A16") else 0
        torch.testing.assert_close(got, want, rtol=0, atol=atol, msg=name)


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_greedy_tokens_equal_the_dequantized_model(quantized, scheme, reference_resolution):
    out, simulated = quantized
    reference = transformers_model(out / f"{scheme}-dense", SCHEMES[scheme][1])
    tokens = PROMPT + [6, 56, 153, 224]  # any continuation: teacher-forced
    with torch.no_grad():
        want_logits = reference(torch.tensor([tokens])).logits[0, len(PROMPT) - 1:]
        want = reference.generate(torch.tensor([PROMPT]), max_new_tokens=NEW_TOKENS,
                                  do_sample=False)[0, len(PROMPT):].tolist()
    checkpoint = load_checkpoint(out / scheme, reference_resolution.catalog)
    plan = reference_resolution.plan
    runner = PagedRunner(checkpoint.model_class, checkpoint.config, plan, checkpoint.weights())
    got_logits = [runner.step({0: PROMPT})[0]] + [runner.step({0: [t]})[0]
                                                   for t in tokens[len(PROMPT):]]
    torch.testing.assert_close(torch.stack(got_logits), want_logits, atol=1e-4, rtol=1e-4)
    fresh = PagedRunner(checkpoint.model_class, checkpoint.config, plan, checkpoint.weights())
    got = fresh.greedy(PROMPT, NEW_TOKENS)
    assert got == want
    assert got == simulated[scheme]


# baseboard's packers -> (their arguments); scales of the packed layouts are float16
OURS = {"w4a16-g32-sym": ("w4a16", 32, True), "w4a16-g32-asym": ("w4a16", 32, False),
        "w4a16-channel-asym": ("w4a16", None, False), "w8a16-g32": ("w8a16", 32, True),
        "w8a8-int8": ("w8a8-int8", None, True), "fp8": ("fp8", None, True),
        "fp8-block": ("fp8-block", None, True)}


@pytest.fixture(scope="module")
def ours(tmp_path_factory) -> Path:
    """Our checkpoints in OURS, each beside its dense copy by compressed-tensors."""
    out = tmp_path_factory.mktemp("ours")
    pairs = []
    for name, (scheme, group_size, symmetric) in OURS.items():
        if scheme == "fp8-block":
            write_compressed_blocks(tiny_hf_model(), out / name, (32, 32))
        else:
            write_compressed(tiny_hf_model(), out / name, scheme, group_size, symmetric)
        pairs += [str(out / name), str(out / f"{name}-dense")]
    interop("dequantize", *pairs)
    return out


@pytest.mark.parametrize("name", list(OURS))
def test_compressed_tensors_reads_what_baseboard_writes(ours, name, reference_resolution):
    weights = dict(load_checkpoint(ours / name, reference_resolution.catalog).weights())
    dense = load_file(ours / f"{name}-dense" / "model.safetensors")
    assert set(weights) == set(dense)
    layers = [n for n, w in weights.items() if isinstance(w, QuantizedWeight)]
    assert len(layers) == 7 * 2
    for layer in layers:
        got, want = weights[layer].dequantize(), dense[layer]
        # compressed-tensors computes (q - zero) * scale in the scale's dtype: float16 for
        # the packed layouts, float32 for the others
        packed = OURS[name][0] in ("w4a16", "w8a16")
        eps = torch.finfo(torch.float16 if packed else torch.float32).eps
        torch.testing.assert_close(got, want, rtol=0, atol=eps * float(want.abs().max()),
                                   msg=layer)
