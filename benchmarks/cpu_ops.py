"""CPU op benchmark: GEMM weight-streaming speed per Qwen2.5-0.5B weight shape against
the copy bandwidth, and the cpu platform's native row-wise ops and paged attention
against the torch references.

GEMMs: torch's F.linear (the reference: oneDNN for bf16, MKL for fp32), oneDNN on a
prepacked weight (torch.ops.mkldnn._linear_pointwise), MKL on a prepacked fp32 weight
(torch.ops.mkl._mkl_linear), and the cpu platform's avx512_bf16 and avx512_f32 kernels. Weights are
cold: each call reads another copy, from a set larger than the last-level cache, as a
decode step does. GB/s is weight bytes over time; the copy bandwidth counts bytes
read plus bytes written, as the end-to-end floor does.

    python benchmarks/cpu_ops.py [--rounds 5] [--batches 1,8] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F

SHAPES = {"qkv": (896, 1152), "o": (896, 896), "gate_up": (896, 9728), "down": (4864, 896),
          "lm_head": (896, 151936)}  # name: (K in, N out)
COLD_BYTES = 256 << 20  # 8x the 32 MiB L3 of the machine this was written on
HIDDEN, INTERMEDIATE, HEADS, KV_HEADS, HEAD_DIM = 896, 4864, 14, 2, 64


def copy_bandwidth(mib: int = 512, repeats: int = 10) -> float:
    src = torch.ones(mib << 20, dtype=torch.uint8)
    dst = torch.empty_like(src)
    dst.copy_(src)
    return 2 * src.numel() / best_time(lambda: dst.copy_(src), repeats)


def best_time(fn: Callable[[], object], repeats: int) -> float:
    """The fastest of ``repeats`` calls: on a shared machine, interference only adds time."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def cycling(fn: Callable[[int], object], copies: int) -> Callable[[], object]:
    """A call that uses the next of ``copies`` weights each time."""
    state = [0]

    def call():
        state[0] = (state[0] + 1) % copies
        return fn(state[0])
    return call


