"""FP8 and compressed-tensors layouts that `baseboard quantize` does not write, on a GPU, end
to end: the fp8 method with 128x128 ``weight_scale_inv`` blocks (DeepSeek-V3 / Qwen3 FP8)
and with per-channel ``weight_scale``, llm-compressor's FP8_BLOCK, and W4A16 with GPTQ's
``actorder: "group"`` (``weight_g_idx``). Each is written from one random Llama by
baseboard's packers, loaded by ``LLM`` with the plan the platform chooses, and compared
with the same model whose checkpoint holds the dequantized weights, with the measurements
and table of ``quantized_checkpoints_gpu.py`` (whose functions this script uses).

The block rows run gemm_w8a8_fp8_block's Triton kernel where the GPU has fp8 dots (its
GEMM alone: benchmarks/fp8_block_gemm.py), inside CUDA graphs.

    python benchmarks/fp8_checkpoints_gpu.py [--shape llama-1b] [--variants fp8-block128,...]
        [--json PATH]
    python benchmarks/fp8_checkpoints_gpu.py --smoke   (tiny model on the CPU)
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quantized_checkpoints_gpu as common  # noqa: E402

BLOCK = (128, 128)
VARIANTS = ("fp8-block128", "fp8-channel", "ct-fp8-block128", "ct-w4a16-g128-act-order")
common.QUANT_OPS = common.QUANT_OPS + ("gemm_w8a8_fp8_block",)


def layer_writer(variant: str):
    """(quantize(name, weight) -> tensors by suffix, quantization_config) of ``variant``."""
    from baseboard.quantization import compressed_tensors, fp8
    from baseboard.quantization.rtn import quantize_rtn

    if variant == "fp8-block128":
        return lambda name, w: fp8.quantize_weight(w, BLOCK), fp8.quantization_config(BLOCK)
    if variant == "fp8-channel":
        return lambda name, w: fp8.quantize_weight(w, None), fp8.quantization_config(None)
    if variant == "ct-fp8-block128":
        return (lambda name, w: compressed_tensors.quantize_weight(w, "fp8-block",
                                                                   block_size=BLOCK),
                compressed_tensors.quantization_config("fp8-block", block_size=BLOCK))
    perms: dict[tuple[str, str], torch.Tensor] = {}

    def act_order(name: str, weight: torch.Tensor) -> dict[str, torch.Tensor]:
        # layers reading one input share GPTQ's permutation (one Hessian)
        parent, _, leaf = name.removesuffix(".weight").rpartition(".")
        key = (parent, {"k_proj": "q_proj", "v_proj": "q_proj", "up_proj": "gate_proj"}.get(
            leaf, leaf))
        perm = perms.setdefault(key, torch.randperm(weight.shape[1]))
        q = quantize_rtn(weight, 4, 128, True, perm)
        return {**compressed_tensors.pack_quantized(q.codes, q.scales, 4),
                "weight_g_idx": q.g_idx.to(torch.int32)}

    config = compressed_tensors.quantization_config("w4a16", 128, True)
    config["config_groups"]["group_0"]["weights"]["actorder"] = "group"
    return act_order, config


def write_variant(src: Path, dst: Path, variant: str) -> Path:
    from safetensors.torch import load_file, save_file

    from baseboard.quantization.quantize import is_quantized_layer

    quantize, quantization_config = layer_writer(variant)
    shutil.copytree(src, dst)
    tensors = {}
    for name, weight in load_file(src / "model.safetensors").items():
        if not is_quantized_layer(name, tuple(weight.shape)):
            tensors[name] = weight
            continue
        module = name.removesuffix(".weight")
        tensors.update({f"{module}.{part}": t for part, t in quantize(name, weight).items()})
    save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((dst / "config.json").read_text())
    config["quantization_config"] = quantization_config
    (dst / "config.json").write_text(json.dumps(config))
    return dst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="llama-1b", choices=common.SHAPES)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--platform", default=None)
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--smoke", action="store_true", help="tiny model on the CPU")
    args = parser.parse_args()
    if args.smoke:
        args.shape, args.platform, args.dtype, args.new_tokens = "tiny", "cpu", "float32", 8

    vocab = common.SHAPES[args.shape]["vocab_size"]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        src = common.make_source(args.shape, Path(tmp) / "src")
        print(f"{'checkpoint':24} {'impls':40} {'same/16':>7} {'prefix':>6} {'dlogp':>8} "
              f"{'x b1':>6} {'x b16':>6}")
        for name in args.variants.split(","):
            try:
                quantized = write_variant(src, Path(tmp) / name, name)
                results[name] = common.measure(name, quantized, Path(tmp), args, vocab)
            except Exception as exc:  # one failing layout must not hide the others
                print(f"{name:24} FAILED: {exc!r}", flush=True)
                results[name] = {"error": repr(exc)}
    if args.json:
        Path(args.json).write_text(json.dumps({"shape": args.shape, "dtype": args.dtype,
                                               "results": results}, indent=2))


if __name__ == "__main__":
    main()
