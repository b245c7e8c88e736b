"""Quantized checkpoints on a GPU, end to end: a random Llama quantized by `baseboard
quantize` (and one GPTQ act-order checkpoint, which the command does not write) is loaded by
``LLM`` with the plan the platform chooses, and compared with the same model whose
checkpoint holds the dequantized weights (dense, so its linear layers call ``gemm``).

Per checkpoint it prints the implementation chosen for each quantized op, how many of the
prompts' greedy continuations equal the dense model's token for token (and the mean length
of the common prefix: random models have close logits, so a late flip from a different
rounding is expected, an early one is a bug), the largest difference of the first step's
log-probabilities of the chosen tokens, and decode tokens/s at batch 1 and 16 against the
dense model. w8a8-int8 and fp8 also quantize the activations, which the dense model does
not: their differences are larger by design.

    python benchmarks/quantized_checkpoints_gpu.py [--shape llama-1b] [--methods gptq,...]
        [--json PATH]
    python benchmarks/quantized_checkpoints_gpu.py --smoke   (tiny model on the CPU)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

SHAPES = {
    "llama-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=8,
                     num_attention_heads=32, num_key_value_heads=8, vocab_size=32000),
    "tiny": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, vocab_size=512),
}
# name -> (quantize options, or "act-order" for the GPTQ desc_act checkpoint written here)
VARIANTS = {
    "gptq-4bit-g128-sym": dict(method="gptq", bits=4, group_size=128, sym=True),
    "gptq-4bit-g128-asym": dict(method="gptq", bits=4, group_size=128, sym=False),
    "gptq-4bit-act-order": "act-order",
    "gptq-8bit-channel-sym": dict(method="gptq", bits=8, group_size=-1, sym=True),
    "awq-g128": dict(method="awq", group_size=128),
    "w4a16-g128": dict(method="w4a16", group_size=128),
    "w8a8-int8": dict(method="w8a8-int8"),
    "fp8": dict(method="fp8"),
}
QUANT_OPS = ("gemm_w4a16", "gemm_w8a16", "gemm_w8a8_int8", "gemm_w8a8_fp8")


def make_source(shape: str, path: Path) -> Path:
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model("llama", max_position_embeddings=1024,
                                  tie_word_embeddings=False, **SHAPES[shape])
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    for p in model.parameters():  # wider than 0.02: peakier logits, fewer near-ties
        p.data.normal_(0, 0.05)
    model.save_pretrained(path, safe_serialization=True)
    return path


def write_act_order(src: Path, dst: Path, group_size: int = 128) -> Path:
    """GPTQ 4-bit asym with desc_act: each input's group follows a permutation shared by
    the layers that read the same input (as GPTQ's common Hessian makes it)."""
    import shutil

    from safetensors.torch import load_file, save_file

    from baseboard.quantization import gptq
    from baseboard.quantization.quantize import is_quantized_layer
    from baseboard.quantization.rtn import quantize_rtn

    shutil.copytree(src, dst)
    tensors, perms = {}, {}
    for name, weight in load_file(src / "model.safetensors").items():
        if not is_quantized_layer(name, tuple(weight.shape)):
            tensors[name] = weight
            continue
        module = name.removesuffix(".weight")
        parent, _, leaf = module.rpartition(".")
        key = (parent, {"k_proj": "q_proj", "v_proj": "q_proj", "up_proj": "gate_proj"}.get(
            leaf, leaf))
        perm = perms.setdefault(key, torch.randperm(weight.shape[1]))
        q = quantize_rtn(weight, 4, group_size, False, perm)
        for part, t in gptq.pack(q.codes, q.scales, q.zeros, q.g_idx, 4).items():
            tensors[f"{module}.{part}"] = t
    save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((dst / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "gptq", "bits": 4,
                                     "group_size": group_size, "sym": False,
                                     "desc_act": True, "checkpoint_format": "gptq"}
    (dst / "config.json").write_text(json.dumps(config))
    return dst


def write_dense(quantized: Path, dst: Path) -> tuple[Path, tuple[str, ...]]:
    """The checkpoint with baseboard's own dequantization of every record, float32; and the
    ops the quantized checkpoint's linear layers call."""
    from safetensors.torch import save_file

    from baseboard.frontend.plan import load_catalog
    from baseboard.core.settings import read_settings
    from baseboard.models.loader import load_checkpoint
    from baseboard.quantization.records import QuantizedWeight

    checkpoint = load_checkpoint(quantized, load_catalog(read_settings({})))
    tensors = {n: (w.dequantize() if isinstance(w, QuantizedWeight) else w.float()).contiguous()
               for n, w in checkpoint.weights()}
    dst.mkdir()
    config = json.loads((quantized / "config.json").read_text())
    config.pop("quantization_config")
    (dst / "config.json").write_text(json.dumps(config))
    save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})
    return dst, checkpoint.linear_ops