def gemm_candidates(k: int, n: int, m: int) -> dict[str, tuple[Callable[[], object], int]]:
    """name -> (call, weight bytes per call) for one shape and batch size."""
    from baseboard.platforms.cpu import gemm, native

    copies = max(2, COLD_BYTES // (n * k * 2))
    weights = [torch.randn(n, k, dtype=torch.bfloat16) for _ in range(copies)]
    x = torch.randn(m, k, dtype=torch.bfloat16)
    out: dict[str, tuple[Callable[[], object], int]] = {}
    out["torch F.linear bf16"] = (cycling(lambda i: F.linear(x, weights[i]), copies), n * k * 2)
    packed = [torch.ops.mkldnn._reorder_linear_weight(w, m) for w in weights]
    out["onednn prepacked bf16"] = (cycling(
        lambda i: torch.ops.mkldnn._linear_pointwise(x, packed[i], None, "none", [], ""),
        copies), n * k * 2)
    if native.unavailable_reason() is None:
        states = [gemm.Avx512Gemm.prepare(w, None) for w in weights]
        out["avx512_bf16 (cpu)"] = (cycling(lambda i: gemm.Avx512Gemm.apply(states[i], x),
                                            copies), n * k * 2)
    if m == 1 and n * k <= 10_000_000:  # fp32 paths, for the record (lm_head would take GBs)
        copies32 = max(2, COLD_BYTES // (n * k * 4))
        w32 = [w.float() for w in weights[:copies32]]
        x32 = x.float()
        out["torch F.linear fp32"] = (cycling(lambda i: F.linear(x32, w32[i]), copies32),
                                      n * k * 4)
        mkl = [torch.ops.mkl._mkl_reorder_linear_weight(w, m) for w in w32]
        out["mkl prepacked fp32"] = (cycling(
            lambda i: torch.ops.mkl._mkl_linear(x32, mkl[i], w32[i], None, m), copies32),
            n * k * 4)
        if native.unavailable_reason() is None:
            states32 = [gemm.Avx512Gemm.prepare(w, None) for w in w32]
            out["avx512_f32 (cpu)"] = (cycling(
                lambda i: gemm.Avx512Gemm.apply(states32[i], x32), copies32), n * k * 4)
    return out


def bench_gemms(batches: list[int], rounds: int) -> list[dict]:
    rows = []
    for name, (k, n) in SHAPES.items():
        for m in batches:
            candidates = gemm_candidates(k, n, m)
            times: dict[str, list[float]] = {c: [] for c in candidates}
            for _ in range(rounds):  # interleaved, so drift hits every candidate alike
                for c, (fn, _) in candidates.items():
                    times[c].append(best_time(fn, 5))
            for c, (_, nbytes) in candidates.items():
                t = min(times[c])
                rows.append({"shape": name, "k": k, "n": n, "m": m, "impl": c, "us": t * 1e6,
                             "gb_s": nbytes / t / 1e9})
            del candidates
    return rows


def op_candidates(tokens: int) -> dict[str, dict[str, Callable[[], object]]]:
    from baseboard.kernels.torch import activation, norm, rotary
    from baseboard.platforms.cpu import rowwise

    bf = torch.bfloat16
    x, res = torch.randn(tokens, HIDDEN, dtype=bf), torch.randn(tokens, HIDDEN, dtype=bf)
    w = torch.randn(HIDDEN, dtype=bf)
    gate_up = torch.randn(tokens, 2 * INTERMEDIATE, dtype=bf)
    qkv = torch.randn(tokens, (HEADS + 2 * KV_HEADS) * HEAD_DIM, dtype=bf)
    q = qkv[:, :HEADS * HEAD_DIM].view(tokens, HEADS, HEAD_DIM)
    k = qkv[:, HEADS * HEAD_DIM:(HEADS + KV_HEADS) * HEAD_DIM].view(tokens, KV_HEADS, HEAD_DIM)
    cache = torch.randn(4096, HEAD_DIM)
    pos = torch.arange(tokens) + 100
    return {
        "rms_norm": {"torch": lambda: norm.rms_norm(x, w, 1e-6),
                     "avx512": lambda: rowwise.rms_norm(x, w, 1e-6)},
        "fused_add_rms_norm": {"torch": lambda: norm.fused_add_rms_norm(x, res, w, 1e-6),
                               "avx512": lambda: rowwise.fused_add_rms_norm(x, res, w, 1e-6)},
        "silu_and_mul": {"torch": lambda: activation.silu_and_mul(gate_up),
                         "avx512": lambda: rowwise.silu_and_mul(gate_up)},
        "rotary_embedding": {"torch": lambda: rotary.rotary_embedding(pos, q, k, cache),
                             "avx512": lambda: rowwise.rotary_embedding(pos, q, k, cache)},
    }


def attention_candidates(batch: int, context: int) -> dict[str, Callable[[], object]]:
    from baseboard.core.attention import AttentionBatch, AttentionSpec
    from baseboard.kernels.torch.attention import TorchAttention
    from baseboard.platforms.cpu.attention import CpuPagedAttention

    block = 16
    spec = AttentionSpec(num_heads=HEADS, num_kv_heads=KV_HEADS, head_dim=HEAD_DIM,
                         scale=HEAD_DIM ** -0.5, block_size=block, dtype=torch.bfloat16,
                         device=torch.device("cpu"), max_num_seqs=batch,
                         max_model_len=context + 1)
    per_seq = -(-context // block)
    tables = [list(range(i * per_seq, (i + 1) * per_seq)) for i in range(batch)]
    attn_batch = AttentionBatch(query_lens=[1] * batch, context_lens=[context] * batch,
                                block_tables=tables,
                                slot_mapping=[t[-1] * block + (context - 1) % block
                                              for t in tables])
    q = torch.randn(batch, HEADS, HEAD_DIM, dtype=torch.bfloat16)
    k = torch.randn(batch, KV_HEADS, HEAD_DIM, dtype=torch.bfloat16)
    out = {}
    for name, cls in (("torch", TorchAttention), ("cpu_paged", CpuPagedAttention)):
        impl = cls(spec)
        kv = torch.randn(impl.kv_cache_shape(batch * per_seq), dtype=torch.bfloat16)
        # metadata is built once per step and read by every layer: timed apart from forward
        metadata = impl.build_metadata(attn_batch)
        out[name] = (lambda impl=impl, kv=kv, metadata=metadata:
                     impl.forward(q, k, k, kv, metadata))
    return out


def bench_small(rounds: int) -> list[dict]:
    rows = []
    groups = [(f"{op} T={t}", fns) for t in (1, 8) for op, fns in op_candidates(t).items()]
    groups += [(f"attention decode B={b} ctx={c}", attention_candidates(b, c))
               for b, c in ((1, 256), (8, 256), (1, 2048))]
    with torch.inference_mode():
        for label, fns in groups:
            times: dict[str, list[float]] = {n: [] for n in fns}
            for _ in range(rounds):
                for n, fn in fns.items():
                    times[n].append(best_time(fn, 50))
            for n in fns:
                rows.append({"op": label, "impl": n, "us": min(times[n]) * 1e6})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                      formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--skip-gemm", action="store_true", help="only the small ops")
    parser.add_argument("--json", help="write results to this file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    bandwidth = copy_bandwidth()
    print(f"threads {torch.get_num_threads()}, copy bandwidth (read + write) "
          f"{bandwidth / 1e9:.1f} GB/s")
    gemms = [] if args.skip_gemm else bench_gemms([int(b) for b in args.batches.split(",")],
                                                   args.rounds)
    print(f"{'shape':<9}{'K':>6}{'N':>8}{'M':>4}  {'implementation':<24}{'us':>10}{'GB/s':>8}"
          f"{'/copy bw':>9}")
    for r in gemms:
        print(f"{r['shape']:<9}{r['k']:>6}{r['n']:>8}{r['m']:>4}  {r['impl']:<24}{r['us']:>10.1f}"
              f"{r['gb_s']:>8.1f}{r['gb_s'] * 1e9 / bandwidth:>9.2f}")
    small = bench_small(args.rounds)
    print(f"\n{'op':<34}{'implementation':<14}{'us':>10}")
    for r in small:
        print(f"{r['op']:<34}{r['impl']:<14}{r['us']:>10.1f}")
    after = copy_bandwidth()
    print(f"\ncopy bandwidth at the end {after / 1e9:.1f} GB/s (a large change means a noisy "
          f"machine)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"bandwidth": bandwidth, "bandwidth_after": after, "gemm": gemms,
                       "ops": small}, f, indent=2)


if __name__ == "__main__":
    main()
