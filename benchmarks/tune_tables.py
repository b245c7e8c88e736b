"""Write a device's tile table (baseboard/kernels/triton/device_tables.py): the GEMV tile
per weight shape of the benchmark models, and the decode attention configuration per head
size, each the fastest of a sweep on this GPU, with the peers (cuBLAS, SDPA) timed in the
same run for the ratios.

    python benchmarks/tune_tables.py --out DIR     (writes DIR/<device key>.json and
                                                     DIR/tune_report.json)

Copy the table into baseboard/kernels/triton/tables/ to ship it.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
import triton
import triton.testing

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ops import GEMV_SHAPES, decode_setup, rel_error  # noqa: E402

from baseboard.kernels.torch import gemm  # noqa: E402
from baseboard.kernels.triton import gemm as t_gemm  # noqa: E402
from baseboard.kernels.triton.decode import DecodeConfig  # noqa: E402
from baseboard.kernels.triton.device_tables import device_key  # noqa: E402

BF16 = torch.bfloat16
GEMV_TILES = [(bn, bk, w, s) for bn, bk, w, s in itertools.product(
    (4, 8, 16, 32), (512, 1024, 2048), (4, 8), (3, 4)) if bn * bk <= 16384]
DECODE_TILES = [(32, 4, 2), (64, 4, 2), (64, 4, 3), (64, 8, 2), (16, 4, 2), (32, 2, 2)]
PROGRAMS_PER_SM = (1, 2, 4, 8)
MAX_SPLITS = (32, 64, 128)
# (label, batch, heads, kv heads, head dim, context): the decode cases per head size
DECODE_CASES = {128: [("8b-b32", 32, 32, 8, 128, 4096), ("8b-b1", 1, 32, 8, 128, 4096)],
                64: [("0.5b-b32", 32, 14, 2, 64, 4096), ("0.5b-b1", 1, 14, 2, 64, 4096)]}


def graph_us(fn) -> float:
    return 1e3 * triton.testing.do_bench_cudagraph(fn, rep=50, return_mode="median")


def tune_gemv(device) -> tuple[dict, list]:
    table, rows = {}, []
    for model, layer, n, k, bias, fp32 in GEMV_SHAPES:
        weight = torch.randn(n, k, dtype=BF16, device=device) * 0.02
        b = torch.randn(n, dtype=BF16, device=device) if bias else None
        state = gemm.Gemm.prepare(weight, b)
        x = torch.randn(1, k, dtype=BF16, device=device)
        y = torch.empty(1, n, dtype=torch.float32 if fp32 else BF16, device=device)
        want = gemm.Gemm.apply(state, x, y.dtype)
        cublas = graph_us(lambda: gemm.Gemm.apply(state, x, y.dtype))
        times = {}
        for tile in GEMV_TILES:
            bn, bk, w, s = tile
            def call():
                t_gemm._gemv_kernel[(triton.cdiv(n, bn),)](
                    x, weight, weight.stride(0), b if b is not None else x, y, n, k,
                    HAS_BIAS=b is not None, BLOCK_N=bn, BLOCK_K=bk, num_warps=w, num_stages=s,
                    PDL=False)
            try:
                call()
                if rel_error(y, want) > 1e-2:
                    raise AssertionError(f"rel error {rel_error(y, want):.2e}")
                times[tile] = graph_us(call)
            except Exception as exc:  # out of resources: record, keep sweeping
                print(f"gemv {n}x{k} tile {tile}: {type(exc).__name__}: {str(exc)[:120]}")
        best = min(times, key=times.get)
        table[f"{n}x{k}:bfloat16"] = list(best)
        row = dict(model=model, layer=layer, n=n, k=k, best_tile=list(best),
                   best_us=times[best], cublas_us=cublas, speedup_vs_cublas=cublas / times[best],
                   gbs=weight.numel() * 2 / times[best] / 1e3)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return table, rows


def tune_decode(device) -> tuple[dict, list]:
    table, rows = {}, []
    gen = torch.Generator().manual_seed(1)
    for head_dim, cases in DECODE_CASES.items():
        scores: dict[tuple, list[float]] = {}
        for label, batch, heads, kv_heads, d, context in cases:
            attention, step, q, keys, values, cache = decode_setup(
                device, batch, heads, kv_heads, context, d, 16, gen)
            k_new, v_new = keys[:, -1].contiguous(), values[:, -1].contiguous()
            kv_bytes = 2 * keys.numel() * keys.element_size()
            qs = q.unsqueeze(2)
            ks, vs = keys.transpose(1, 2).contiguous(), values.transpose(1, 2).contiguous()
            sdpa = graph_us(lambda: F.scaled_dot_product_attention(
                qs, ks, vs, scale=d ** -0.5, enable_gqa=True)) / 1e3
            sms = torch.cuda.get_device_properties(device).multi_processor_count
            for (bn, w, s), per_sm, most in itertools.product(DECODE_TILES, PROGRAMS_PER_SM,
                                                              MAX_SPLITS):
                attention.decode_config = DecodeConfig(bn, w, s, most)
                attention.decode_programs = per_sm * sms
                metadata = attention.build_metadata(step)
                try:
                    # replayed from a CUDA graph, as decode steps run (the launches of
                    # the write, the split kernel and the merge would dominate a 1-row step)
                    ms = graph_us(lambda: attention.forward(q, k_new, v_new, cache,
                                                            metadata)) / 1e3
                except Exception as exc:
                    print(f"decode {label} {(bn, w, s, most, per_sm)}: {type(exc).__name__}")
                    continue
                key = (bn, w, s, most, per_sm)
                scores.setdefault(key, []).append(sdpa / ms)
                rows.append(dict(case=label, config=list(key), splits=metadata.decode_splits,
                                 ms=ms, gbs=kv_bytes / ms / 1e6, sdpa_gbs=kv_bytes / sdpa / 1e6,
                                 ratio_vs_sdpa=sdpa / ms))
            del keys, values, cache, ks, vs
            torch.cuda.empty_cache()
        full = {key: v for key, v in scores.items() if len(v) == len(cases)}
        best = max(full, key=lambda key: math.prod(full[key]))  # over batch 32 and 1
        table[f"D{head_dim}"] = list(best)
        print(json.dumps(dict(head_dim=head_dim, best=list(best),
                              ratios_vs_sdpa=dict(zip([c[0] for c in cases], full[best])))),
              flush=True)
    return table, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=".")
    parser.add_argument("--only", default="gemv,decode")
    args = parser.parse_args()
    device = torch.device("cuda")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table, report = {}, {"date": datetime.date.today().isoformat(),
                         "device": torch.cuda.get_device_name(device),
                         "torch": torch.__version__, "triton": triton.__version__}
    if "gemv" in args.only:
        table["gemv"], report["gemv"] = tune_gemv(device)
    if "decode" in args.only:
        table["decode"], report["decode"] = tune_decode(device)
    (out / f"{device_key(device)}.json").write_text(json.dumps(table, indent=1, sort_keys=True))
    (out / "tune_report.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
