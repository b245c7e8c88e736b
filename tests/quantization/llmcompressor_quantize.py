"""Quantize a dense checkpoint with llm-compressor, as its users do, and dequantize
compressed-tensors checkpoints with compressed-tensors' own converter, for the interop
tests.

Runs in the environment ``make interop-env`` builds (llmcompressor pins an older
transformers than baseboard's), never in baseboard's own:

    .venv-interop/bin/python tests/quantization/llmcompressor_quantize.py \
        quantize SRC OUT SCHEME... [--prompt 3,17,200,45] [--new-tokens 8]
    .venv-interop/bin/python tests/quantization/llmcompressor_quantize.py \
        dequantize CHECKPOINT DENSE [CHECKPOINT DENSE ...]

``quantize``: for each SCHEME (an llm-compressor preset: W4A16, W8A8, FP8_DYNAMIC, ...) it
writes
    OUT/SCHEME        the checkpoint ``oneshot`` + ``save_pretrained(save_compressed=True)``
                      writes (round to nearest: these schemes need no calibration data)
    OUT/SCHEME-dense  that checkpoint dequantized by compressed-tensors' own converter,
                      a plain float32 checkpoint
and prints one JSON line: {SCHEME: greedy tokens of llm-compressor's in-memory quantized
model (weights and activations fake-quantized as it simulates them)} for the prompt
given by --prompt (comma-separated ids) and --new-tokens.

``dequantize``: each CHECKPOINT (compressed-tensors, written by anyone) -> DENSE, float32.
"""

from __future__ import annotations

import argparse
import json
import logging
import warnings
from pathlib import Path

import torch


def quantize(src: Path, out: Path, scheme: str, prompt: list[int], new_tokens: int) -> list[int]:
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import QuantizationModifier
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    oneshot(model=model, recipe=QuantizationModifier(targets="Linear", scheme=scheme,
                                                     ignore=["lm_head"]))
    with torch.no_grad():
        tokens = model.generate(torch.tensor([prompt]), max_new_tokens=new_tokens,
                                do_sample=False)[0, len(prompt):].tolist()
    model.save_pretrained(out / scheme, save_compressed=True)
    dequantize(out / scheme, out / f"{scheme}-dense")
    return tokens


def dequantize(checkpoint: Path, dense: Path) -> None:
    from compressed_tensors.entrypoints.convert import convert_checkpoint
    from compressed_tensors.entrypoints.convert.converters.ct_dequantizer import (
        CompressedTensorsDequantizer)

    # the converter knows tensors, not modules: "Linear" would match any ".weight" of an
    # int8 or fp8 layout, so the embedding and the norms are named as not quantized
    dequantizer = CompressedTensorsDequantizer(
        checkpoint, ignore=["re:.*embed_tokens$", "re:.*norm$"], dtype=torch.float32)
    convert_checkpoint(checkpoint, dense, dequantizer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    quantize_args = commands.add_parser("quantize")
    quantize_args.add_argument("src", type=Path)
    quantize_args.add_argument("out", type=Path)
    quantize_args.add_argument("schemes", nargs="+")
    quantize_args.add_argument("--prompt", default="3,17,200,45")
    quantize_args.add_argument("--new-tokens", type=int, default=8)
    dequantize_args = commands.add_parser("dequantize")
    dequantize_args.add_argument("pairs", type=Path, nargs="+", metavar="CHECKPOINT DENSE")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")
    if args.command == "dequantize":
        if len(args.pairs) % 2:
            parser.error("dequantize takes pairs: CHECKPOINT DENSE [CHECKPOINT DENSE ...]")
        for checkpoint, dense in zip(args.pairs[::2], args.pairs[1::2]):
            dequantize(checkpoint, dense)
        return
    prompt = [int(t) for t in args.prompt.split(",")]
    tokens = {scheme: quantize(args.src, args.out, scheme, prompt, args.new_tokens)
              for scheme in args.schemes}
    print(json.dumps(tokens))


if __name__ == "__main__":
    main()
