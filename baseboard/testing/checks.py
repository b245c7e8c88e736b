"""Run one case: build its inputs, call the implementation and the reference, compare.

Both sides get their own copies of every input, because the contract lets some ops
work in place. Inputs are drawn from a generator seeded by the case id, so a
failure reproduces exactly. Values are scaled so outputs are of order 1, which lets
one absolute-and-relative tolerance per dtype serve every op.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from ..core.ops import FUSIONS
from . import quantize
from .attention_check import check_attention
from .cases import TOKENS, Case, randn
from .compare import assert_not_rounded, compare
from .collective_check import check_collective
from .sample_check import check_sample

EPS = 1e-6


def _copies(args: tuple) -> tuple:
    return tuple(a.clone() if isinstance(a, torch.Tensor) else a for a in args)


def _call_both(what: str, case: Case, impl: Callable, reference: Callable, *args: Any) -> None:
    compare(what, impl(*_copies(args)), reference(*_copies(args)), case)


def _check_rms_norm(case: Case, impl: Any, reference: Any, device: torch.device) -> None:
    gen, t, k = case.generator(), case.params["tokens"], case.params["hidden"]
    x = randn(gen, (t, k), case.dtype, device)
    weight = (1 + randn(gen, (k,), torch.float32, device, 0.1)).to(case.dtype)
    _call_both(f"rms_norm(x [{t}, {k}], weight, eps)", case, impl, reference, x, weight, EPS)


def _check_fused_add_rms_norm(case: Case, impl: Any, reference: Any,
                              device: torch.device) -> None:
    gen, t, k = case.generator(), case.params["tokens"], case.params["hidden"]
    x = randn(gen, (t, k), case.dtype, device)
    residual = randn(gen, (t, k), case.dtype, device)
    weight = (1 + randn(gen, (k,), torch.float32, device, 0.1)).to(case.dtype)
    _call_both(f"fused_add_rms_norm(x [{t}, {k}], residual, weight, eps)", case, impl,
               reference, x, residual, weight, EPS)


def rotary_cache(max_position: int, head_dim: int, device: torch.device,
                 base: float = 10000.0) -> torch.Tensor:
    """[max_position, D] float32: cos in the first D/2 columns, sin in the last D/2."""
    inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.arange(max_position, dtype=torch.float32).unsqueeze(1) * inv_freq
    return torch.cat((angles.cos(), angles.sin()), dim=-1).to(device)


def projection_views(q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """q [T, Hq, D] and k [T, Hk, D] copied into one [T, (Hq + 2 Hk) D] buffer, laid out as
    the model's qkv projection writes them, and returned as views of it: a token's row of q
    (or k) starts (Hq + 2 Hk) D values after the previous one, not Hq D (Hk D)."""
    t, hq, d = q.shape
    hk = k.shape[1]
    qkv = torch.zeros((t, (hq + 2 * hk) * d), dtype=q.dtype, device=q.device)
    qkv[:, :hq * d] = q.reshape(t, hq * d)
    qkv[:, hq * d:(hq + hk) * d] = k.reshape(t, hk * d)
    return qkv[:, :hq * d].view(t, hq, d), qkv[:, hq * d:(hq + hk) * d].view(t, hk, d)


def _check_rotary(case: Case, impl: Any, reference: Any, device: torch.device) -> None:
    gen, p = case.generator(), case.params
    t, d, hq, hk = p["tokens"], p["head_dim"], p["num_heads"], p["num_kv_heads"]
    cache = rotary_cache(4096, d, device)
    positions = torch.randint(0, 4096, (t,), generator=gen).to(device)
    q = randn(gen, (t, hq, d), case.dtype, device)
    k = randn(gen, (t, hk, d), case.dtype, device)
    # each side gets its own views of one projection output, as the model passes them
    compare(f"rotary_embedding(positions [{t}], q [{t}, {hq}, {d}], k [{t}, {hk}, {d}] "
            f"(views of one qkv projection), cos_sin_cache)",
            impl(positions.clone(), *projection_views(q, k), cache.clone()),
            reference(positions.clone(), *projection_views(q, k), cache.clone()), case)


def _check_silu_and_mul(case: Case, impl: Any, reference: Any, device: torch.device) -> None:
    gen, t, i = case.generator(), case.params["tokens"], case.params["hidden"]
    x = randn(gen, (t, 2 * i), case.dtype, device)
    _call_both(f"silu_and_mul(x [{t}, {2 * i}])", case, impl, reference, x)


def _dense_weight(gen: torch.Generator, case: Case) -> torch.Tensor:
    """[N, K] float32 on the CPU, scaled so x @ w.T is of order 1 for x ~ N(0, 1)."""
    k, n = case.params["hidden"], case.params["out"]
    return torch.randn((n, k), generator=gen) / k ** 0.5


def _bias(gen: torch.Generator, case: Case, device: torch.device) -> torch.Tensor | None:
    return randn(gen, (case.params["out"],), case.dtype, device, 0.1) \
        if case.params["bias"] else None


def _weight_inputs(case: Case, gen: torch.Generator, device: torch.device) -> dict[str, Any]:
    """The keyword arguments of ``prepare`` for the case's op."""
    dense, bias = _dense_weight(gen, case), _bias(gen, case, device)
    if case.op == "gemm":
        return {"weight": dense.to(device, case.dtype), "bias": bias}
    if case.op == "gemm_w4a16":
        g = case.params["group_size"]
        quantizer = quantize.quantize_4bit_symmetric if case.params["symmetric"] \
            else quantize.quantize_4bit_groups
        qweight, scales, offsets = quantizer(dense, g)
        return {"qweight": qweight.to(device), "scales": scales.to(device, case.dtype),
                "offsets": offsets.to(device, case.dtype), "group_size": g, "bias": bias}
    if case.op == "gemm_w8a16":
        g = case.params["group_size"]
        qweight, scales = quantize.quantize_int8_groups(dense, g)
        return {"qweight": qweight.to(device), "scales": scales.to(device, case.dtype),
                "group_size": g, "bias": bias}
    if case.op == "gemm_w8a8_fp8_block":
        block = case.params["block_size"]
        qweight, scales = quantize.quantize_fp8_blocks(dense, block)
        return {"qweight": qweight.to(device), "scales": scales.to(device),
                "block_size": block, "bias": bias}
    if case.op == "gemm_w8a8_int8":
        qweight, scales = quantize.quantize_int8_per_channel(dense)
    else:
        qweight, scales = quantize.quantize_fp8_per_channel(dense)
    return {"qweight": qweight.to(device), "scales": scales.to(device), "bias": bias}


