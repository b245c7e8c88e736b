"""End-to-end generation on a GPU: baseboard against transformers `generate`, each engine in a
process of its own, both measured in the same run.

Random bf16 weights (Llama-3-8B and Qwen2.5-0.5B shapes) saved once as a checkpoint that
both engines load; prompt 128 tokens, 128 new tokens, greedy, no early stop. Each engine
runs as its own users run it, in a fresh process:
- transformers: ``from_pretrained(..., dtype=bfloat16, attn_implementation="sdpa",
  device_map=device)``, one full-length ``generate`` on other prompts as warm-up, then
  ``--repeats`` measured calls;
- baseboard: ``LLM(...)``, one full-length ``generate`` on other prompts as warm-up (so the
  measured prefill finds nothing in the prefix cache), then ``--repeats`` measured calls.
tokens/s = batch x new tokens / the median call (prefill included). Floor = weight bytes /
measured copy bandwidth (bytes read + written).

``--diagnose`` adds the measurements that explain the transformers numbers of earlier
versions of this script, which ran transformers in baseboard's process after its engines,
loaded to the CPU then moved with ``.cuda()``, after an 8-token warm-up: that protocol in
a process of its own, and one process that runs transformers, then a baseboard engine,
then transformers again, with the process state the engine changed (process_state.py) and
the host profile of one ``generate`` before and after.

    python benchmarks/e2e_gpu.py [--models llama3-8b,qwen2.5-0.5b] [--batches 1,32]
        [--peer-batches 1,32] [--variants default,...] [--repeats 3] [--diagnose]
        [--tensor-parallel-size N] [--budget-s SECONDS] [--json PATH] [--log PATH]

``--tensor-parallel-size N`` runs baseboard over N GPUs (transformers stays on one).
    python benchmarks/e2e_gpu.py --smoke [--diagnose]   (a tiny model on the CPU, seconds:
                                                         checks the script)
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
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from e2e_gpu_workers import VARIANTS  # noqa: E402

WORKER_SCRIPT = str(Path(__file__).resolve().parent / "e2e_gpu_workers.py")


class Driver:
    """Runs each worker (e2e_gpu_workers.py) in a fresh interpreter, within --budget-s."""

    def __init__(self, args):
        self.args = args
        self.start = time.monotonic()
        self.log = open(args.log, "a") if args.log else None

    def remaining(self) -> float:
        if self.args.budget_s is None:
            return float("inf")
        return self.args.budget_s - (time.monotonic() - self.start)

    def run(self, worker: str, shape: str, checkpoint: str, batches: list[int],
            env: dict[str, str] | None = None, **options: str) -> dict:
        """Run one worker in a fresh interpreter; its result, or {"error": ...}."""
        a = self.args
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
            result_path = f.name
        command = [sys.executable, WORKER_SCRIPT, worker, "--shape", shape,
                   "--checkpoint", checkpoint, "--device", a.device,
                   "--tensor-parallel-size", str(a.tensor_parallel_size),
                   "--batches", ",".join(map(str, batches)), "--repeats", str(a.repeats),
                   "--prompt-len", str(a.prompt_len), "--new-tokens", str(a.new_tokens),
                   "--result", result_path]
        for key, value in options.items():
            command += [f"--{key.replace('_', '-')}", value]
        label = f"{worker} {shape} {' '.join(options.values())}".strip()
        timeout = self.remaining()
        if timeout < 30:
            print(f"[{self.elapsed()}] skipped {label}: the time budget is spent", flush=True)
            return {"error": "skipped: the time budget (--budget-s) was spent"}
        print(f"[{self.elapsed()}] {label} ...", flush=True)
        started = time.monotonic()
        try:
            done = subprocess.run(command, env={**os.environ, **(env or {})}, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  timeout=None if timeout == float("inf") else timeout)
            output, code = done.stdout, done.returncode
        except subprocess.TimeoutExpired as exc:
            output, code = exc.output or "", "timeout"
        if self.log:
            self.log.write(f"==== {label} (exit {code})\n{output}\n")
            self.log.flush()
        if code != 0:
            print(f"  failed (exit {code}):\n" + "\n".join(output.splitlines()[-15:]),
                  flush=True)
            return {"error": f"exit {code}: " + " | ".join(output.splitlines()[-3:])}
        with open(result_path) as f:
            result = json.load(f)
        os.unlink(result_path)
        result["wall_s"] = time.monotonic() - started
        return result

    def elapsed(self) -> str:
        return f"{time.monotonic() - self.start:6.0f}s"


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=False, cwd=Path(__file__).parent).stdout.strip()
    except OSError:
        return ""


def main_rows(shape: str, info: dict, ours: dict, peer: dict, batches: list[int]) -> list:
    rows = []
    nbytes, bandwidth = info.get("weight_bytes"), info.get("copy_bandwidth")
    for variant, result in ours.items():
        for b in batches:
            mine = result.get("batches", {}).get(str(b), {})
            theirs = peer.get("batches", {}).get(str(b), {})
            rows.append({
                "model": shape, "variant": variant, "batch": b,
                "baseboard_tok_s": mine.get("tok_s"), "baseboard_runs_s": mine.get("runs_s"),
                "transformers_tok_s": theirs.get("tok_s"),
                "transformers_runs_s": theirs.get("runs_s"),
                "ratio": mine["tok_s"] / theirs["tok_s"] if mine and theirs else None,
                "floor_tok_s": bandwidth / nbytes * b if bandwidth and nbytes else None,
                "weight_bytes": nbytes, "plan": result.get("plan"),
                "measured": result.get("measured"), "loads": result.get("loads"),
                "errors": [r["error"] for r in (result, peer) if "error" in r]})
    return rows


def fmt(value, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def print_report(record: dict) -> None:
    print(f"\n{record['date']}  {record.get('device', record['args']['device'])}  commit "
          f"{record['commit']}  torch {record.get('torch')}  transformers "
          f"{record.get('transformers')}  triton {record.get('triton')}")
    print("each engine in a process of its own, full-length warm-up, median of "
          f"{record['args']['repeats']} calls; baseboard on "
          f"{record['args'].get('tensor_parallel_size', 1)} GPU(s)")
    print(f"{'model':<14}{'variant':<18}{'batch':>6}{'baseboard':>12}{'transformers':>14}"
          f"{'ratio':>8}{'floor (b=1)':>12}{'% floor':>9}")
    for r in record["rows"]:
        floor = r["floor_tok_s"]
        pct = (f"{100 * r['baseboard_tok_s'] / floor:.0f}%"
               if floor and r["baseboard_tok_s"] and r["batch"] == 1 else "-")
        print(f"{r['model']:<14}{r['variant']:<18}{r['batch']:>6}{fmt(r['baseboard_tok_s']):>12}"
              f"{fmt(r['transformers_tok_s']):>14}{fmt(r['ratio'], '.2f'):>8}"
              f"{fmt(floor / r['batch'] if floor else None):>12}{pct:>9}")
        for error in r["errors"]:
            print(f"    error: {error}")
    diag = record.get("diagnostics", {})
    if not diag:
        return
    print("\ntransformers tok/s by protocol (median call; first call in brackets)")
    for shape, d in diag.items():
        protocols = {"own process, users' protocol":
                     d.get("transformers own process", {}).get("batches", {}),
                     "own process, earlier protocol":
                     d.get("earlier protocol own process", {}).get("batches", {})}
        one = d.get("one process", {})
        for key in ("transformers before", "transformers after, earlier protocol",
                    "transformers after"):
            if key in one:
                protocols[f"one process: {key}"] = one[key]
        for name, batches in protocols.items():
            if not batches:
                continue
            cells = "  ".join(f"b{b} {fmt(v.get('tok_s'))} ({fmt(v.get('first_tok_s'))})"
                              for b, v in batches.items())
            print(f"  {shape:<14}{name:<52}{cells}")
        for name in ("earlier protocol own process", "one process"):
            if "error" in d.get(name, {}):
                print(f"  {shape:<14}{name}: {d[name]['error']}")
        for backend, times in d.get("sdpa shapes", {}).items():
            if isinstance(times, dict):
                print(f"  {shape:<14}SDPA at a new key length, {backend}: "
                      + ", ".join(f"{k} {fmt(v, '.3f') if isinstance(v, float) else v}"
                                  for k, v in times.items()))
        if "state changed by the engine" in one:
            print(f"  {shape}: state the engine changed (before -> after):")
            for key, (old, new) in one["state changed by the engine"].items():
                print(f"      {key}: {old!r} -> {new!r}")
            before, after = one["launch cost us before, after"]
            print(f"  {shape}: host cost of one small launch: {before:.1f} us before, "
                  f"{after:.1f} us after")


def drive(args) -> None:
    driver = Driver(args)
    record: dict[str, Any] = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "commit": args.commit or commit(),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "args": vars(args),
        "rows": [], "diagnostics": {}}

    def save() -> None:
        if args.json:
            with open(args.json, "w") as f:
                json.dump(record, f, indent=2)

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        checkpoints = {}
        for shape in args.models:
            checkpoint = checkpoints[shape] = os.path.join(tmp, shape)
            info = driver.run("checkpoint", shape, checkpoint, [])
            record.setdefault("checkpoints", {})[shape] = info
            for key in ("device", "torch", "transformers", "triton"):
                record.setdefault(key, info.get(key))
            ours = {variant: driver.run("baseboard", shape, checkpoint, args.batches,
                                        env=VARIANTS[variant][0], variant=variant)
                    for variant in args.variants}
            peer = (driver.run("transformers", shape, checkpoint, args.peer_batches,
                               load="device", warmup="full") if args.peer_batches else {})
            record["rows"] += main_rows(shape, info, ours, peer, args.batches)
            record["diagnostics"][shape] = {"transformers own process": peer}
            save()
        if args.diagnose:  # the one-process check first: it is the question asked
            for shape in args.models:
                record["diagnostics"][shape]["sdpa shapes"] = driver.run(
                    "sdpa-shapes", shape, checkpoints[shape], args.peer_batches)
            for shape in args.one_process_models:
                record["diagnostics"][shape]["one process"] = driver.run(
                    "one-process", shape, checkpoints[shape], args.peer_batches)
                save()
            for shape in args.models if args.earlier_protocol else []:
                record["diagnostics"][shape]["earlier protocol own process"] = driver.run(
                    "transformers", shape, checkpoints[shape], args.peer_batches,
                    load="cpu-then-move", warmup="short")
                save()
    print_report(record)
    save()


def int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def name_list(text: str) -> list[str]:
    return [x for x in text.split(",") if x]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=name_list, default=["qwen2.5-0.5b", "llama3-8b"])
    parser.add_argument("--batches", type=int_list, default=[1, 32])
    parser.add_argument("--peer-batches", type=int_list, default=[1, 32])
    parser.add_argument("--variants", type=name_list, default=["default"],
                        help=", ".join(VARIANTS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--diagnose", action="store_true")
    parser.add_argument("--no-earlier-protocol", dest="earlier_protocol",
                        action="store_false", help="leave out the earlier protocol's "
                        "processes (--diagnose)")
    parser.add_argument("--one-process-models", type=name_list, default=["qwen2.5-0.5b"],
                        help="models of the one-process check (--diagnose)")
    parser.add_argument("--budget-s", type=float, help="skip diagnostics past this many "
                        "seconds, and stop a worker that would run past it")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tensor-parallel-size", type=int, default=1,
                        help="baseboard's GPUs (tensor parallelism); transformers uses one")
    parser.add_argument("--workdir", help="where checkpoints are written (default: /tmp)")
    parser.add_argument("--smoke", action="store_true", help="tiny model, CPU, short runs")
    parser.add_argument("--json")
    parser.add_argument("--log", help="append every worker's output to this file")
    parser.add_argument("--commit", help="the commit measured (default: git's HEAD here)")
    args = parser.parse_args()
    if args.smoke:
        args.models, args.one_process_models, args.device = ["tiny"], ["tiny"], "cpu"
        args.batches, args.peer_batches = [1, 2], [1, 2]
        args.prompt_len, args.new_tokens, args.repeats = 16, 8, 2
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    drive(args)


if __name__ == "__main__":
    main()