def run(path: Path, args, vocab: int) -> dict:
    from baseboard import LLM, SamplingParams

    llm = LLM(model=str(path), dtype=args.dtype, max_num_seqs=16, max_model_len=512,
              skip_tokenizer_init=True, platform=args.platform)
    g = torch.Generator().manual_seed(0)
    prompts = torch.randint(0, vocab, (16, args.prompt_len), generator=g).tolist()
    params = SamplingParams(temperature=0.0, max_tokens=args.new_tokens, ignore_eos=True,
                            detokenize=False, logprobs=0)
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params)
    tokens = [o.outputs[0].token_ids for o in outs]
    first = [next(iter(o.outputs[0].logprobs[0].values())) for o in outs]
    first = [getattr(lp, "logprob", lp) for lp in first]
    speed = {}
    for batch in (1, 16):
        decode = SamplingParams(temperature=0.0, max_tokens=64, ignore_eos=True,
                                detokenize=False)
        batch_prompts = [{"prompt_token_ids": p[:8]} for p in prompts[:batch]]
        llm.generate(batch_prompts, decode)  # warm-up
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        llm.generate(batch_prompts, decode)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        speed[batch] = batch * 64 / (time.perf_counter() - start)
    chosen = {op: d.selected for op, d in llm.plan.decisions.items() if op in QUANT_OPS}
    del llm
    return {"tokens": tokens, "first_logprob": first, "tok_s": speed, "impls": chosen}


def compare(got: dict, want: dict) -> dict:
    prefixes = []
    for a, b in zip(got["tokens"], want["tokens"]):
        same = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), len(a))
        prefixes.append(same)
    return {"identical": sum(p == len(a) for p, a in zip(prefixes, got["tokens"])),
            "mean_prefix": sum(prefixes) / len(prefixes),
            "first_logprob_diff": max(abs(x - y) for x, y in
                                      zip(got["first_logprob"], want["first_logprob"])),
            "speedup_b1": got["tok_s"][1] / want["tok_s"][1],
            "speedup_b16": got["tok_s"][16] / want["tok_s"][16]}


def measure(name: str, quantized: Path, tmp: Path, args, vocab: int) -> dict:
    """Run ``quantized`` and the dense checkpoint of its dequantized weights; print and
    return their comparison (tokens, log-probabilities, speeds, kernels chosen)."""
    dense, ops = write_dense(quantized, tmp / f"{name}-dense")
    got, want = run(quantized, args, vocab), run(dense, args, vocab)
    impls = {op: impl for op, impl in got["impls"].items() if op in ops}
    row = {**compare(got, want), "impls": impls,
           "tok_s": got["tok_s"], "dense_tok_s": want["tok_s"]}
    chosen = ",".join(f"{op}={impl}" for op, impl in impls.items())
    print(f"{name:24} {chosen:40} {row['identical']:>7} {row['mean_prefix']:>6.1f} "
          f"{row['first_logprob_diff']:>8.4f} {row['speedup_b1']:>6.2f} "
          f"{row['speedup_b16']:>6.2f}", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="llama-1b", choices=SHAPES)
    parser.add_argument("--methods", default=",".join(VARIANTS))
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--platform", default=None)
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--smoke", action="store_true", help="tiny model on the CPU")
    args = parser.parse_args()
    if args.smoke:
        args.shape, args.platform, args.dtype, args.new_tokens = "tiny", "cpu", "float32", 8

    from baseboard.quantization.quantize import QuantizeOptions, quantize_checkpoint

    vocab = SHAPES[args.shape]["vocab_size"]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        src = make_source(args.shape, Path(tmp) / "src")
        print(f"{'checkpoint':24} {'impls':40} {'same/16':>7} {'prefix':>6} {'dlogp':>8} "
              f"{'x b1':>6} {'x b16':>6}")
        for name in args.methods.split(","):
            variant = VARIANTS[name]
            quantized = Path(tmp) / name
            if variant == "act-order":
                write_act_order(src, quantized)
            else:
                quantize_checkpoint(src, quantized, QuantizeOptions(**variant), progress=False)
            results[name] = measure(name, quantized, Path(tmp), args, vocab)
    if args.json:
        Path(args.json).write_text(json.dumps({"shape": args.shape, "dtype": args.dtype,
                                               "results": results}, indent=2))


if __name__ == "__main__":
    main()
