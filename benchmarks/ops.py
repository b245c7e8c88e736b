"""GPU op benchmark: every Triton kernel checked against the torch reference, then timed.

Paged decode attention against torch SDPA on contiguous K/V (GB/s of K/V read), paged
causal prefill against SDPA (TFLOP/s), norms / rotary / silu / sampling against the torch
references (GB/s), the one-row GEMM (the decode of one sequence) of two model shapes
against cuBLAS through torch (GB/s of weight read). ``--sweep`` also times several tile
configurations of the attention kernels. SDPA, the attention peer, is timed in a process of
its own. Prints tables and ratios; writes everything as JSON.

    python benchmarks/ops.py [--sweep] [--only gemv,...] [--json PATH]
                                                        (PATH defaults to $OUT/ops.json)
    python benchmarks/ops.py --smoke                    (tiny shapes on the CPU, through
                                                         Triton's interpreter: checks the script)
"""

from __future__ import annotations

import os
import sys

if "--smoke" in sys.argv:  # must precede the first triton import
    os.environ["TRITON_INTERPRET"] = "1"

import argparse  # noqa: E402
import concurrent.futures  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import multiprocessing  # noqa: E402
import time  # noqa: E402
from typing import Callable  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import triton  # noqa: E402

from baseboard.core.attention import AttentionBatch, AttentionSpec  # noqa: E402
from baseboard.core.sampling import SamplingTensors  # noqa: E402
from baseboard.kernels.torch import activation, norm, rotary, sampling  # noqa: E402
from baseboard.kernels.torch import gemm  # noqa: E402
from baseboard.kernels.torch.attention import TorchAttention  # noqa: E402
from baseboard.kernels.triton import gemm as t_gemm  # noqa: E402
from baseboard.kernels.triton import activation as t_activation  # noqa: E402
from baseboard.kernels.triton import norm as t_norm  # noqa: E402
from baseboard.kernels.triton import rotary as t_rotary  # noqa: E402
from baseboard.kernels.triton import sampling as t_sampling  # noqa: E402
from baseboard.kernels.triton.attention import TritonAttention  # noqa: E402
from baseboard.kernels.triton.decode import DecodeConfig  # noqa: E402
from baseboard.kernels.triton.prefill import PrefillConfig  # noqa: E402
from baseboard.kernels.triton import prefill_tiled  # noqa: E402

BF16 = torch.bfloat16
RTOL = {torch.bfloat16: 1e-2, torch.float16: 2e-3, torch.float32: 1e-4}


def timed(fn: Callable[[], object], smoke: bool) -> float:
    """Median milliseconds (CUDA events through do_bench; one wall-clock run in smoke mode)."""
    if smoke:
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) * 1e3
    return triton.testing.do_bench(fn, warmup=50, rep=200, return_mode="median")


