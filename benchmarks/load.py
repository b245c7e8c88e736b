"""Load time of a GGUF model: baseboard's LLM(...) beside transformers loading the same file
(AutoTokenizer + AutoModelForCausalLM with gguf_file=), each load in a fresh process.

    python benchmarks/load.py [--model smollm2|FILE.gguf] [--runs 3] [--json PATH]

A side's first run follows the eviction of the model file from the page cache
(posix_fadvise DONTNEED: only that file's clean pages, no privileges needed), so it reads
the file from disk, and finds baseboard's model cache (the parsed config and the converted
tokenizer, baseboard/models/cache.py) empty: the runs use a cache directory of their own,
which shares only the cpu platform's built kernels with the user's. The warm runs, the
median of --runs more, find both filled. Python's own modules stay cached throughout.

baseboard's rows: `LLM(model, max_num_seqs=1)` as `baseboard generate` builds it, and the
stages of the checkpoint alone (load_checkpoint's parse, the tokenizer, reading the
weights), measured in another process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

# side -> the rows its child process reports, in table order
ROWS = {
    "baseboard": ["import baseboard", "LLM(...)"],
    "checkpoint": ["parse (load_checkpoint)", "tokenizer", "weights", "checkpoint total"],
    "transformers": ["import transformers", "AutoTokenizer", "AutoModelForCausalLM",
                     "transformers total"],
}


def child_baseboard(model: str) -> dict:
    start = time.perf_counter()
    from baseboard import LLM

    imported = time.perf_counter()
    LLM(model, max_num_seqs=1)
    done = time.perf_counter()
    return {"import baseboard": imported - start, "LLM(...)": done - imported}


def child_checkpoint(model: str) -> dict:
    import torch

    from baseboard.frontend.plan import resolve_plan
    from baseboard.models.embedded import model_path
    from baseboard.models.loader import load_checkpoint

    catalog = resolve_plan(platform="cpu", dtype=torch.float32).catalog
    start = time.perf_counter()
    checkpoint = load_checkpoint(model_path(model), catalog)
    parsed = time.perf_counter()
    checkpoint.tokenizer  # noqa: B018
    tokenized = time.perf_counter()
    for _ in checkpoint.weights():
        pass
    done = time.perf_counter()
    return {"parse (load_checkpoint)": parsed - start, "tokenizer": tokenized - parsed,
            "weights": done - tokenized, "checkpoint total": done - start}


def child_transformers(model: str) -> dict:
    start = time.perf_counter()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(model)
    imported = time.perf_counter()
    AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    tokenized = time.perf_counter()
    AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    done = time.perf_counter()
    return {"import transformers": imported - start, "AutoTokenizer": tokenized - imported,
            "AutoModelForCausalLM": done - tokenized, "transformers total": done - imported}


CHILDREN = {"baseboard": child_baseboard, "checkpoint": child_checkpoint,
            "transformers": child_transformers}


def evict(path: Path) -> None:
    """Drop the file's pages from the page cache, so the next read comes from the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def fresh_cache_home() -> str:
    """An XDG_CACHE_HOME with an empty model cache and the user's built cpu kernels."""
    home = Path(tempfile.mkdtemp(prefix="baseboard-load-"))
    user = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    (home / "baseboard").mkdir()
    if (user / "baseboard" / "cpu-kernels").is_dir():
        (home / "baseboard" / "cpu-kernels").symlink_to(user / "baseboard" / "cpu-kernels")
    return str(home)


def run_child(side: str, model: str, cache_home: str) -> dict:
    run = subprocess.run([sys.executable, __file__, "--child", side, "--model", model],
                         capture_output=True, text=True,
                         env={**os.environ, "XDG_CACHE_HOME": cache_home})
    if run.returncode != 0:
        raise SystemExit(f"the {side} load failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def measure(side: str, model: str, file: Path, runs: int) -> dict:
    cache_home = fresh_cache_home()
    try:
        evict(file)
        first = run_child(side, model, cache_home)
        warm = [run_child(side, model, cache_home) for _ in range(runs)]
    finally:
        shutil.rmtree(cache_home)
    return {row: {"first_s": first[row], "warm_s": statistics.median(w[row] for w in warm),
                  "warm_runs_s": [w[row] for w in warm]} for row in ROWS[side]}


def commit() -> str:
    """The checkout's commit, or "unknown" outside a git checkout (an exported tree)."""
    run = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True, cwd=Path(__file__).parent)
    return run.stdout.strip() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2",
                        help="a .gguf file or an embedded model's name (default: smollm2)")
    parser.add_argument("--runs", type=int, default=3, help="warm runs per side (default 3)")
    parser.add_argument("--sides", default="baseboard,checkpoint,transformers",
                        help="comma-separated subset of: " + ", ".join(CHILDREN))
    parser.add_argument("--json", help="write the results to this file")
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(CHILDREN[args.child](args.model)))
        return

    from baseboard.models.embedded import model_path

    file = model_path(args.model)
    if not file.is_file() or file.suffix != ".gguf":
        raise SystemExit(f"--model must name a .gguf file or an embedded model; {file} is not.")
    import torch
    import transformers

    result = {"date": date.today().isoformat(), "commit": commit(),
              "machine": f"{os.cpu_count()}-core CPU, {platform.machine()}",
              "torch": torch.__version__, "transformers": transformers.__version__,
              "model": str(file), "warm_runs": args.runs, "sides": {}}
    print(f"{'side':<14}{'measure':<26}{'first (s)':>10}{'warm (s)':>10}")
    for side in args.sides.split(","):
        rows = measure(side, str(file), file, args.runs)
        result["sides"][side] = rows
        for row, times in rows.items():
            print(f"{side:<14}{row:<26}{times['first_s']:>10.2f}{times['warm_s']:>10.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
