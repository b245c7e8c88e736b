"""Quantized models end to end on a GPU, each against the bf16 model it was quantized from.

For the Qwen2.5-0.5B and Llama-3-8B shapes (random weights, transformers' own
initialisation) it writes the bf16 checkpoint, then quantizes it to
  gptq-w4-g128   `baseboard quantize --method gptq --bits 4 --group-size 128 --sym`
  ct-w8a16       compressed-tensors W8A16, int8 per channel (the packer of `baseboard
                 quantize`, ``compressed_tensors.quantize_weight``: the command has no
                 w8a16 method)
  fp8            `baseboard quantize --method fp8` (float8_e4m3fn per channel, dynamic
                 per-token activations)
  int8-w8a8      `baseboard quantize --method w8a8-int8`
and loads each with ``LLM`` and the default plan (CUDA graphs on). Per model it reports the
implementation the plan chose for each op, batch-1 and batch-32 decode tokens/s (and the
ratio to bf16), and the greedy-token agreement with the bf16 model over the first 32
tokens of 32 prompts: how many continuations are identical and the mean length of the
common prefix. Random models have close logits, so quantization error flips some tokens
by design; W8 should agree far longer than W4. Where gemlite is installed, the W4 and W8A16
checkpoints also run with it chosen by name (``gemm_w4a16=gemlite`` / ``gemm_w8a16=gemlite``).

One process, within ``--budget-s`` (default 220 s: a run that would end past it, judged
by the last run of its shape, is skipped and listed). To fit, the Llama-3-8B shape keeps 8 of its 32 decoder layers (every
layer at the 8B's widths, the full vocabulary); ``--layers llama3-8b=32`` runs it whole
given the time. Decode tok/s = batch x new tokens / the time of one ``generate`` of a
short prompt (prefill included), after one warm-up call of the same size.

    python benchmarks/quantized_e2e_gpu.py [--shapes qwen2.5-0.5b,llama3-8b]
        [--variants bf16,gptq-w4-g128,ct-w8a16,fp8,int8-w8a8] [--layers llama3-8b=8]
        [--no-gemlite] [--budget-s 220] [--json PATH]
    python benchmarks/quantized_e2e_gpu.py --smoke   (a tiny model on the CPU: checks the
                                                      script)
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from e2e_gpu_workers import SHAPES as E2E_SHAPES  # noqa: E402

SHAPES = {
    "qwen2.5-0.5b": E2E_SHAPES["qwen2.5-0.5b"],
    "llama3-8b": E2E_SHAPES["llama3-8b"],
    # --smoke only: widths that groups of 128 divide
    "tiny": dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=128,
                 intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=512, max_position_embeddings=256),
}
VARIANTS = ("bf16", "gptq-w4-g128", "ct-w8a16", "fp8", "int8-w8a8")
QUANTIZE = {"gptq-w4-g128": dict(method="gptq", bits=4, group_size=128, sym=True),
            "fp8": dict(method="fp8"), "int8-w8a8": dict(method="w8a8-int8")}
GEMLITE = {"gptq-w4-g128": "gemm_w4a16", "ct-w8a16": "gemm_w8a16"}
BATCHES = (1, 32)
AGREEMENT_TOKENS = 32


def write_source(shape: str, layers: int | None, path: Path, device: str) -> Path:
    """A random bf16 checkpoint of ``shape`` (transformers' initialisation), one file."""
    from transformers import AutoConfig, AutoModelForCausalLM

    fields = dict(SHAPES[shape])
    if layers:
        fields["num_hidden_layers"] = layers
    config = AutoConfig.for_model(**fields)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(path, safe_serialization=True, max_shard_size="1000GB")
    del model
    free_memory()
    return path


def write_ct_w8a16(src: Path, dst: Path) -> Path:
    """compressed-tensors W8A16 (int8 per channel, symmetric) of a one-file checkpoint."""
    import shutil

    from safetensors.torch import load_file, save_file

    from baseboard.quantization import compressed_tensors
    from baseboard.quantization.quantize import is_quantized_layer

    shutil.copytree(src, dst)
    tensors = {}
    for name, weight in load_file(src / "model.safetensors").items():
        if not is_quantized_layer(name, tuple(weight.shape)):
            tensors[name] = weight
            continue
        module = name.removesuffix(".weight")
        for part, t in compressed_tensors.quantize_weight(weight, "w8a16", None).items():
            tensors[f"{module}.{part}"] = t
    save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((dst / "config.json").read_text())
    config["quantization_config"] = compressed_tensors.quantization_config("w8a16", None)
    (dst / "config.json").write_text(json.dumps(config, indent=2))
    return dst


def write_variant(src: Path, dst: Path, variant: str) -> Path:
    from baseboard.quantization.quantize import QuantizeOptions, quantize_checkpoint

    if variant == "ct-w8a16":
        return write_ct_w8a16(src, dst)
    return quantize_checkpoint(src, dst, QuantizeOptions(**QUANTIZE[variant]), progress=False)


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def run(path: Path, backends: dict | None, args, prompts: list[list[int]]) -> dict:
    """Greedy tokens of every prompt, decode tok/s per batch and the plan, for one model."""
    from baseboard import LLM, SamplingParams

    llm = LLM(model=str(path), dtype=args.dtype, platform=args.platform, backends=backends,
              max_num_seqs=max(BATCHES), skip_tokenizer_init=True,
              max_model_len=args.prompt_len + max(AGREEMENT_TOKENS, args.new_tokens) + 16)
    try:
        greedy = SamplingParams(temperature=0.0, max_tokens=AGREEMENT_TOKENS, ignore_eos=True,
                                detokenize=False)
        outs = llm.generate([{"prompt_token_ids": p} for p in prompts], greedy)
        tokens = [list(o.outputs[0].token_ids) for o in outs]
        decode = SamplingParams(temperature=0.0, max_tokens=args.new_tokens, ignore_eos=True,
                                detokenize=False)
        tok_s = {}
        for batch in BATCHES:
            batch_prompts = [{"prompt_token_ids": p[:8]} for p in prompts[:batch]]
            llm.generate(batch_prompts, decode)  # warm-up at this batch
            synchronize()
            start = time.perf_counter()
            llm.generate(batch_prompts, decode)
            synchronize()
            tok_s[batch] = batch * args.new_tokens / (time.perf_counter() - start)
        plan = {op: d.selected for op, d in llm.plan.decisions.items()}
        # the lm_head (and any layer left dense) calls gemm; the quantized layers their op
        called = ("gemm", *sorted({s.op for s in llm.resolution.context.quant_schemes}))
    finally:
        llm.engine.close()
        del llm
        free_memory()
    return {"tokens": tokens, "tok_s": tok_s, "plan": plan, "linear_ops": called}


def agreement(tokens: list[list[int]], reference: list[list[int]]) -> dict:
    """Identical continuations and the mean common prefix against the bf16 model's."""
    prefixes = [next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), len(got))
                for got, want in zip(tokens, reference)]
    return {"identical": sum(p == len(t) for p, t in zip(prefixes, tokens)),
            "prompts": len(prefixes), "mean_prefix": sum(prefixes) / len(prefixes)}