def timed_rounds(fns: dict[str, Callable[[], object]], smoke: bool,
                 rounds: int = 3) -> dict[str, float]:
    """Median over interleaved rounds, so clock drift or a busy neighbour hits every
    candidate alike (single do_bench runs of the decode kernels spread by about 10%)."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(1 if smoke else rounds):
        for name, fn in fns.items():
            times[name].append(timed(fn, smoke))
    return {name: sorted(t)[len(t) // 2] for name, t in times.items()}


def in_own_process(fn: Callable, *args):
    """fn(*args) in a fresh interpreter: a peer is timed as its own users run it, with none
    of our buffers, caches or compiled kernels in its process."""
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        return pool.submit(fn, *args).result()


def rel_error(got: torch.Tensor, want: torch.Tensor) -> float:
    if not torch.isfinite(got.float()).all():
        return math.inf
    return ((got.float() - want.float()).norm() / want.float().norm()).item()


def paged_batch(query_lens, context_lens, block_size, num_blocks, gen) -> AttentionBatch:
    """Random distinct blocks per sequence; slots of each sequence's last query_len tokens."""
    need = [-(-c // block_size) for c in context_lens]
    order = torch.randperm(num_blocks, generator=gen)[:sum(need)].tolist()
    tables, slots, at = [], [], 0
    for query_len, context, n in zip(query_lens, context_lens, need):
        table = order[at:at + n]
        at += n
        tables.append(table)
        slots += [table[p // block_size] * block_size + p % block_size
                  for p in range(context - query_len, context)]
    return AttentionBatch(list(query_lens), list(context_lens), tables, slots)


# ---------------------------------------------------------------- correctness (small shapes)

def check_attention(device, dtype, heads, kv_heads, head_dim, block_size, query_lens,
                    context_lens, gen) -> float:
    spec = AttentionSpec(heads, kv_heads, head_dim, head_dim ** -0.5, block_size, dtype, device,
                         max_num_seqs=len(query_lens), max_model_len=max(context_lens))
    ours, reference = TritonAttention(spec), TorchAttention(spec)
    num_blocks = sum(-(-c // block_size) for c in context_lens) + 3
    batch = paged_batch(query_lens, context_lens, block_size, num_blocks, gen)
    cache = torch.randn(ours.kv_cache_shape(num_blocks), dtype=dtype, device=device)
    want_cache = cache.clone()
    tokens = sum(query_lens)
    qkv = torch.randn(tokens, heads + 2 * kv_heads, head_dim, dtype=dtype, device=device)
    q, k, v = qkv.split([heads, kv_heads, kv_heads], dim=1)
    want = reference.forward(q, k, v, want_cache, reference.build_metadata(batch))
    got = ours.forward(q, k, v, cache, ours.build_metadata(batch))
    return max(rel_error(got, want), 0.0 if torch.equal(cache, want_cache) else math.inf)


def correctness(device, smoke: bool) -> list[dict]:
    gen = torch.Generator().manual_seed(0)
    rows = []

    def add(op, shape, dtype, error):
        rows.append(dict(op=op, shape=shape, dtype=str(dtype).replace("torch.", ""),
                         rel_error=error, ok=error < RTOL[dtype]))

    for dtype in ([torch.float32] if smoke else [BF16, torch.float16]):
        x = torch.randn(37, 4096 if not smoke else 96, dtype=dtype, device=device)
        res, w = torch.randn_like(x), torch.randn(x.shape[1], dtype=dtype, device=device)
        add("rms_norm", list(x.shape), dtype, rel_error(t_norm.rms_norm(x, w, 1e-6),
                                                        norm.rms_norm(x, w, 1e-6)))
        want_n, want_s = norm.fused_add_rms_norm(x, res, w, 1e-6)
        got_n, got_s = t_norm.fused_add_rms_norm(x.clone(), res.clone(), w, 1e-6)
        add("fused_add_rms_norm", list(x.shape), dtype,
            max(rel_error(got_n, want_n), rel_error(got_s, want_s)))
        for head_dim in (64, 128) if smoke else (80, 128):
            qkv = torch.randn(37, 48, head_dim, dtype=dtype, device=device)
            q, k = qkv[:, :32], qkv[:, 32:40]
            pos = torch.randint(0, 4096, (37,), device=device)
            cache = torch.randn(4096, head_dim, device=device)
            want_q, want_k = rotary.rotary_embedding(pos, q, k, cache)
            t_rotary.rotary_embedding(pos, q, k, cache)
            add("rotary_embedding", [37, 32, 8, head_dim], dtype,
                max(rel_error(q, want_q), rel_error(k, want_k)))
        x = torch.randn(37, 2 * (14336 if not smoke else 1100), dtype=dtype, device=device)
        add("silu_and_mul", list(x.shape), dtype,
            rel_error(t_activation.silu_and_mul(x), activation.silu_and_mul(x)))
        cases = [(32, 8, 128, 16), (8, 1, 64, 64), (16, 4, 80, 16), (8, 8, 96, 16),
                 (8, 2, 256, 16), (28, 4, 128, 16), (32, 8, 128, 64), (16, 4, 80, 64),
                 (8, 2, 256, 64), (8, 1, 64, 32)]
        for heads, kv_heads, head_dim, block_size in cases[:2] if smoke or dtype != BF16 \
                else cases:
            query_lens = [1, 1, 1, 300, 17] if not smoke else [1, 1, 9]
            context_lens = [5000, 33, 700, 300, 900] if not smoke else [130, 33, 70]
            add("attention", [heads, kv_heads, head_dim, block_size], dtype,
                check_attention(device, dtype, heads, kv_heads, head_dim, block_size,
                                query_lens, context_lens, gen))
    vocab = 128256 if not smoke else 3001
    logits = torch.randn(64, vocab, device=device) * 4
    temperature = torch.rand(64, device=device) + 0.2
    temperature[::5] = 0
    for name, flags, top_k, top_p in (
            ("greedy", dict(all_greedy=True), 0, 1.0),
            ("temperature", dict(all_greedy=False, no_top_k=True, no_top_p=True), 0, 1.0),
            ("top_k_top_p", dict(all_greedy=False), 50, 0.9)):
        params = SamplingTensors(temperature, torch.full((64,), top_k, device=device),
                                 torch.full((64,), top_p, device=device),
                                 torch.empty(64, vocab, device=device).exponential_(), **flags)
        same = torch.equal(t_sampling.sample(logits, params), sampling.sample(logits, params))
        rows.append(dict(op=f"sample ({name})", shape=[64, vocab], dtype="float32",
                         rel_error=0.0 if same else 1.0, ok=same))
    return rows


# ---------------------------------------------------------------- attention timings

def decode_setup(device, batch, heads, kv_heads, context, head_dim, block_size, gen):
    spec = AttentionSpec(heads, kv_heads, head_dim, head_dim ** -0.5, block_size, BF16, device,
                         max_num_seqs=batch, max_model_len=context)
    attention = TritonAttention(spec)
    per_seq = context // block_size
    num_blocks = batch * per_seq + 1
    tables = (torch.randperm(num_blocks - 1, generator=gen)[:batch * per_seq] + 1).view(
        batch, per_seq)
    keys = torch.randn(batch, context, kv_heads, head_dim, dtype=BF16, device=device)
    values = torch.randn_like(keys)
    cache = torch.empty(attention.kv_cache_shape(num_blocks), dtype=BF16, device=device)
    flat = tables.flatten().to(device)
    cache[0][flat] = keys.view(-1, block_size, kv_heads, head_dim)
    cache[1][flat] = values.view(-1, block_size, kv_heads, head_dim)
    slots = (tables[:, -1] * block_size + block_size - 1).tolist()
    step = AttentionBatch([1] * batch, [context] * batch, tables.tolist(), slots)
    q = torch.randn(batch, heads, head_dim, dtype=BF16, device=device)
    return attention, step, q, keys, values, cache


def bench_decode(device, smoke, batch=32, heads=32, kv_heads=8, context=4096, head_dim=128,
                 block_size=16, sweep=False) -> dict:
    gen = torch.Generator().manual_seed(1)
    attention, step, q, keys, values, cache = decode_setup(
        device, batch, heads, kv_heads, context, head_dim, block_size, gen)
    k_new, v_new = keys[:, -1].contiguous(), values[:, -1].contiguous()
    kv_bytes = 2 * keys.numel() * keys.element_size()
    scale = head_dim ** -0.5
    qs = q.unsqueeze(2)  # [B, Hq, 1, D]
    ks, vs = keys.transpose(1, 2).contiguous(), values.transpose(1, 2).contiguous()
    want = F.scaled_dot_product_attention(qs, ks, vs, scale=scale, enable_gqa=True)

    def run(metadata, impl=attention):
        return impl.forward(q, k_new, v_new, cache, metadata)

    metadata = attention.build_metadata(step)
    result = dict(shape=dict(batch=batch, heads=heads, kv_heads=kv_heads, context=context,
                             head_dim=head_dim, block_size=block_size),
                  kv_bytes=kv_bytes, splits=metadata.decode_splits,
                  rel_error_vs_sdpa=rel_error(run(metadata), want.squeeze(2)))
    # a second instance: metadata are valid only until their own instance builds again
    single = type(attention)(attention.spec)
    single.decode_programs = 1
    unsplit = single.build_metadata(step)
    del qs, ks, vs, want
    group = heads // kv_heads
    times = timed_rounds({"triton": lambda: run(metadata),
                          "no_split": lambda: run(unsplit, single)}, smoke)
    times.update(in_own_process(sdpa_decode_ms, str(device), smoke, batch, heads, kv_heads,
                                context, head_dim))
    result.update(triton_ms=times["triton"], triton_gbs=kv_bytes / times["triton"] / 1e6,
                  no_split_ms=times["no_split"],
                  sdpa_gqa_ms=times["sdpa_gqa"], sdpa_gqa_gbs=kv_bytes / times["sdpa_gqa"] / 1e6,
                  # the repeated K/V are group times the bytes: GB/s of what it reads
                  sdpa_mha_ms=times["sdpa_mha"],
                  sdpa_mha_gbs=group * kv_bytes / times["sdpa_mha"] / 1e6)
    result["ratio_vs_sdpa_bandwidth"] = result["triton_gbs"] / result["sdpa_gqa_gbs"]
    result["ratio_vs_sdpa_mha_bandwidth"] = result["triton_gbs"] / result["sdpa_mha_gbs"]
    if sweep:
        result["sweep"] = sweep_decode(attention, step, run, kv_bytes, smoke)
    return result


def sdpa_inputs(device, batch, heads, kv_heads, queries, keys, head_dim):
    """Random bf16 q [B, H, queries, D] and k, v [B, KV heads, keys, D], SDPA's layout."""
    q = torch.randn(batch, heads, queries, head_dim, dtype=BF16, device=device)
    k, v = (torch.randn(batch, kv_heads, keys, head_dim, dtype=BF16, device=device)
            for _ in range(2))
    return q, k, v


def sdpa_decode_ms(device, smoke, batch, heads, kv_heads, context, head_dim) -> dict:
    """SDPA's decode (one query a sequence over contiguous K/V, [B, H, S, D]) with
    enable_gqa and on K/V repeated to every query head: median ms (run in_own_process)."""
    qs, ks, vs = sdpa_inputs(device, batch, heads, kv_heads, 1, context, head_dim)
    group, scale = heads // kv_heads, head_dim ** -0.5
    ks_mha, vs_mha = ks.repeat_interleave(group, 1), vs.repeat_interleave(group, 1)
    return timed_rounds({
        "sdpa_gqa": lambda: F.scaled_dot_product_attention(qs, ks, vs, scale=scale,
                                                           enable_gqa=True),
        "sdpa_mha": lambda: F.scaled_dot_product_attention(qs, ks_mha, vs_mha, scale=scale),
    }, smoke)


def sweep_decode(attention, step, run, kv_bytes, smoke) -> list[dict]:
    default_config, default_programs = attention.decode_config, attention.decode_programs
    sms = max(default_programs // 4, 1)
    rows = []
    tiles = [(32, 4, 2), (32, 4, 3), (64, 4, 2), (64, 4, 3), (64, 4, 4), (64, 8, 3),
             (128, 4, 3), (128, 8, 2), (128, 8, 3)]
    for block_n, warps, stages in tiles[:2] if smoke else tiles:
        for per_sm in (2, 4, 8):
            attention.decode_config = DecodeConfig(block_n, warps, stages, 32)
            attention.decode_programs = per_sm * sms
            metadata = attention.build_metadata(step)
            ms = timed(lambda: run(metadata), smoke)
            rows.append(dict(block_n=block_n, num_warps=warps, num_stages=stages,
                             programs_per_sm=per_sm, splits=metadata.decode_splits, ms=ms,
                             gbs=kv_bytes / ms / 1e6))
    attention.decode_config, attention.decode_programs = default_config, default_programs
    return rows


def bench_prefill(device, smoke, batch=8, heads=32, kv_heads=32, seq=2048, head_dim=128,
                  sweep=False) -> dict:
    """Causal prefill of ``batch`` prompts of ``seq`` tokens: the dense kernel (a prompt's
    first step), then the same queries over the paged cache, gathered from blocks of 16
    and read a tile at a time from blocks of 64 (a cached prefix, a graphed prefill)."""
    gen = torch.Generator().manual_seed(2)
    tokens = batch * seq
    q = torch.randn(tokens, heads, head_dim, dtype=BF16, device=device)
    k = torch.randn(tokens, kv_heads, head_dim, dtype=BF16, device=device)
    v = torch.randn_like(k)

    def paged_setup(block_size):
        spec = AttentionSpec(heads, kv_heads, head_dim, head_dim ** -0.5, block_size, BF16,
                             device, max_num_seqs=batch, max_model_len=seq)
        attention = TritonAttention(spec)
        num_blocks = batch * seq // block_size + 1
        step = paged_batch([seq] * batch, [seq] * batch, block_size, num_blocks, gen)
        cache = torch.empty(attention.kv_cache_shape(num_blocks), dtype=BF16, device=device)
        metadata = attention.build_metadata(step)
        out = attention.forward(q, k, v, cache, metadata)  # also fills the cache
        paged_out = torch.empty_like(q)

        def run(config=attention.prefill_config):
            attention.paged_prefill(q, paged_out, cache, metadata.block_tables,
                                    metadata.prefill_query_start, metadata.seq_lens, tokens, 0,
                                    attention.qk_scale, config, attention.upcast)
        run()
        return attention, metadata, cache, out, paged_out, run

    attention, metadata, cache, out, gathered_out, gathered = paged_setup(16)
    *_, tiles_out, tiles = paged_setup(64)

    def bhsd(x):
        return x.view(batch, seq, -1, head_dim).transpose(1, 2).contiguous()

    qs, ks, vs = bhsd(q), bhsd(k), bhsd(v)
    gqa = kv_heads != heads

    dense_out = torch.empty_like(q)

    def dense(tma=None):
        prefill_tiled.dense_prefill_attention(q, k, v, dense_out, metadata.prefill_query_start,
                                              batch, tokens, 0, attention.qk_scale,
                                              attention.upcast, tma=tma)

    expected = F.scaled_dot_product_attention(
        qs, ks, vs, is_causal=True, enable_gqa=gqa).transpose(1, 2).reshape(
        tokens, heads, head_dim)
    del qs, ks, vs
    flops = 4 * batch * heads * seq * seq * head_dim / 2
    times = timed_rounds({"paged": gathered, "paged_tiles": tiles, "dense": dense,
                          "dense_pointers": lambda: dense(tma=False),
                          "forward": lambda: attention.forward(q, k, v, cache, metadata)},
                         smoke)
    peer = in_own_process(sdpa_prefill_ms, str(device), smoke, batch, heads, kv_heads, seq,
                          head_dim)
    times["sdpa"] = peer.pop("default")
    result = dict(shape=dict(batch=batch, heads=heads, kv_heads=kv_heads, seq=seq,
                             head_dim=head_dim),
                  rel_error_vs_sdpa=rel_error(out, expected),
                  paged_rel_error_vs_sdpa=rel_error(gathered_out, expected),
                  paged_tiles_rel_error_vs_sdpa=rel_error(tiles_out, expected),
                  triton_ms=times["dense"], triton_tflops=flops / times["dense"] / 1e9,
                  pointers_tflops=flops / times["dense_pointers"] / 1e9,
                  paged_ms=times["paged"], paged_tflops=flops / times["paged"] / 1e9,
                  paged_tiles_ms=times["paged_tiles"],
                  paged_tiles_tflops=flops / times["paged_tiles"] / 1e9,
                  triton_forward_ms=times["forward"],
                  triton_forward_tflops=flops / times["forward"] / 1e9,
                  sdpa_ms=times["sdpa"], sdpa_tflops=flops / times["sdpa"] / 1e9)
    for backend, ms in peer.items():
        result[f"sdpa_{backend}_tflops"] = flops / ms / 1e9 if isinstance(ms, float) else ms
    result["ratio_vs_sdpa"] = result["triton_tflops"] / result["sdpa_tflops"]
    result["paged_tiles_ratio_vs_sdpa"] = result["paged_tiles_tflops"] / result["sdpa_tflops"]
    if sweep:
        result["sweep"] = sweep_prefill(gathered, tiles, dense, flops, smoke)
    return result


def sdpa_prefill_ms(device, smoke, batch, heads, kv_heads, seq, head_dim) -> dict:
    """SDPA's causal prefill ([B, H, S, D]): median ms as selected ("default") and, on the
    GPU, through each backend (a string where it is unavailable); run in_own_process."""
    qs, ks, vs = sdpa_inputs(device, batch, heads, kv_heads, seq, seq, head_dim)

    def sdpa():
        return F.scaled_dot_product_attention(qs, ks, vs, is_causal=True,
                                              enable_gqa=kv_heads != heads)

    times = timed_rounds({"default": sdpa}, smoke)
    if not smoke:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION,
                        SDPBackend.EFFICIENT_ATTENTION):
            try:
                with sdpa_kernel([backend]):
                    times[backend.name.lower()] = timed(sdpa, smoke)
            except RuntimeError as exc:
                times[backend.name.lower()] = f"unavailable: {exc}"[:120]
    return times


def sweep_prefill(gathered, tiles, dense, flops, smoke) -> list[dict]:
    """Tile configurations of each prefill kernel, timed one at a time."""
    rows = []

    def add(kernel, block_m, block_n, warps, stages, fn):
        try:
            ms = timed(fn, smoke)
            entry = dict(ms=ms, tflops=flops / ms / 1e9)
        except Exception as exc:  # e.g. out of shared memory: record, keep sweeping
            entry = dict(error=repr(exc)[:160])
        rows.append(dict(kernel=kernel, block_m=block_m, block_n=block_n, num_warps=warps,
                         num_stages=stages, **entry))

    gathered_configs = [(128, 64, 8, 3), (128, 64, 8, 2), (128, 64, 4, 3), (64, 64, 4, 3),
                        (128, 32, 8, 3)]
    tile_configs = [(128, 64, 4, 2), (128, 64, 4, 3), (128, 64, 8, 3), (64, 64, 4, 3),
                    (128, 32, 4, 2), (64, 32, 4, 2), (128, 64, 8, 2)]
    for kernel, run, configs in (("paged", gathered, gathered_configs),
                                 ("paged_tiles", tiles, tile_configs)):
        for m, n, w, s in configs[:2] if smoke else configs:
            add(kernel, m, n, w, s, lambda: run(PrefillConfig(m, n, w, s)))
    # the dense kernel, one tile at a time: its autotuner holding only that tile
    kernel = prefill_tiled._dense_prefill_kernel
    all_configs = kernel.configs
    for config in all_configs[:2] if smoke else all_configs:
        kernel.configs = [config]
        kernel.cache.clear()
        add("dense", config.kwargs["BLOCK_M"], config.kwargs["BLOCK_N"], config.num_warps,
            config.num_stages, dense)
    kernel.configs = all_configs
    kernel.cache.clear()
    return rows


# ---------------------------------------------------------------- small ops

def bench_small_ops(device, smoke) -> list[dict]:
    tokens, hidden, inner = (4096, 4096, 14336) if not smoke else (8, 96, 160)
    heads, kv_heads, head_dim = (32, 8, 128) if not smoke else (4, 2, 64)
    x = torch.randn(tokens, hidden, dtype=BF16, device=device)
    res, w = torch.randn_like(x), torch.randn(hidden, dtype=BF16, device=device)
    qkv = torch.randn(tokens, heads + 2 * kv_heads, head_dim, dtype=BF16, device=device)
    q, k = qkv[:, :heads], qkv[:, heads:heads + kv_heads]
    positions = torch.randint(0, 8192, (tokens,), device=device)
    cos_sin = torch.randn(8192, head_dim, device=device)
    gate_up = torch.randn(tokens, 2 * inner, dtype=BF16, device=device)
    size = x.numel() * 2
    rows = [
        ("rms_norm", 2 * size, lambda: t_norm.rms_norm(x, w, 1e-6),
         lambda: norm.rms_norm(x, w, 1e-6)),
        ("fused_add_rms_norm", 4 * size, lambda: t_norm.fused_add_rms_norm(x, res, w, 1e-6),
         lambda: norm.fused_add_rms_norm(x, res, w, 1e-6)),
        ("rotary_embedding", 4 * (q.numel() + k.numel()),
         lambda: t_rotary.rotary_embedding(positions, q, k, cos_sin),
         lambda: rotary.rotary_embedding(positions, q, k, cos_sin)),
        ("silu_and_mul", gate_up.numel() * 2 * 3 // 2,
         lambda: t_activation.silu_and_mul(gate_up), lambda: activation.silu_and_mul(gate_up)),
    ]
    rows_out = []
    for name, nbytes, ours, reference in rows:
        ours_ms, ref_ms = timed(ours, smoke), timed(reference, smoke)
        rows_out.append(dict(op=name, triton_ms=ours_ms, torch_ms=ref_ms,
                             triton_gbs=nbytes / ours_ms / 1e6, speedup=ref_ms / ours_ms))
    batch, vocab = (64, 128256) if not smoke else (4, 3001)
    logits = torch.randn(batch, vocab, device=device) * 4
    noise = torch.empty(batch, vocab, device=device).exponential_()
    temperature = torch.rand(batch, device=device) + 0.2
    for name, flags, top_k, top_p in (
            ("sample greedy", dict(all_greedy=True), 0, 1.0),
            ("sample temperature", dict(all_greedy=False, no_top_k=True, no_top_p=True), 0, 1.0),
            ("sample top-k/top-p", dict(all_greedy=False), 50, 0.9)):
        params = SamplingTensors(temperature, torch.full((batch,), top_k, device=device),
                                 torch.full((batch,), top_p, device=device), noise, **flags)
        ours_ms = timed(lambda: t_sampling.sample(logits, params), smoke)
        ref_ms = timed(lambda: sampling.sample(logits, params), smoke)
        nbytes = logits.numel() * 4 * (1 if flags["all_greedy"] else 3)
        rows_out.append(dict(op=name, triton_ms=ours_ms, torch_ms=ref_ms,
                             triton_gbs=nbytes / ours_ms / 1e6, speedup=ref_ms / ours_ms))
    return rows_out


# ---------------------------------------------------------------- one-row GEMM

# (model, layer, N, K, bias, float32 output): Qwen2.5-0.5B and Llama-3-8B decode weights
GEMV_SHAPES = [("qwen2.5-0.5b", "qkv", 1152, 896, True, False),
               ("qwen2.5-0.5b", "o", 896, 896, False, False),
               ("qwen2.5-0.5b", "gate_up", 9728, 896, False, False),
               ("qwen2.5-0.5b", "down", 896, 4864, False, False),
               ("qwen2.5-0.5b", "lm_head", 151936, 896, False, True),
               ("llama3-8b", "qkv", 6144, 4096, False, False),
               ("llama3-8b", "o", 4096, 4096, False, False),
               ("llama3-8b", "gate_up", 28672, 4096, False, False),
               ("llama3-8b", "down", 4096, 14336, False, False),
               ("llama3-8b", "lm_head", 128256, 4096, False, True)]


def bench_gemv(device, smoke) -> list[dict]:
    rows = []
    for model, layer, n, k, bias, fp32 in GEMV_SHAPES[:2] if smoke else GEMV_SHAPES:
        weight = torch.randn(n, k, dtype=BF16, device=device) * 0.02
        state = gemm.Gemm.prepare(weight, torch.randn(n, dtype=BF16, device=device)
                                  if bias else None)
        x = torch.randn(1, k, dtype=BF16, device=device)
        out_dtype = torch.float32 if fp32 else None
        ours = t_gemm.Gemm.apply(state, x, out_dtype)
        want = gemm.Gemm.apply(state, x, out_dtype)
        # replayed from a CUDA graph, as a decode step runs them (one launch at a time, the
        # launch overhead would hide the kernels)
        times = {name: (timed(fn, smoke) if smoke else
                        triton.testing.do_bench_cudagraph(fn, rep=100, return_mode="median"))
                 for name, fn in (("triton", lambda: t_gemm.Gemm.apply(state, x, out_dtype)),
                                  ("cublas", lambda: gemm.Gemm.apply(state, x, out_dtype)))}
        nbytes = weight.numel() * 2
        rows.append(dict(model=model, layer=layer, n=n, k=k, triton_us=1e3 * times["triton"],
                         cublas_us=1e3 * times["cublas"],
                         triton_gbs=nbytes / times["triton"] / 1e6,
                         cublas_gbs=nbytes / times["cublas"] / 1e6,
                         speedup=times["cublas"] / times["triton"],
                         rel_error=rel_error(ours.float(), want.float())))
    return rows


# ---------------------------------------------------------------- report

def table(rows: list[dict], columns: list[str]) -> str:
    def cell(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)
    cells = [[cell(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def environment(device) -> dict:
    info = dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                torch=torch.__version__, triton=triton.__version__, device=str(device))
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, multiprocessors=props.multi_processor_count)
    return info


def attention_benchmarks(device, args, report: dict) -> None:
    """Paged decode and prefill against SDPA, printed with their ratios."""
    decode_shape = {} if not args.smoke else dict(batch=2, heads=4, kv_heads=2, context=256,
                                                  head_dim=64)
    report["decode"] = bench_decode(device, args.smoke, sweep=args.sweep, **decode_shape)
    long_shape = dict(batch=2, context=32768) if not args.smoke else dict(
        batch=1, heads=4, kv_heads=2, context=512, head_dim=64)
    report["decode_long"] = bench_decode(device, args.smoke, **long_shape)
    report["decode_blocks64"] = bench_decode(device, args.smoke, block_size=64,
                                             **decode_shape)
    prefill_shape = {} if not args.smoke else dict(batch=2, heads=2, kv_heads=2, seq=96,
                                                   head_dim=64)
    report["prefill"] = bench_prefill(device, args.smoke, sweep=args.sweep, **prefill_shape)
    gqa_shape = dict(kv_heads=8) if not args.smoke else dict(batch=2, heads=4, kv_heads=2,
                                                             seq=96, head_dim=64)
    report["prefill_gqa"] = bench_prefill(device, args.smoke, **gqa_shape)

    for name in ("decode", "decode_long", "decode_blocks64"):
        print(f"\n{name}: " + json.dumps({k: v for k, v in report[name].items()
                                          if k != "sweep"}, default=str))
        if "sweep" in report[name]:
            print(table(report[name]["sweep"], list(report[name]["sweep"][0])))
    for name in ("prefill", "prefill_gqa"):
        print(f"\n{name}: " + json.dumps({k: v for k, v in report[name].items()
                                          if k != "sweep"}, default=str))
        if "sweep" in report[name]:
            print(table(report[name]["sweep"], ["kernel", "block_m", "block_n", "num_warps",
                                                "num_stages", "ms", "tflops", "error"]))
    d, p = report["decode"], report["prefill"]
    print(f"\npaged decode: {d['triton_gbs']:.0f} GB/s vs SDPA {d['sdpa_gqa_gbs']:.0f} GB/s "
          f"with enable_gqa (ratio {d['ratio_vs_sdpa_bandwidth']:.2f}, target >= 0.9); "
          f"SDPA on K/V repeated to {d['shape']['heads']} heads streams "
          f"{d['sdpa_mha_gbs']:.0f} GB/s (ratio {d['ratio_vs_sdpa_mha_bandwidth']:.2f})")
    print(f"prefill (a prompt's first step, dense kernel): {p['triton_tflops']:.0f} TFLOP/s "
          f"vs SDPA {p['sdpa_tflops']:.0f} (ratio {p['ratio_vs_sdpa']:.2f}, target >= 0.85); "
          f"over the paged cache, blocks of 64: {p['paged_tiles_tflops']:.0f} (ratio "
          f"{p['paged_tiles_ratio_vs_sdpa']:.2f}), blocks of 16: {p['paged_tflops']:.0f}; "
          f"SDPA backends: "
          + ", ".join(f"{k[5:-7]} {v:.0f}" for k, v in p.items()
                      if k.startswith("sdpa_") and k.endswith("_tflops") and k != "sdpa_tflops"
                      and isinstance(v, float)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweep", action="store_true", help="time tile configurations too")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU")
    parser.add_argument("--json", default=None, help="output path (default $OUT/ops.json)")
    parser.add_argument("--only", default=None,
                        help="comma-separated sections: correctness, attention, small, gemv")
    args = parser.parse_args()
    sections = set(args.only.split(",")) if args.only else {"correctness", "attention",
                                                            "small", "gemv"}
    device = torch.device("cpu" if args.smoke else "cuda")
    torch.manual_seed(0)
    report = dict(environment=environment(device), command=" ".join(sys.argv))
    print(json.dumps(report["environment"]))

    if "correctness" in sections:
        report["correctness"] = correctness(device, args.smoke)
        print("\ncorrectness (relative error against the torch reference)")
        print(table(report["correctness"], ["op", "shape", "dtype", "rel_error", "ok"]))
    if "attention" in sections:
        attention_benchmarks(device, args, report)
    if "small" in sections:
        report["small_ops"] = bench_small_ops(device, args.smoke)
        print("\nsmall ops (bf16; sampling float32 logits)")
        print(table(report["small_ops"], ["op", "triton_ms", "torch_ms", "triton_gbs",
                                          "speedup"]))
    if "gemv" in sections:
        report["gemv"] = bench_gemv(device, args.smoke)
        print("\none-row GEMM (bf16 weight; the lm_head writes float32)")
        print(table(report["gemv"], ["model", "layer", "n", "k", "triton_us", "cublas_us",
                                     "triton_gbs", "cublas_gbs", "speedup", "rel_error"]))

    path = args.json or (os.path.join(os.environ["OUT"], "ops.json") if "OUT" in os.environ
                         else None)
    if path:
        with open(path, "w") as f:
            json.dump(report, f, indent=1, default=str)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
