"""A simulated ``aiter`` (AMD's AITER) for tests on a machine without an AMD GPU.

It has the Python API of amd-aiter 0.1.7 for the functions baseboard calls (names,
argument order, tensor layouts, and the checks their kernels make), computes each result
with plain torch on whatever device the tensors are on, and records every call in
``CALLS`` as (function name, notable arguments). Layouts follow AITER's kernels:
reshape_and_cache's index arithmetic (csrc/kernels/cache_kernels.cu) and pa_fwd_asm's
kernel table (hsa/<arch>/pa/pa_asm.csv: head size 128, block size 16, GQA 8 or 16).
"""

from __future__ import annotations

from types import SimpleNamespace

import torch

from . import tuned_gemm  # noqa: F401  (aiter.tuned_gemm is a submodule of the real package)

CALLS: list[tuple[str, dict]] = []

# aiter picks its fp8 type from the GPU it runs on: float8_e4m3fnuz on gfx942
_ARCH = torch.cuda.get_device_properties(0).gcnArchName.split(":")[0]
dtypes = SimpleNamespace(
    fp8=torch.float8_e4m3fnuz if _ARCH == "gfx942" else torch.float8_e4m3fn,
    i8=torch.int8, bf16=torch.bfloat16, fp16=torch.float16, fp32=torch.float32)

PA_KERNELS = {(gqa, 16) for gqa in (8, 16)}  # (GQA ratio, block size) with a kernel
PA_HEAD_SIZE = 128


def _record(name: str, **notes) -> None:
    CALLS.append((name, notes))


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise RuntimeError(message)  # what TORCH_CHECK raises


