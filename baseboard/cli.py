"""The `baseboard` command: info | generate."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .core.errors import BaseboardError
from .core.selection import parse_backend_spec


def backend_flags(values: list[str] | None) -> dict[str, str]:
    """Merge repeated `--backend op=name[,op=name]` flags."""
    merged: dict[str, str] = {}
    for value in values or []:
        merged.update(parse_backend_spec(value, "--backend"))
    return merged


def add_selection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--platform", help="platform name (overrides detection)")
    parser.add_argument("--backend", action="append", metavar="OP=NAME",
                        help="explicit implementation for an op; repeatable")
    parser.add_argument("--plan", metavar="FILE", help="replay a plan JSON file")


def _info(args: argparse.Namespace) -> int:
    from .frontend.info import collect, render

    info = collect(platform=args.platform, cli_backends=backend_flags(args.backend),
                   plan_path=args.plan)
    if args.save_plan:
        Path(args.save_plan).write_text(json.dumps(info["plan"], indent=2) + "\n")
    print(json.dumps(info, indent=2, default=str) if args.json else render(info))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="baseboard", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    info = commands.add_parser("info", help="environment, platforms, plugins and the op plan")
    add_selection_arguments(info)
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.add_argument("--save-plan", metavar="FILE", help="write the resolved plan as JSON")
    info.set_defaults(run=_info)
    try:
        from .frontend.generate import add_generate_arguments, run_generate
    except ImportError:
        return parser
    generate = commands.add_parser("generate", help="generate text (streams to stdout)")
    add_selection_arguments(generate)
    add_generate_arguments(generate)
    generate.set_defaults(run=run_generate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except BaseboardError as exc:
        print(f"baseboard: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
