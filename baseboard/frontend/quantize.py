"""`baseboard quantize`: write a quantized copy of a Hugging Face checkpoint."""

from __future__ import annotations

import argparse
import sys

from ..quantization.quantize import METHODS


def add_quantize_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", help="Hugging Face directory with config.json and safetensors")
    parser.add_argument("dst", help="new directory to write the quantized checkpoint to")
    parser.add_argument("--method", required=True, choices=METHODS,
                        help="layout to write, by round-to-nearest (no calibration): gptq, "
                             "awq, or compressed-tensors w4a16, w8a8-int8, fp8 (FP8_DYNAMIC)")
    parser.add_argument("--bits", type=int, help="bits per weight (gptq: 4 or 8; default 4)")
    parser.add_argument("--group-size", type=int,
                        help="inputs per scale; -1: one scale per output row (gptq, awq, "
                             "w4a16; default 128)")
    parser.add_argument("--sym", action=argparse.BooleanOptionalAction, default=None,
                        help="symmetric codes, no zero point (gptq and w4a16 default: --sym; "
                             "awq: --no-sym only)")


def run_quantize(args: argparse.Namespace) -> int:
    from ..quantization.quantize import QuantizeOptions, quantize_checkpoint

    options = QuantizeOptions(args.method, args.bits, args.group_size, args.sym)
    dst = quantize_checkpoint(args.src, args.dst, options)
    print(f"wrote {dst} ({args.method})", file=sys.stderr)
    return 0