def _check_weight_op(case: Case, impl: Any, reference: Any, device: torch.device) -> None:
    gen = case.generator()
    inputs = _weight_inputs(case, gen, device)
    state = impl.prepare(**{name: _copies((v,))[0] for name, v in inputs.items()})
    ref_state = reference.prepare(**{name: _copies((v,))[0] for name, v in inputs.items()})
    k = case.params["hidden"]
    for t in TOKENS:  # one prepared weight serves every step, as in the engine
        x = randn(gen, (t, k), case.dtype, device)
        compare(f"{case.op}.apply(prepare(...), x [{t}, {k}])",
                impl.apply(state, x.clone()), reference.apply(ref_state, x.clone()), case)
    # out_dtype=float32: what the lm_head asks for, so logits are not rounded to x's dtype
    got = impl.apply(state, x.clone(), torch.float32)
    what = f"{case.op}.apply(prepare(...), x [{t}, {k}], out_dtype=float32)"
    compare(what, got, reference.apply(ref_state, x.clone(), torch.float32), case)
    assert_not_rounded(what, got, case.dtype)
    for spec in FUSIONS.values():  # the fused forms it offers (Impl.fuses)
        if spec.op == case.op and hasattr(impl, spec.method):
            _check_fused_form(spec.replaces, spec.method, case, impl, reference, state,
                              ref_state, gen, device)


def _check_fused_form(replaced: str, method: str, case: Case, impl: Any, reference: Any,
                      state: Any, ref_state: Any, gen: torch.Generator,
                      device: torch.device) -> None:
    """``method`` against the reference's (the composition of ``replaced`` and apply)."""
    k = case.params["hidden"]
    for t in TOKENS:
        if replaced == "silu_and_mul":
            args: tuple = (randn(gen, (t, 2 * k), case.dtype, device),)
        else:  # fused_add_rms_norm
            args = (randn(gen, (t, k), case.dtype, device), randn(gen, (t, k), case.dtype, device),
                    (1 + randn(gen, (k,), torch.float32, device, 0.1)).to(case.dtype), EPS)
        compare(f"{case.op}.{method}(prepare(...), {replaced}'s inputs with {t} tokens)",
                getattr(impl, method)(state, *_copies(args)),
                getattr(reference, method)(ref_state, *_copies(args)), case)


CHECKS: dict[str, Callable[[Case, Any, Any, torch.device], None]] = {
    "rms_norm": _check_rms_norm, "fused_add_rms_norm": _check_fused_add_rms_norm,
    "rotary_embedding": _check_rotary, "silu_and_mul": _check_silu_and_mul,
    "gemm": _check_weight_op, "gemm_w4a16": _check_weight_op, "gemm_w8a16": _check_weight_op,
    "gemm_w8a8_int8": _check_weight_op, "gemm_w8a8_fp8": _check_weight_op,
    "gemm_w8a8_fp8_block": _check_weight_op,
    "attention": check_attention, "sample": check_sample,
    "all_reduce": check_collective, "all_gather": check_collective,
}


def run_case(case: Case, impl: Any, reference: Any, device: torch.device) -> None:
    """Raise Mismatch when ``impl`` disagrees with ``reference`` on ``case``."""
    CHECKS[case.op](case, impl, reference, device)
