"""Tensor parallelism on two GPUs, in one command: the conformance kit's communication
cases, tp=1 calling no collective, greedy tokens of tp=2 against tp=1 on the Llama-3-8B
shape (random bf16 weights), and decode throughput of tp=1 and tp=2 at batch 1 and 32.

    python benchmarks/tp_gpu.py [--steps conformance,tp1,parity,e2e] [--size 2]
        [--json PATH] [--workdir DIR]
    python benchmarks/tp_gpu.py --smoke      (the tiny shape on the CPU, gloo: checks the
                                             script in a minute or two)

Every engine runs in a fresh process (``--size`` ranks: that process and its workers).
The e2e step runs e2e_gpu_workers.py's baseboard worker (prompt 128 tokens, 128 new,
greedy, the median of 3 calls after a full-length warm-up) for tp=1 and tp=N on one
checkpoint, and reports tp=N's speedup; the issue asks for at least 1.6x at batch 1.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
WORKERS = str(HERE / "e2e_gpu_workers.py")
PARITY_PROMPTS, PARITY_PROMPT_LEN, PARITY_NEW_TOKENS = 4, 128, 64


def conformance(args) -> dict:
    """Every all_reduce and all_gather implementation registered for this platform, on
    every case of the kit's grid (world 2)."""
    import torch

    from baseboard.testing.cases import cases_for
    from baseboard.testing.collective_check import check_collectives
    from baseboard.testing.kit import open_kit

    kit = open_kit([], "cpu" if args.smoke else None)
    device = torch.device("cpu") if args.smoke else kit.platform.device()
    result = {}
    for op in ("all_reduce", "all_gather"):
        reference = kit.reference(op)
        for impl in kit.catalog.registry.for_op(op):
            if kit.unavailable(impl):
                continue
            cases = [c for c in cases_for(op) if not kit.rejection(impl, c.context(kit.platform))]
            failures = check_collectives(cases, kit.bound(impl), reference, device)
            result[f"{op}={impl.name}"] = {"cases": len(cases), "failed": failures}
            print(f"  {op}={impl.name} ({impl.plugin}): {len(cases) - len(failures)} of "
                  f"{len(cases)} cases pass", flush=True)
            for case_id, text in failures.items():
                print(f"    {case_id}: {text[:400]}", flush=True)
    return result


def _engine(checkpoint: str, size: int, device: str, max_num_seqs: int):
    from baseboard import LLM

    return LLM(checkpoint, dtype="bfloat16", max_num_seqs=max_num_seqs,
               max_model_len=PARITY_PROMPT_LEN + PARITY_NEW_TOKENS + 16,
               skip_tokenizer_init=True, tensor_parallel_size=size,
               platform="cpu" if device == "cpu" else None,
               kv_cache_memory=1 << 26 if device == "cpu" else None)


def _greedy(llm, vocab: int, new_tokens: int) -> list[list[int]]:
    from baseboard import SamplingParams
    from e2e_gpu_workers import prompts

    params = SamplingParams(temperature=0, max_tokens=new_tokens, ignore_eos=True,
                            detokenize=False)
    batch = [{"prompt_token_ids": p}
             for p in prompts(PARITY_PROMPTS, PARITY_PROMPT_LEN, vocab, seed=7)]
    return [o.outputs[0].token_ids for o in llm.generate(batch, params)]


def worker_tp1(args) -> dict:
    """tp=1: the model holds no TensorParallel and a generate calls no torch.distributed
    collective (each is counted while it runs)."""
    import torch.distributed as dist

    from e2e_gpu_workers import SHAPES

    calls: dict[str, int] = {}
    names = ("all_reduce", "all_gather", "all_gather_into_tensor", "broadcast",
             "broadcast_object_list")
    for name in names:
        if hasattr(dist, name):
            original = getattr(dist, name)

            def counted(*a, _name=name, _original=original, **k):
                calls[_name] = calls.get(_name, 0) + 1
                return _original(*a, **k)

            setattr(dist, name, counted)
    llm = _engine(args.checkpoint, 1, args.device, PARITY_PROMPTS)
    _greedy(llm, SHAPES[args.shape]["vocab_size"], 16)
    return {"parallel": llm.engine.model.parallel is not None,
            "channel": llm.engine.channel is not None, "collective_calls": calls}


def worker_greedy(args) -> dict:
    from e2e_gpu_workers import SHAPES

    llm = _engine(args.checkpoint, args.size, args.device, PARITY_PROMPTS)
    tokens = _greedy(llm, SHAPES[args.shape]["vocab_size"], PARITY_NEW_TOKENS)
    llm.engine.close()
    return {"tokens": tokens}


