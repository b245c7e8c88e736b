"""The `baseboard` command: info | generate | serve | quantize."""

from __future__ import annotations

import argparse
import sys

from .core.errors import BaseboardError


def add_selection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--platform", help="platform name (overrides detection)")
    parser.add_argument("--backend", action="append", metavar="OP=NAME",
                        help="explicit implementation for an op; repeatable")
    parser.add_argument("--plan", metavar="FILE", help="replay a plan JSON file")


def build_parser() -> argparse.ArgumentParser:
    from .frontend.generate import add_generate_arguments, run_generate
    from .frontend.info import add_info_arguments, run_info
    from .frontend.quantize import add_quantize_arguments, run_quantize
    from .frontend.serve import add_serve_arguments, run_serve

    parser = argparse.ArgumentParser(prog="baseboard", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    info = commands.add_parser("info", help="environment, platforms, plugins and the op plan "
                                            "of a model's load")
    add_selection_arguments(info)
    add_info_arguments(info)
    info.set_defaults(run=run_info)
    generate = commands.add_parser("generate", help="generate text (streams to stdout)")
    add_selection_arguments(generate)
    add_generate_arguments(generate)
    generate.set_defaults(run=run_generate)
    serve = commands.add_parser("serve", help="an OpenAI-compatible HTTP server")
    add_selection_arguments(serve)
    add_serve_arguments(serve)
    serve.set_defaults(run=run_serve)
    quantize = commands.add_parser("quantize", help="write a quantized copy of a Hugging Face "
                                                    "checkpoint (round-to-nearest)")
    add_quantize_arguments(quantize)
    quantize.set_defaults(run=run_quantize)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except BaseboardError as exc:
        print(f"baseboard: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nbaseboard: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
