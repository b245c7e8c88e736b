"""The cpu platform with and without Intel Extension for PyTorch, beside transformers, in
one run: run it in the IPEX environment (`make ipex-env`, then
`.venv-ipex/bin/python -m pip install -e ".[bench]"` for transformers' GGUF reader, then
`.venv-ipex/bin/python benchmarks/ipex_e2e.py`).

Part 1 (--ops): each op IPEX implements against our native kernel at the shapes of the
Qwen2.5-0.5B model at decode (T = 1, 8) and in a prefill (T = 256); the time is the
minimum of several batches of calls, which a shared machine disturbs least, the two
implementations taking turns batch by batch. This is what
the ``ipex`` priorities in baseboard/platforms/cpu/ipex_records.py come from.

Part 2 (--e2e): greedy generation, a fixed number of new tokens, warm-up first, medians of
interleaved rounds (benchmarks/e2e.py measures the same way), on SmolLM2-135M (the
embedded GGUF, dequantized to bf16 safetensors for the bf16 rows) and a random
Qwen2.5-0.5B-shaped model, each in bf16 and in weight-only int8 (written by `baseboard
quantize --method gptq --bits 8`, groups of 64, which divide both models' widths):

  native        our kernels only (every op IPEX has set to ours)
  ipex          every op IPEX has (norms, rotary, silu, attention, the int8 GEMM) on IPEX
  default       what selection picks by itself in this environment
  transformers  AutoModelForCausalLM.generate in bf16, sdpa attention, in a process of its
                own, warmed up (it has no weight-only int8 kernel on the CPU here: the int8
                rows compare with its bf16 run)

    .venv-ipex/bin/python benchmarks/ipex_e2e.py [--ops] [--e2e] [--models smollm2,qwen]
        [--new-tokens 32] [--prompt-len 32] [--rounds 2] [--json PATH]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from e2e import (BATCH, QWEN_SHAPE, environment, make_qwen, measure_round, prompts,
                 smollm2_gguf)

NATIVE = {"rms_norm": "avx512", "fused_add_rms_norm": "avx512",
          "rotary_embedding": "avx512", "silu_and_mul": "avx512", "attention": "cpu_paged",
          "gemm_w8a16": "avx512_bf16", "gemm_w4a16": "avx512_bf16"}
IPEX = {op: "ipex" for op in NATIVE}
GROUP = 64  # of the int8 checkpoints: SmolLM2's hidden size is 576


# ---------------------------------------------------------------- part 1: ops

def best_times(calls: dict, per_batch: int, batches: int = 9) -> dict[str, float]:
    """Seconds per call of each callable: the fastest of ``batches`` batches of
    ``per_batch`` calls, the callables taking turns batch by batch so that the load of a
    shared machine falls on all of them alike."""
    for fn in calls.values():
        for _ in range(3):
            fn()
    best = dict.fromkeys(calls, float("inf"))
    for _ in range(batches):
        for name, fn in calls.items():
            start = time.perf_counter()
            for _ in range(per_batch):
                fn()
            best[name] = min(best[name], (time.perf_counter() - start) / per_batch)
    return best


def op_cases(tokens: int):
    """(op, label, {impl name: zero-argument callable}) at the 0.5B model's shapes, bf16."""
    from baseboard.platforms.cpu import ipex_gemm, ipex_ops, quant_gemm, rowwise
    from baseboard.testing import quantize
    from baseboard.testing.checks import rotary_cache

    bf16, s = torch.bfloat16, QWEN_SHAPE
    hidden, inter = s["hidden_size"], s["intermediate_size"]
    heads, kv_heads = s["num_attention_heads"], s["num_key_value_heads"]
    d = hidden // heads
    g = torch.Generator().manual_seed(0)
    x = torch.randn(tokens, hidden, generator=g).to(bf16)
    residual = torch.randn(tokens, hidden, generator=g).to(bf16)
    weight = torch.ones(hidden, dtype=bf16)
    gate_up = torch.randn(tokens, 2 * inter, generator=g).to(bf16)
    qkv = torch.randn(tokens, (heads + 2 * kv_heads) * d, generator=g).to(bf16)
    q = qkv[:, :heads * d].view(tokens, heads, d)
    k = qkv[:, heads * d:(heads + kv_heads) * d].view(tokens, kv_heads, d)
    positions = torch.arange(tokens) + 100
    cache = rotary_cache(4096, d, torch.device("cpu"))
    yield "rms_norm", f"T{tokens} K{hidden}", {
        "avx512": lambda: rowwise.rms_norm(x, weight, 1e-6),
        "ipex": lambda: ipex_ops.rms_norm(x, weight, 1e-6)}
    yield "fused_add_rms_norm", f"T{tokens} K{hidden}", {
        "avx512": lambda: rowwise.fused_add_rms_norm(x, residual, weight, 1e-6),
        "ipex": lambda: ipex_ops.fused_add_rms_norm(x, residual, weight, 1e-6)}
    yield "rotary_embedding", f"T{tokens} Hq{heads} Hk{kv_heads} D{d}", {
        "avx512": lambda: rowwise.rotary_embedding(positions, q, k, cache),
        "ipex": lambda: ipex_ops.rotary_embedding(positions, q, k, cache)}
    yield "silu_and_mul", f"T{tokens} I{inter}", {
        "avx512": lambda: rowwise.silu_and_mul(gate_up),
        "ipex": lambda: ipex_ops.silu_and_mul(gate_up)}
    for n, kk in ((2 * inter, hidden), (hidden, inter)):  # gate_up, down
        dense = torch.randn(n, kk, generator=g) / kk ** 0.5
        codes, scales = quantize.quantize_int8_groups(dense, 128)
        a = torch.randn(tokens, kk, generator=g).to(bf16)
        native = quant_gemm.Avx512W8A16.prepare(codes, scales.to(bf16), 128, None)
        woq = ipex_gemm.IpexW8A16.prepare(codes, scales.to(bf16), 128, None)
        yield "gemm_w8a16", f"T{tokens} N{n} K{kk} G128", {
            "avx512_bf16": lambda a=a, st=native: quant_gemm.Avx512W8A16.apply(st, a),
            "ipex": lambda a=a, st=woq: ipex_gemm.IpexW8A16.apply(st, a)}
        codes4, scales4, offsets4 = quantize.quantize_4bit_groups(dense, 128)
        native4 = quant_gemm.Avx512W4A16.prepare(codes4, scales4.to(bf16), offsets4.to(bf16),
                                                 128, None)
        woq4 = ipex_gemm.IpexW4A16.prepare(codes4, scales4.to(bf16), offsets4.to(bf16), 128,
                                           None)
        yield "gemm_w4a16", f"T{tokens} N{n} K{kk} G128", {
            "avx512_bf16": lambda a=a, st=native4: quant_gemm.Avx512W4A16.apply(st, a),
            "ipex": lambda a=a, st=woq4: ipex_gemm.IpexW4A16.apply(st, a)}
    yield from attention_cases(tokens, heads, kv_heads, d)


