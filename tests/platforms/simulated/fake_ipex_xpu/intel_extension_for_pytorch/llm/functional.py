"""Simulated ipex.llm.functional (XPU build)."""

from __future__ import annotations

import torch

import intel_extension_for_pytorch as ipex


def _rms(x, weight, eps):
    x = x.float()
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight.float()


def rms_norm(hidden_states, weight, eps):
    ipex.CALLS.append(("rms_norm", {"rows": hidden_states.shape[0]}))
    return _rms(hidden_states, weight, eps).to(hidden_states.dtype)


def add_rms_norm(residual, x, weight, bias, eps, add_back=False):
    """rms_norm(x + residual) (+ bias); with add_back, x + residual is stored in residual."""
    ipex.CALLS.append(("add_rms_norm", {"rows": x.shape[0], "add_back": add_back}))
    added = (x.float() + residual.float()).to(x.dtype)
    if add_back:
        residual.copy_(added)
    out = _rms(added, weight, eps)
    if bias is not None:
        out = out + bias.float()
    return out.to(x.dtype)


def silu_and_mul(x, out):
    ipex.CALLS.append(("silu_and_mul", {"rows": x.shape[0]}))
    gate, up = x.float().chunk(2, dim=-1)
    out.copy_(torch.nn.functional.silu(gate) * up)


def rotary_embedding_batched(positions, query, key, head_size, cos_sin_cache, is_neox,
                             rot_dim, cos_sin_cache_offsets=None):
    """query [T, Hq * D], key [T, Hk * D] rotated in place; cos_sin_cache [max_pos, rot_dim]
    (cos, then sin) in the activations' dtype."""
    if cos_sin_cache.dtype != query.dtype:
        raise RuntimeError(f"cos_sin_cache {cos_sin_cache.dtype} must be {query.dtype}")
    if not is_neox or rot_dim != head_size:
        raise RuntimeError("simulated: NEOX style over the whole head only")
    ipex.CALLS.append(("rotary_embedding_batched", {"tokens": query.shape[0]}))
    cos, sin = cos_sin_cache[positions.long()].float().unsqueeze(1).chunk(2, dim=-1)
    for rows in (query, key):
        x = rows.view(rows.shape[0], -1, head_size)
        x1, x2 = x.float().chunk(2, dim=-1)
        x.copy_(torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1))