def run_python(command: list[str], label: str, timeout: float = 1800) -> dict:
    """Run a worker in a fresh interpreter; its JSON result or {"error": ...}."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        result_path = f.name
    print(f"[{time.strftime('%H:%M:%S')}] {label} ...", flush=True)
    try:
        done = subprocess.run([sys.executable, *command, "--result", result_path], text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if done.returncode != 0:
        tail = done.stdout.splitlines()[-20:]
        print("  failed:\n    " + "\n    ".join(tail), flush=True)
        return {"error": f"exit {done.returncode}: " + " | ".join(tail[-3:])}
    with open(result_path) as f:
        result = json.load(f)
    os.unlink(result_path)
    return result


def own(worker: str, args, checkpoint: str, **options) -> list[str]:
    command = [__file__, worker, "--shape", args.shape, "--checkpoint", checkpoint,
               "--device", args.device]
    for key, value in options.items():
        command += [f"--{key.replace('_', '-')}", str(value)]
    return command


def parity(args, checkpoint: str) -> dict:
    one = run_python(own("_greedy", args, checkpoint, size=1), "greedy tokens, tp=1")
    many = run_python(own("_greedy", args, checkpoint, size=args.size),
                      f"greedy tokens, tp={args.size}")
    if "error" in one or "error" in many:
        return {"error": one.get("error") or many.get("error")}
    same = [next((i for i, (a, b) in enumerate(zip(x, y)) if a != b), len(x))
            for x, y in zip(one["tokens"], many["tokens"])]
    exact = one["tokens"] == many["tokens"]
    print(f"  tp={args.size} greedy tokens equal tp=1's: {exact} (identical leading tokens per "
          f"prompt: {same} of {PARITY_NEW_TOKENS})", flush=True)
    return {"exact": exact, "identical_prefix": same, "tp1": one["tokens"],
            f"tp{args.size}": many["tokens"]}


def e2e(args, checkpoint: str) -> dict:
    results = {}
    for size in (1, args.size):
        results[size] = run_python(
            [WORKERS, "baseboard", "--shape", args.shape, "--checkpoint", checkpoint,
             "--device", args.device, "--batches", ",".join(map(str, args.batches)),
             "--repeats", str(args.repeats), "--prompt-len", str(args.prompt_len),
             "--new-tokens", str(args.new_tokens), "--tensor-parallel-size", str(size)],
            f"e2e tp={size}")
    print(f"\n{'batch':>6}{'tp=1 tok/s':>14}{f'tp={args.size} tok/s':>14}{'speedup':>10}")
    rows = []
    for b in args.batches:
        one = results[1].get("batches", {}).get(str(b), {}).get("tok_s")
        many = results[args.size].get("batches", {}).get(str(b), {}).get("tok_s")
        speedup = many / one if one and many else None
        rows.append({"batch": b, "tp1_tok_s": one, f"tp{args.size}_tok_s": many,
                     "speedup": speedup})
        print(f"{b:>6}{one or 0:>14.1f}{many or 0:>14.1f}"
              f"{speedup if speedup is not None else float('nan'):>10.2f}")
    return {"rows": rows, "runs": {str(k): v for k, v in results.items()}}


def drive(args) -> None:
    import torch

    record = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
              "args": vars(args), "torch": torch.__version__}
    if not args.smoke:
        record["devices"] = [torch.cuda.get_device_name(i)
                             for i in range(torch.cuda.device_count())]
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        checkpoint = os.path.join(tmp, args.shape)
        if "conformance" in args.steps:
            print("conformance kit, communication ops", flush=True)
            record["conformance"] = conformance(args)
        if {"tp1", "parity", "e2e"} & set(args.steps):
            record["checkpoint"] = run_python(
                [WORKERS, "checkpoint", "--shape", args.shape, "--checkpoint", checkpoint,
                 "--device", args.device], f"random {args.shape} checkpoint")
        if "tp1" in args.steps:
            record["tp1"] = found = run_python(own("_tp1", args, checkpoint), "tp=1 engine")
            print(f"  tp=1: model parallel {found.get('parallel')}, channel "
                  f"{found.get('channel')}, collective calls {found.get('collective_calls')}",
                  flush=True)
        if "parity" in args.steps:
            record["parity"] = parity(args, checkpoint)
        if "e2e" in args.steps:
            record["e2e"] = e2e(args, checkpoint)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(record, f, indent=2)


WORKER_FUNCTIONS = {"_tp1": worker_tp1, "_greedy": worker_greedy}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in WORKER_FUNCTIONS:
        parser = argparse.ArgumentParser()
        parser.add_argument("worker")
        parser.add_argument("--shape", required=True)
        parser.add_argument("--checkpoint", required=True)
        parser.add_argument("--device", default="cuda")
        parser.add_argument("--size", type=int, default=1)
        parser.add_argument("--result", required=True)
        args = parser.parse_args()
        result = WORKER_FUNCTIONS[args.worker](args)
        with open(args.result, "w") as f:
            json.dump(result, f)
        return
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=lambda t: [s for s in t.split(",") if s],
                        default=["conformance", "tp1", "parity", "e2e"])
    parser.add_argument("--size", type=int, default=2, help="ranks (GPUs) of the tp runs")
    parser.add_argument("--shape", default="llama3-8b")
    parser.add_argument("--batches", type=lambda t: [int(x) for x in t.split(",") if x],
                        default=[1, 32])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--workdir", help="where the checkpoint is written (default: /tmp)")
    parser.add_argument("--smoke", action="store_true", help="tiny shape, CPU, gloo")
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.smoke:
        args.shape, args.device, args.batches = "tiny", "cpu", [1, 2]
        args.prompt_len, args.new_tokens, args.repeats = 16, 8, 2
    drive(args)


if __name__ == "__main__":
    main()