def chosen(row: dict) -> str:
    """The implementation of each linear op the model calls, and of attention."""
    return ",".join(f"{op}={row['plan'][op]}" for op in (*row["linear_ops"], "attention"))


class ShapeRuns:
    """One shape's checkpoints (written when first needed), prompts, bf16 reference and
    results."""

    def __init__(self, shape: str, args, tmp: Path):
        self.shape, self.args, self.dir = shape, args, tmp / shape
        self.layers = args.layers.get(shape) or SHAPES[shape]["num_hidden_layers"]
        g = torch.Generator().manual_seed(0)
        self.prompts = torch.randint(0, SHAPES[shape]["vocab_size"],
                                     (max(BATCHES), args.prompt_len), generator=g).tolist()
        self.paths: dict[str, Path] = {}
        self.reference: dict | None = None
        self.results: dict = {"layers": self.layers, "models": {}}
        self.last = 0.0  # seconds of its last run: the estimate of its next one

    def checkpoint(self, variant: str) -> Path:
        if variant not in self.paths:
            start = time.monotonic()
            if variant == "bf16":
                device = "cpu" if self.args.platform == "cpu" else "cuda"
                path = write_source(self.shape, self.layers, self.dir / "bf16", device)
            else:
                path = write_variant(self.checkpoint("bf16"), self.dir / variant, variant)
            self.paths[variant] = path
            print(f"[{self.shape}] {variant} checkpoint written in "
                  f"{time.monotonic() - start:.1f} s ({self.layers} layers)", flush=True)
        return self.paths[variant]

    def measure(self, name: str, variant: str, backends: dict | None) -> None:
        start = time.monotonic()
        try:
            row = run(self.checkpoint(variant), backends, self.args, self.prompts)
        except Exception as exc:  # one failing model must not hide the others
            print(f"{self.shape:13} {name:22} FAILED {exc!r}", flush=True)
            self.results["models"][name] = {"error": repr(exc)}
            return
        if name == "bf16":
            self.reference = row
        row["seconds"] = time.monotonic() - start  # its checkpoint's writing included
        self.last = row["seconds"]
        if self.reference is not None:
            row["agreement"] = agreement(row["tokens"], self.reference["tokens"])
            row["speedup"] = {b: row["tok_s"][b] / self.reference["tok_s"][b] for b in BATCHES}
        self.results["models"][name] = row
        same, speedup = row.get("agreement", {}), row.get("speedup", {})
        print(f"{self.shape:13} {name:22} {row['tok_s'][1]:>8.1f} {speedup.get(1, 0):>5.2f} "
              f"{row['tok_s'][32]:>8.1f} {speedup.get(32, 0):>5.2f} "
              f"{same.get('identical', 0):>3}/{same.get('prompts', 0):<3} "
              f"{same.get('mean_prefix', 0):>6.1f} {row['seconds']:>5.1f}  "
              f"{chosen(row)}", flush=True)