def attention_cases(tokens: int, heads: int, kv_heads: int, d: int):
    """Decode (T sequences of 512 cached tokens) or one fresh prefill of T tokens."""
    from baseboard.core.attention import AttentionBatch, AttentionSpec
    from baseboard.platforms.cpu.attention import CpuPagedAttention
    from baseboard.platforms.cpu.ipex_attention import IpexPagedAttention

    block = 16
    spec = AttentionSpec(num_heads=heads, num_kv_heads=kv_heads, head_dim=d, scale=d ** -0.5,
                         block_size=block, dtype=torch.bfloat16, device=torch.device("cpu"),
                         max_num_seqs=max(tokens, 1), max_model_len=4096)
    if tokens <= 8:
        context, seqs, new = 512, tokens, 1
        label = f"decode B{tokens} context {context}"
    else:
        context, seqs, new = tokens, 1, tokens
        label = f"prefill T{tokens}"
    per_seq = -(-context // block)
    tables = [list(range(i * per_seq, (i + 1) * per_seq)) for i in range(seqs)]
    slots = [tables[i][p // block] * block + p % block
             for i in range(seqs) for p in range(context - new, context)]
    batch = AttentionBatch([new] * seqs, [context] * seqs, tables, slots)
    g = torch.Generator().manual_seed(1)
    q = torch.randn(seqs * new, heads, d, generator=g).to(torch.bfloat16)
    kv = torch.randn(seqs * new, kv_heads, d, generator=g).to(torch.bfloat16)
    calls = {}
    for name, cls in (("cpu_paged", CpuPagedAttention), ("ipex", IpexPagedAttention)):
        attention = cls(spec)
        cache = torch.randn(attention.kv_cache_shape(seqs * per_seq)).to(torch.bfloat16)
        metadata = attention.build_metadata(batch)
        calls[name] = lambda a=attention, c=cache, m=metadata: a.forward(q, kv, kv, c, m)
    yield "attention", label, calls


def run_ops() -> list[dict]:
    rows = []
    for tokens in (1, 8, 256):
        for op, label, calls in op_cases(tokens):
            times = best_times(calls, per_batch=5 if tokens > 8 else 30)
            native = next(n for n in times if n != "ipex")
            rows.append({"op": op, "case": label, "native": native,
                         "native_us": times[native] * 1e6, "ipex_us": times["ipex"] * 1e6})
            r = rows[-1]
            print(f"{op:<20}{label:<32}{native:<12}{r['native_us']:>10.1f} us   ipex "
                  f"{r['ipex_us']:>10.1f} us   ipex/native {r['ipex_us'] / r['native_us']:5.2f}",
                  flush=True)
    return rows


# ---------------------------------------------------------------- part 2: end to end

class Baseboard:
    def __init__(self, path: Path, backends: dict[str, str], max_len: int, used: set[str]):
        from baseboard import LLM, SamplingParams

        self.llm = LLM(str(path), dtype="bfloat16", max_num_seqs=BATCH, max_model_len=max_len,
                       kv_cache_memory=256 << 20, skip_tokenizer_init=True,
                       backends={op: name for op, name in backends.items() if op in used})
        self.params = SamplingParams(temperature=0, max_tokens=1, ignore_eos=True,
                                     detokenize=False)

    def selected(self) -> dict[str, str]:
        return {op: d.selected for op, d in self.llm.plan.decisions.items() if op in NATIVE}

    def generate(self, ids: list[list[int]], new_tokens: int) -> list[list[int]]:
        from baseboard import SamplingParams

        params = SamplingParams(temperature=0, max_tokens=new_tokens, ignore_eos=True,
                                detokenize=False)
        outs = self.llm.generate([{"prompt_token_ids": p} for p in ids], params)
        return [list(o.outputs[0].token_ids) for o in outs]


def summarize(rounds: list[dict], new_tokens: int) -> dict:
    med = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    step = (med["full1"] - med["first"]) / (new_tokens - 1)
    return {"decode_tok_s": 1 / step, "batch8_tok_s": BATCH * new_tokens / med["full8"],
            "first_token_s": med["first"], "batch8_first_token_s": med["first8"]}


def transformers_worker(path: Path, args) -> dict:
    """In its own process (the parent's IPEX and threads stay out of its way)."""
    from e2e import Transformers

    vocab = QWEN_SHAPE["vocab_size"] if "qwen" in str(path) else 49152
    ids1, ids8 = prompts(1, args.prompt_len, vocab), prompts(BATCH, args.prompt_len, vocab)
    hf = Transformers(path)
    hf.generate(ids1, 4)
    hf.generate(ids8, 4)
    rounds = [measure_round(hf, ids1, ids8, args.new_tokens) for _ in range(args.rounds)]
    return summarize(rounds, args.new_tokens)


def run_transformers(path: Path, args) -> dict:
    cmd = [sys.executable, __file__, "--worker", str(path), "--new-tokens",
           str(args.new_tokens), "--prompt-len", str(args.prompt_len), "--rounds",
           str(args.rounds)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def used_ops(int8: bool) -> set[str]:
    ops = {"rms_norm", "fused_add_rms_norm", "rotary_embedding", "silu_and_mul", "attention"}
    return ops | {"gemm_w8a16"} if int8 else ops


def run_e2e_model(name: str, dense: Path, int8: Path, args) -> list[dict]:
    vocab = QWEN_SHAPE["vocab_size"] if name == "qwen" else 49152
    ids1, ids8 = prompts(1, args.prompt_len, vocab), prompts(BATCH, args.prompt_len, vocab)
    reference = run_transformers(dense, args)
    rows = [{"model": name, "weights": "bf16", "config": "transformers", **reference}]
    print(json.dumps(rows[-1]), flush=True)
    max_len = args.prompt_len + args.new_tokens + 8
    for weights, path in (("bf16", dense), ("int8", int8)):
        used = used_ops(weights == "int8")
        engines = {config: Baseboard(path, backends, max_len, used)
                   for config, backends in (("native", NATIVE), ("ipex", IPEX),
                                            ("default", {}))}
        for engine in engines.values():  # warm-up (IPEX's silu compiles on its first call)
            engine.generate(ids1, 4)
            engine.generate(ids8, 4)
        rounds: dict[str, list[dict]] = {c: [] for c in engines}
        for _ in range(args.rounds):
            for config, engine in engines.items():
                rounds[config].append(measure_round(engine, ids1, ids8, args.new_tokens))
        for config, engine in engines.items():
            rows.append({"model": name, "weights": weights, "config": config,
                         "selected": engine.selected(),
                         **summarize(rounds[config], args.new_tokens)})
            print(json.dumps(rows[-1]), flush=True)  # partial results survive an interruption
        del engines
        gc.collect()
    return rows


def make_models(name: str, root: Path) -> tuple[Path, Path]:
    """(bf16 safetensors directory, GPTQ 8-bit directory) of model ``name``."""
    from baseboard.quantization.quantize import QuantizeOptions, quantize_checkpoint

    dense = root / f"{name}-bf16"
    if name == "qwen":
        make_qwen(dense)
    else:  # the embedded GGUF, dequantized by transformers' GGUF reader
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
        from transformers.initialization import no_init_weights
        from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

        gguf = smollm2_gguf()
        config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
        with no_init_weights():
            model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        parsed = load_gguf_checkpoint(str(gguf), return_tensors=True, model_to_load=model)
        model.load_state_dict(parsed["tensors"], strict=False)
        model.tie_weights()
        model.to(torch.bfloat16).save_pretrained(dense, safe_serialization=True)
        AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(dense)
    int8 = root / f"{name}-gptq8"
    quantize_checkpoint(dense, int8, QuantizeOptions("gptq", 8, GROUP, True), progress=False)
    return dense, int8


def print_e2e(rows: list[dict]) -> None:
    print(f"\n{'model':<8}{'weights':<9}{'config':<14}{'b1 tok/s':>10}{'b8 tok/s':>10}"
          f"{'b1 prefill ms':>15}{'b8 prefill ms':>15}   x transformers (b1, b8)")
    for r in rows:
        base = next(x for x in rows if x["model"] == r["model"] and
                    x["config"] == "transformers")
        print(f"{r['model']:<8}{r['weights']:<9}{r['config']:<14}{r['decode_tok_s']:>10.1f}"
              f"{r['batch8_tok_s']:>10.1f}{r['first_token_s'] * 1e3:>15.0f}"
              f"{r['batch8_first_token_s'] * 1e3:>15.0f}   "
              f"{r['decode_tok_s'] / base['decode_tok_s']:.2f}x, "
              f"{r['batch8_tok_s'] / base['batch8_tok_s']:.2f}x")
    defaults = {(r["model"], r["weights"]): r["selected"] for r in rows if r["config"] == "default"}
    for (model, weights), selected in defaults.items():
        print(f"default plan, {model} {weights}: " +
              ", ".join(f"{op}={name}" for op, name in selected.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ops", action="store_true", help="part 1 only (default: both)")
    parser.add_argument("--e2e", action="store_true", help="part 2 only (default: both)")
    parser.add_argument("--models", default="smollm2,qwen")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", help="write results to this file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # transformers, in its own process
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(transformers_worker(Path(args.worker), args)))
        return
    from baseboard.platforms.cpu import ipex_runtime

    problem = ipex_runtime.problem()
    if problem is not None:
        raise SystemExit(f"IPEX cannot run here: {problem.reason}")
    env = environment()
    env["ipex"] = ipex_runtime.installed_version()
    print(f"{env['date']}  commit {env['commit']}  {env['cpu']}  {env['cores']} cores  "
          f"torch {env['torch']}  IPEX {env['ipex']}  load {env['load_average'][0]:.2f}",
          flush=True)
    both = not (args.ops or args.e2e)
    result: dict = {"environment": env, "args": vars(args)}
    if args.ops or both:
        result["ops"] = run_ops()
    if args.e2e or both:
        rows = []
        with tempfile.TemporaryDirectory() as tmp:
            for name in args.models.split(","):
                dense, int8 = make_models(name, Path(tmp))
                rows += run_e2e_model(name, dense, int8, args)
        result["e2e"] = rows
        print_e2e(rows)
    result["load_average_after"] = os.getloadavg()
    print(f"load average at the end: {result['load_average_after'][0]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
