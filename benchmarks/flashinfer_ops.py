"""FlashInfer's kernels on the shapes of benchmarks/ops.py (decode B32 ctx 4096; causal
prefill B8 S2048), to set the priority of the ``flashinfer`` attention candidate: run both
scripts in one call and compare. Each kernel is compiled by FlashInfer on first use (the
first row of each kind includes minutes of nvcc); failures are recorded, not raised.

    python benchmarks/flashinfer_ops.py   # writes $OUT/flashinfer_ops.json
"""

from __future__ import annotations

import json
import os
import time
import traceback

import torch
import torch.nn.functional as F

from ops import timed

BF16 = torch.bfloat16
dev = torch.device("cuda")
report: dict = {}


def step(name, fn):
    """Run one measurement, recording its result or its error."""
    start = time.perf_counter()
    try:
        report[name] = fn()
    except Exception:  # record and go on to the next kernel
        report[name] = "error: " + traceback.format_exc()[-1500:]
    print(f"{name} ({time.perf_counter() - start:.1f} s): {report[name]}", flush=True)


try:
    import flashinfer
except ImportError as exc:
    raise SystemExit(f"flashinfer_ops.py measures FlashInfer, which does not import here: {exc}. "
                     f"pip install baseboard[flashinfer]") from exc
report["flashinfer"] = flashinfer.__version__
workspace = torch.zeros(256 << 20, dtype=torch.uint8, device=dev)


def paged(batch, context, kv_heads, head_dim, page):
    pages = context // page
    cache = torch.randn(2, batch * pages, page, kv_heads, head_dim, dtype=BF16, device=dev)
    indices = torch.randperm(batch * pages, device=dev, dtype=torch.int32)
    indptr = torch.arange(0, batch + 1, device=dev, dtype=torch.int32) * pages
    last = torch.full((batch,), page, device=dev, dtype=torch.int32)
    return cache, indices, indptr, last


def decode(batch=32, heads=32, kv_heads=8, context=4096, head_dim=128, page=16,
           tensor_cores=False, backend="auto"):
    cache, indices, indptr, last = paged(batch, context, kv_heads, head_dim, page)
    q = torch.randn(batch, heads, head_dim, dtype=BF16, device=dev)
    wrapper = flashinfer.BatchDecodeWithPagedKVCacheWrapper(
        workspace, "NHD", use_tensor_cores=tensor_cores, backend=backend)
    wrapper.plan(indptr, indices, last, heads, kv_heads, head_dim, page, q_data_type=BF16)
    out = wrapper.run(q, (cache[0], cache[1]))
    # reference on contiguous K/V gathered in page order
    k = cache[0][indices.long()].view(batch, context, kv_heads, head_dim).transpose(1, 2)
    v = cache[1][indices.long()].view(batch, context, kv_heads, head_dim).transpose(1, 2)
    want = F.scaled_dot_product_attention(q[:, :, None], k, v, enable_gqa=True)[:, :, 0]
    error = ((out.float() - want.float()).norm() / want.float().norm()).item()
    ms = timed(lambda: wrapper.run(q, (cache[0], cache[1])), False)
    kv_bytes = 2 * batch * context * kv_heads * head_dim * 2
    return dict(ms=ms, gbs=kv_bytes / ms / 1e6, rel_error=error)


def prefill(batch=8, heads=32, kv_heads=32, seq=2048, head_dim=128, page=16, backend="auto"):
    cache, indices, indptr, last = paged(batch, seq, kv_heads, head_dim, page)
    q = torch.randn(batch * seq, heads, head_dim, dtype=BF16, device=dev)
    qo_indptr = torch.arange(0, batch + 1, device=dev, dtype=torch.int32) * seq
    wrapper = flashinfer.BatchPrefillWithPagedKVCacheWrapper(workspace, "NHD", backend=backend)
    wrapper.plan(qo_indptr, indptr, indices, last, heads, kv_heads, head_dim, page,
                 causal=True, q_data_type=BF16)
    out = wrapper.run(q, (cache[0], cache[1]))
    k = cache[0][indices.long()].view(batch, seq, kv_heads, head_dim).transpose(1, 2)
    v = cache[1][indices.long()].view(batch, seq, kv_heads, head_dim).transpose(1, 2)
    qs = q.view(batch, seq, heads, head_dim).transpose(1, 2)
    want = F.scaled_dot_product_attention(qs, k, v, is_causal=True, enable_gqa=True)
    want = want.transpose(1, 2).reshape(out.shape)
    error = ((out.float() - want.float()).norm() / want.float().norm()).item()
    ms = timed(lambda: wrapper.run(q, (cache[0], cache[1])), False)
    flops = 4 * batch * heads * seq * seq * head_dim / 2
    return dict(ms=ms, tflops=flops / ms / 1e9, rel_error=error)


def ragged(batch=8, heads=32, kv_heads=32, seq=2048, head_dim=128, backend="auto"):
    q = torch.randn(batch * seq, heads, head_dim, dtype=BF16, device=dev)
    k = torch.randn(batch * seq, kv_heads, head_dim, dtype=BF16, device=dev)
    v = torch.randn_like(k)
    indptr = torch.arange(0, batch + 1, device=dev, dtype=torch.int32) * seq
    wrapper = flashinfer.BatchPrefillWithRaggedKVCacheWrapper(workspace, "NHD", backend=backend)
    wrapper.plan(indptr, indptr, heads, kv_heads, head_dim, causal=True, q_data_type=BF16)
    out = wrapper.run(q, k, v)
    qs, ks, vs = (x.view(batch, seq, -1, head_dim).transpose(1, 2) for x in (q, k, v))
    want = F.scaled_dot_product_attention(qs, ks, vs, is_causal=True, enable_gqa=True)
    want = want.transpose(1, 2).reshape(out.shape)
    error = ((out.float() - want.float()).norm() / want.float().norm()).item()
    ms = timed(lambda: wrapper.run(q, k, v), False)
    flops = 4 * batch * heads * seq * seq * head_dim / 2
    return dict(ms=ms, tflops=flops / ms / 1e9, rel_error=error)


step("decode_tensor_cores", lambda: decode(tensor_cores=True))
step("prefill_fa3", lambda: prefill(backend="fa3"))
step("ragged_fa3", lambda: ragged(backend="fa3"))
step("prefill_gqa_fa3", lambda: prefill(kv_heads=8, backend="fa3"))
step("decode_cuda_cores", decode)
step("prefill_fa2", lambda: prefill(backend="fa2"))
with open(os.path.join(os.environ.get("OUT", "."), "flashinfer_ops.json"), "w") as f:
    json.dump(report, f, indent=1, default=str)