def planned_runs(args) -> list[tuple[str, str, str, dict | None]]:
    """(shape, name, checkpoint variant, backends) in the order they run: every default
    plan first, shape by shape; then gemlite's runs, whose first calls autotune it."""
    shapes = args.shapes.split(",")
    runs = [(shape, variant, variant, None) for shape in shapes for variant in args.variants]
    if args.gemlite:
        runs += [(shape, f"{variant}+gemlite", variant, {GEMLITE[variant]: "gemlite"})
                 for shape in shapes for variant in args.variants if variant in GEMLITE]
    return runs


def parse_layers(text: str) -> dict[str, int]:
    pairs = (part.split("=") for part in text.split(",") if part)
    return {shape: int(count) for shape, count in pairs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="qwen2.5-0.5b,llama3-8b")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--layers", default="llama3-8b=8",
                        help="decoder layers kept per shape (SHAPE=N,...); others: all")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--platform", default=None)
    parser.add_argument("--prompt-len", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=64, help="decode tokens timed")
    parser.add_argument("--no-gemlite", dest="gemlite", action="store_false",
                        help="skip the runs with gemlite chosen by name")
    parser.add_argument("--budget-s", type=float, default=220.0)
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--smoke", action="store_true", help="a tiny model on the CPU")
    args = parser.parse_args()
    if args.smoke:
        args.shapes, args.platform, args.new_tokens, args.layers = "tiny", "cpu", 8, ""
    args.variants = args.variants.split(",")
    if args.variants[0] != "bf16":
        parser.error("--variants must start with bf16: every model is compared with it")
    args.layers = parse_layers(args.layers)
    args.gemlite = args.gemlite and args.platform != "cpu" \
        and importlib.util.find_spec("gemlite") is not None
    deadline = time.monotonic() + args.budget_s
    if torch.cuda.is_available() and args.platform != "cpu":
        print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    print(f"{'shape':13} {'model':22} {'tok/s b1':>8} {'x':>5} {'tok/s b32':>8} {'x':>5} "
          f"{'same':>7} {'prefix':>6} {'s':>5}  implementations", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        shapes = {shape: ShapeRuns(shape, args, Path(tmp)) for shape in args.shapes.split(",")}
        for shape, name, variant, backends in planned_runs(args):
            if time.monotonic() + shapes[shape].last > deadline:
                print(f"{shape:13} {name:22} skipped: it would end past the time budget",
                      flush=True)
                shapes[shape].results["models"][name] = {"skipped": "time budget"}
                continue
            shapes[shape].measure(name, variant, backends)
    results = {shape: runs.results for shape, runs in shapes.items()}
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"dtype": args.dtype, "budget_s": args.budget_s, "gemlite": args.gemlite,
             "agreement_tokens": AGREEMENT_TOKENS, "results": results}, indent=2))


if __name__ == "__main__":
    main()
