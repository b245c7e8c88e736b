"""`baseboard serve`: an OpenAI-compatible HTTP server (baseboard/serve/) on one engine."""

from __future__ import annotations

import argparse
import sys

from ..core.errors import ConfigError
from ..models.embedded import DEFAULT_MODEL
from .generate import backend_flags

SERVE_PACKAGES = ("fastapi", "uvicorn", "prometheus_client")


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The serve flags (the caller adds --platform, --backend and --plan)."""
    parser.add_argument("model", nargs="?", default=DEFAULT_MODEL,
                        help="Hugging Face directory, .gguf file or embedded model name "
                             "(default: smollm2)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000,
                        help="port to listen on; 0 picks a free one (default: 8000)")
    parser.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on every "
                                          "endpoint but /health")
    parser.add_argument("--served-model-name",
                        help="the model name requests give (default: MODEL as given)")
    parser.add_argument("--max-waiting", type=int, default=256,
                        help="most sequences waiting to be scheduled; more are refused with "
                             "503 (default: 256)")
    parser.add_argument("--max-num-seqs", type=int,
                        help="sequences run together in one step (default: 256)")
    parser.add_argument("--max-model-len", type=int,
                        help="prompt + completion tokens (default: the model's limit)")
    parser.add_argument("--dtype", default="auto",
                        help="auto, bfloat16, float16 or float32 (default: auto)")
    parser.add_argument("--seed", type=int, help="seed of the engine's sampling")
    parser.add_argument("--tensor-parallel-size", type=int, default=1, metavar="N",
                        help="split the model over N devices (N processes; default: 1)")


def run_serve(args: argparse.Namespace) -> int:
    """Load the model, then serve until SIGTERM or Ctrl-C (running requests finish first)."""
    _check_installed()
    if args.max_waiting < 1:
        raise ConfigError(f"--max-waiting {args.max_waiting} is invalid; give at least 1.")
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port} is invalid; give a port in 0..65535 (0 picks "
                          f"a free one).")
    from ..serve import server
    from ..serve.app import ServeConfig, create_app
    from ..serve.async_engine import AsyncEngine
    from ..serve.engine_process import EngineProcess

    listener = server.bind(args.host, args.port)
    engine_args = {"max_num_seqs": args.max_num_seqs} if args.max_num_seqs is not None else {}
    process = EngineProcess(dict(
        model=args.model, dtype=args.dtype, platform=args.platform,
        max_model_len=args.max_model_len, cli_backends=backend_flags(args.backend),
        plan_path=args.plan, seed=args.seed, tensor_parallel_size=args.tensor_parallel_size,
        **engine_args))
    engine = AsyncEngine(process, max_waiting=args.max_waiting)
    try:
        info = process.info
        for line in info.warnings:
            print(f"baseboard: warning: {line}", file=sys.stderr)
        print(f"baseboard serve: platform {info.platform}, dtype {info.dtype}, max_model_len "
              f"{info.max_model_len}, max_num_seqs {info.max_num_seqs}", file=sys.stderr)
        print("baseboard serve: implementations " + ", ".join(
            f"{op}={name}" for op, name in info.implementations.items()), file=sys.stderr)
        app = create_app(engine, ServeConfig(
            served_model_name=args.served_model_name or args.model, api_key=args.api_key))
        server.run(app, listener)
    finally:
        engine.shutdown()  # a no-op once the app's lifespan has stopped it
    return 0


def _check_installed() -> None:
    import importlib.util

    missing = [name for name in SERVE_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(f"`baseboard serve` needs {', '.join(missing)}, which is not "
                          f"installed; install it with `pip install baseboard[serve]`.")