def reshape_and_cache(key, value, key_cache, value_cache, slot_mapping, kv_cache_dtype,
                      k_scale=None, v_scale=None, asm_layout=False):
    """key, value [T, H, D] -> key_cache [nb, H, D/x, bs, x], value_cache [nb, H, D, bs]
    (asm_layout: [nb, H, bs/x, D, x]) at slot_mapping [T]."""
    _record("reshape_and_cache", asm_layout=asm_layout, tokens=key.shape[0])
    _check(kv_cache_dtype == "auto", "simulated: only kv_cache_dtype 'auto'")
    _check(key.stride(-1) == 1 and key.stride(-2) == key.shape[-1], "key rows must be dense")
    num_blocks, heads, _, block_size, x = key_cache.shape
    head_size = key.shape[-1]
    _check(key_cache.is_contiguous() and value_cache.is_contiguous(), "caches must be dense")
    slots = slot_mapping.long()
    keep = slots >= 0  # negative slots are padding
    block, offset = (slots // block_size)[keep, None], (slots % block_size)[keep, None]
    i = torch.arange(heads * head_size, device=key.device)[None, :]
    head, dim = i // head_size, i % head_size
    base = block * heads * head_size * block_size + head * head_size * block_size
    key_index = base + (dim // x) * block_size * x + offset * x + dim % x
    if asm_layout:
        value_index = base + (offset // x) * head_size * x + dim * x + offset % x
    else:
        value_index = base + dim * block_size + offset
    key_cache.view(-1)[key_index] = key[keep].reshape(-1, heads * head_size).to(key_cache.dtype)
    value_cache.view(-1)[value_index] = value[keep].reshape(-1, heads * head_size).to(
        value_cache.dtype)


def _attend(q, k, v, scale, causal):
    """q [Q, Hq, D], k, v [C, Hk, D]; causal aligned to the bottom right, as FlashAttention."""
    group = q.shape[1] // k.shape[1]
    k = k.float().repeat_interleave(group, dim=1)
    v = v.float().repeat_interleave(group, dim=1)
    scores = torch.einsum("qhd,khd->hqk", q.float(), k) * scale
    if causal:
        num_q, num_k = q.shape[0], k.shape[0]
        rows = torch.arange(num_q, device=q.device)[:, None] + (num_k - num_q)
        scores = scores.masked_fill(torch.arange(num_k, device=q.device)[None, :] > rows,
                                    float("-inf"))
    return torch.einsum("hqk,khd->qhd", scores.softmax(-1), v)


def pa_fwd_asm(Q, K, V, block_tables, context_lens, block_tables_stride0, max_qlen=1,
               K_QScale=None, V_QScale=None, out_=None, qo_indptr=None, high_precision=1,
               kernelName=None):
    """Q [B, Hq, D]; K [nb, Hk, D/x, bs, x]; V [nb, Hk, bs/x, D, x]; block_tables [B, M]
    int32; context_lens [B] int32 -> [B, Hq, D], softmax scale 1/sqrt(D)."""
    _check(Q.dtype in (torch.bfloat16, torch.float16), f"pa_fwd: unsupport Q dtype:{Q.dtype}")
    _check(K.dim() == 5 and V.dim() == 5, "pa_fwd_asm takes 5-D K and V caches")
    num_blocks, kv_heads, d_over_x, block_size, x = K.shape
    head_size = d_over_x * x
    gqa = Q.shape[1] // kv_heads
    kernel = next(((g, block_size) for g in (gqa, (gqa + 7) // 8 * 8)
                   if (g, block_size) in PA_KERNELS), None)
    _check(kernel is not None, f"get_heuristic_kernel: cannot get heuristic kernel! gqa:{gqa} "
                               f"block_size:{block_size}")
    _check(head_size == PA_HEAD_SIZE == Q.shape[2], f"simulated: the kernels are for head size "
                                                    f"{PA_HEAD_SIZE}, not {Q.shape[2]}")
    _check(V.shape == (num_blocks, kv_heads, block_size // x, head_size, x),
           f"V cache {tuple(V.shape)} is not [nb, Hk, bs/x, D, x]")
    _check(V.stride(0) == K.stride(0) and V.stride(1) == K.stride(1),
           "V must have K's block and head strides (the kernel is given K's)")
    _check(block_tables.dtype == torch.int32 and context_lens.dtype == torch.int32,
           "block_tables and context_lens are int32")
    _check(block_tables_stride0 == block_tables.stride(0), "block_tables_stride0")
    _record("pa_fwd_asm", batch=Q.shape[0], gqa=kernel[0], block_size=block_size)
    out = out_ if out_ is not None else torch.empty_like(Q)
    for i, length in enumerate(context_lens.tolist()):
        positions = torch.arange(length, device=Q.device)
        blocks = block_tables[i].long()[positions // block_size]
        offsets = positions % block_size
        keys = K[blocks, :, :, offsets, :].flatten(2)
        values = V[blocks, :, offsets // x, :, offsets % x]
        out[i] = _attend(Q[i:i + 1], keys, values, head_size ** -0.5, False)[0].to(out.dtype)
    return out


def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                           min_seqlen_q=0, dropout_p=0.0, softmax_scale=None,
                           logits_soft_cap=0.0, causal=False, window_size=(-1, -1), bias=None,
                           alibi_slopes=None, deterministic=False, return_lse=False,
                           return_attn_probs=False, how_v3_bf16_cvt=1, block_table=None,
                           out=None, cu_seqlens_q_padded=None, cu_seqlens_k_padded=None):
    """q [Tq, Hq, D], k, v [Tk, Hk, D] packed; cu_seqlens_* [B + 1] int32 -> [Tq, Hq, D]."""
    _check(block_table is None, "simulated: no paged KV here")
    _check(cu_seqlens_q.dtype == torch.int32 and cu_seqlens_k.dtype == torch.int32,
           "cu_seqlens are int32")
    starts_q, starts_k = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
    lengths_q = [b - a for a, b in zip(starts_q, starts_q[1:])]
    lengths_k = [b - a for a, b in zip(starts_k, starts_k[1:])]
    _check(max(lengths_q) <= max_seqlen_q and max(lengths_k) <= max_seqlen_k, "max_seqlen")
    _record("flash_attn_varlen_func", sequences=len(lengths_q), causal=causal,
            keys=starts_k[-1])
    scale = softmax_scale if softmax_scale is not None else q.shape[-1] ** -0.5
    result = out if out is not None else torch.empty_like(q)
    for a, b, c, d in zip(starts_q, starts_q[1:], starts_k, starts_k[1:]):
        result[a:b] = _attend(q[a:b], k[c:d], v[c:d], scale, causal).to(q.dtype)
    return result


def _rms(x, weight, eps):
    x = x.float()
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight.float()


def rmsnorm2d_fwd(input, weight, epsilon, use_model_sensitive_rmsnorm=0):
    _check(input.dtype in (torch.bfloat16, torch.float16), "rmsnorm2d_fwd: fp16/bf16 only")
    _record("rmsnorm2d_fwd", rows=input.shape[0])
    return _rms(input, weight, epsilon).to(input.dtype)


def rmsnorm2d_fwd_with_add(out, input, residual_in, residual_out, weight, epsilon,
                           use_model_sensitive_rmsnorm=0):
    _check(input.dtype in (torch.bfloat16, torch.float16), "rmsnorm2d_fwd: fp16/bf16 only")
    _record("rmsnorm2d_fwd_with_add", rows=input.shape[0])
    added = input.float() + residual_in.float()
    residual_out.copy_(added)
    out.copy_(_rms(added.to(input.dtype), weight, epsilon))


def silu_and_mul(out, input):
    _record("silu_and_mul", rows=input.shape[0])
    gate, up = input.float().chunk(2, dim=-1)
    out.copy_(torch.nn.functional.silu(gate) * up)


def rope_cached_positions_2c_fwd_inplace(input_x, input_y, cos, sin, positions, rotate_style,
                                         reuse_freqs_front_part, nope_first):
    """input_x, input_y [s, b, h, d] rotated in place; cos, sin [max_pos, 1, 1, d/2];
    positions [s, b]."""
    _check(rotate_style == 0 and reuse_freqs_front_part and not nope_first,
           "simulated: NEOX style with tables of d/2 only")
    _check(input_x.dim() == 4 and positions.shape == input_x.shape[:2], "sbhd and [s, b]")
    _record("rope_cached_positions_2c_fwd_inplace", tokens=input_x.shape[0])
    c = cos[positions.long()].squeeze(-2).float()  # [s, b, 1, d/2]
    s = sin[positions.long()].squeeze(-2).float()
    for x in (input_x, input_y):
        x1, x2 = x.float().chunk(2, dim=-1)
        x.copy_(torch.cat((x1 * c - x2 * s, x2 * c + x1 * s), dim=-1))


def dynamic_per_token_scaled_quant(out, input, scales, scale_ub=None, shuffle_scale=False,
                                   num_rows=None, num_rows_factor=1):
    """input [T, K] -> out [T, K] int8 or the GPU's fp8, scales [T, 1] = amax / max code."""
    _check(input.is_contiguous() and out.is_contiguous(), "contiguous input and out")
    _check(out.dtype in (torch.int8, dtypes.fp8), f"out dtype {out.dtype} is not int8 or "
                                                  f"{dtypes.fp8}")
    _record("dynamic_per_token_scaled_quant", dtype=out.dtype)
    top = 127.0 if out.dtype == torch.int8 else torch.finfo(out.dtype).max
    scale = input.float().abs().amax(-1, keepdim=True).clamp(min=1e-12) / top
    scaled = input.float() / scale
    out.copy_(scaled.round().clamp(-128, 127) if out.dtype == torch.int8 else scaled)
    scales.copy_(scale.view(scales.shape))


def gemm_a8w8_CK(XQ, WQ, x_scale, w_scale, bias=None, dtype=torch.bfloat16, splitK=None):
    """XQ [M, K], WQ [N, K] (int8, or both the GPU's fp8), x_scale [M, 1], w_scale [N, 1]
    float32 -> [M, N] in dtype."""
    _check(XQ.dtype == WQ.dtype and XQ.dtype in (torch.int8, dtypes.fp8),
           f"gemm_a8w8: XQ {XQ.dtype} and WQ {WQ.dtype} must both be int8 or {dtypes.fp8}")
    _check(x_scale.dtype == w_scale.dtype == torch.float32, "scales are float32")
    _check(dtype in (torch.bfloat16, torch.float16), f"output {dtype} is not bf16/fp16")
    _check(bias is None or bias.dtype == dtype, "Out amd bias should have the same dtype!")
    _record("gemm_a8w8_CK", m=XQ.shape[0], dtype=XQ.dtype)
    y = (XQ.double() @ WQ.double().T).float() * x_scale.view(-1, 1) * w_scale.view(1, -1)
    if bias is not None:
        y = y + bias.float()
    return y.to(dtype)



