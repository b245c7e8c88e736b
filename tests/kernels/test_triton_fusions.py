"""The fused forms of the Triton kernels (core.ops.FUSIONS) against the unfused kernels they
replace, in Triton's interpreter, and how selection decides where they run.

Each fused form must give exactly what the two kernels give one after the other: the
model swaps one for the other, and greedy tokens must not change with the plan.
"""

from __future__ import annotations

import os
import random

import pytest
import torch

if torch.cuda.is_available():  # a GPU runs the kernels for real: tests/*/test_*_gpu.py
    pytest.skip("interpreter tests are for machines without a GPU", allow_module_level=True)
os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported (tests/conftest.py)

tl = pytest.importorskip("triton.language")  # optional: the cuda extra installs it

from baseboard.builtin import plugin as core_plugin  # noqa: E402
from baseboard.core.attention import AttentionSpec  # noqa: E402
from paged_batches import make_batch  # noqa: E402
from baseboard.core.errors import RegistrationError  # noqa: E402
from baseboard.core.registry import Impl, Registry  # noqa: E402
from baseboard.core.selection import Choice, SelectionContext, select_plan  # noqa: E402
from baseboard.kernels.torch import gemm  # noqa: E402
from baseboard.kernels.triton import activation as triton_activation  # noqa: E402
from baseboard.kernels.triton import attention as triton_attention  # noqa: E402
from baseboard.kernels.triton import gemm as triton_gemm  # noqa: E402
from baseboard.kernels.triton import kv_cache as triton_kv_cache  # noqa: E402
from baseboard.kernels.triton import norm as triton_norm  # noqa: E402
from baseboard.kernels.triton import rotary as triton_rotary  # noqa: E402
from baseboard.kernels.triton.records import triton_impls  # noqa: E402
from baseboard.platforms.cpu.platform import CpuPlatform  # noqa: E402

pytestmark = [pytest.mark.interpreter, pytest.mark.usefixtures("triton_interpreter")]

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def qkv_views(qkv: torch.Tensor, heads: tuple[int, int], head_dim: int):
    """q [T, Hq, D], k, v [T, Hk, D]: strided views of one projection, as a model has them."""
    num_heads, num_kv_heads = heads
    q, k, v = qkv.view(qkv.shape[0], -1, head_dim).split(
        [num_heads, num_kv_heads, num_kv_heads], dim=1)
    return q, k, v


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("head_dim", [32, 80])
def test_rotary_write_kv_equals_rotary_then_write(dtype, head_dim):
    """q and k rotated in place and the cache written exactly as the two kernels do it,
    padding tokens (negative slots) rotated but not cached."""
    tokens, heads = 5, (4, 2)
    qkv = torch.randn(tokens, (heads[0] + 2 * heads[1]) * head_dim).to(dtype)
    positions = torch.randint(0, 40, (tokens,))
    cos_sin = torch.randn(40, head_dim)
    slots = torch.tensor([17, 3, -1, 63, 40])
    unfused, fused = qkv.clone(), qkv.clone()
    want_cache = torch.full((2, 4, 16, heads[1], head_dim), float("nan"), dtype=dtype)
    got_cache = want_cache.clone()
    q, k, v = qkv_views(unfused, heads, head_dim)
    triton_rotary.rotary_embedding(positions, q, k, cos_sin)
    triton_kv_cache.write_kv(k, v, want_cache, slots)
    q, k, v = qkv_views(fused, heads, head_dim)
    got_q, got_k = triton_kv_cache.rotary_write_kv(positions, q, k, v, cos_sin, got_cache, slots)
    assert got_q.data_ptr() == q.data_ptr() and got_k.data_ptr() == k.data_ptr()
    assert not torch.equal(fused, qkv)  # something was rotated
    assert torch.equal(fused, unfused)
    assert torch.equal(got_cache.nan_to_num(-7.0), want_cache.nan_to_num(-7.0))


@pytest.mark.parametrize("query_lens,context_lens", [
    ([1, 1, 7, 20], [50, 130, 7, 90]),  # decodes, a prefill from 0, one with a cached prefix
    ([1, 9], [33, 9]),  # a decode and a dense prefill (over the step's own keys)
])
def test_forward_rotary_equals_rotary_then_forward(query_lens, context_lens):
    dtype, head_dim, block_size = torch.bfloat16, 32, 16
    spec = AttentionSpec(4, 2, head_dim, head_dim ** -0.5, block_size, dtype,
                         torch.device("cpu"), max_num_seqs=4, max_model_len=160)
    attention = triton_attention.TritonAttention(spec)
    batch = make_batch(query_lens, context_lens, block_size, 40, random.Random(0))
    tokens = len(batch.slot_mapping)
    qkv = torch.randn(tokens, 8 * head_dim).to(dtype)
    positions = torch.tensor([c - q + i for q, c in zip(query_lens, context_lens)
                              for i in range(q)])
    cos_sin = torch.randn(160, head_dim)
    cache = torch.randn(attention.kv_cache_shape(40)).to(dtype)
    unfused_cache, fused_cache = cache.clone(), cache.clone()
    q, k, v = qkv_views(qkv.clone(), (4, 2), head_dim)
    q, k = triton_rotary.rotary_embedding(positions, q, k, cos_sin)
    want = attention.forward(q, k, v, unfused_cache, attention.build_metadata(batch))
    q, k, v = qkv_views(qkv.clone(), (4, 2), head_dim)
    got = attention.forward_rotary(positions, q, k, v, cos_sin, fused_cache,
                                   attention.build_metadata(batch))
    assert torch.isfinite(got.float()).all()
    assert torch.equal(got, want)
    assert torch.equal(fused_cache, unfused_cache)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,k,bias", [(7, 1024, False), (9, 1500, True)])
@pytest.mark.parametrize("rows", [1, 3])
def test_gemm_apply_silu_and_mul_equals_silu_then_apply(dtype, n, k, bias, rows):
    """One row through the gated GEMV (K a multiple of the tile or not), more rows through
    silu_and_mul and cuBLAS: either way the unfused result, to the bit."""
    gen = torch.Generator().manual_seed(n * k + rows)
    weight = torch.randn(n, k, generator=gen).to(dtype)
    state = gemm.Gemm.prepare(weight, torch.randn(n, generator=gen).to(dtype) if bias else None)
    x = torch.randn(rows, 2 * k, generator=gen).to(dtype)
    want = triton_gemm.Gemm.apply(state, triton_activation.silu_and_mul(x))
    got = triton_gemm.Gemm.apply_silu_and_mul(state, x)
    assert got.shape == (rows, n) and torch.equal(got, want)
    # the reference's composition says the same (to rounding: other kernels)
    reference = gemm.Gemm.apply_silu_and_mul(state, x)
    assert torch.allclose(got.float(), reference.float(), rtol=0.05, atol=0.05 * k ** 0.5)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,k,bias", [(7, 1024, False), (9, 1500, True)])
@pytest.mark.parametrize("rows", [1, 3])
def test_gemm_apply_add_rms_norm_equals_norm_then_apply(dtype, n, k, bias, rows):
    """The residual add and RMSNorm in the GEMV's input load (one row; more rows: the norm
    kernel and cuBLAS): the product and the sum as the two kernels give them, the sum in a
    tensor of its own at one row (the programs all read the residual)."""
    gen = torch.Generator().manual_seed(n * k + rows)
    weight = torch.randn(n, k, generator=gen).to(dtype)
    state = gemm.Gemm.prepare(weight, torch.randn(n, generator=gen).to(dtype) if bias else None)
    x, residual = (torch.randn(rows, k, generator=gen).to(dtype) for _ in range(2))
    norm_weight = torch.randn(k, generator=gen).to(dtype)
    normed, want_sum = triton_norm.fused_add_rms_norm(x.clone(), residual.clone(), norm_weight,
                                                      1e-6)
    want = triton_gemm.Gemm.apply(state, normed)
    got, got_sum = triton_gemm.Gemm.apply_add_rms_norm(state, x.clone(), residual.clone(),
                                                       norm_weight, 1e-6)
    assert torch.equal(got_sum, want_sum)
    # the row's statistics are summed in another order than the norm kernel's: equal to
    # rounding (bitwise in the interpreter)
    assert torch.allclose(got.float(), want.float(), rtol=1e-2, atol=1e-2 * k ** 0.5)
    reference, reference_sum = gemm.Gemm.apply_add_rms_norm(state, x, residual, norm_weight,
                                                            1e-6)
    assert torch.allclose(got_sum.float(), reference_sum.float(), rtol=1e-2, atol=1e-2)
    assert torch.allclose(got.float(), reference.float(), rtol=0.05, atol=0.05 * k ** 0.5)


def cpu_registry(*extra: Impl) -> Registry:
    registry = Registry()
    for impl in core_plugin.baseboard_ops():
        registry.add(impl, "baseboard")
    for impl in (*triton_impls(("cpu",), priority=-10), *extra):
        registry.add(impl, "cpu")
    return registry


def triton_plan(fuse: bool = True, **others: str):
    ctx = SelectionContext(CpuPlatform(), dtype=torch.float32, head_dim=32, block_size=16,
                           num_heads=4, num_kv_heads=2, fuse=fuse)
    names = {op: "triton" for op in ("rotary_embedding", "silu_and_mul", "gemm", "attention",
                                     "fused_add_rms_norm")}
    names.update(others)
    return select_plan(cpu_registry(), ctx,
                       {op: Choice(name, "argument") for op, name in names.items()})


def test_a_plan_fuses_where_one_implementation_serves_both_ops():
    plan = triton_plan()
    assert plan.fused("rotary_embedding") and plan.fused("silu_and_mul")
    assert plan.decisions["attention"].as_dict()["fusions"] == {"rotary_embedding": "fused"}
    assert plan.fused("fused_add_rms_norm")
    assert plan.decisions["gemm"].fusions == {"silu_and_mul": "fused",
                                              "fused_add_rms_norm": "fused"}


def test_choosing_another_implementation_of_the_replaced_op_declines_the_fusion():
    plan = triton_plan(rotary_embedding="torch", silu_and_mul="torch")
    assert not plan.fused("rotary_embedding") and not plan.fused("silu_and_mul")
    assert plan.decisions["attention"].fusions["rotary_embedding"] == \
        "not fused: rotary_embedding runs 'torch', not 'triton'"


def test_fuse_off_runs_every_op_apart():
    plan = triton_plan(fuse=False)
    assert not plan.fused("rotary_embedding") and not plan.fused("silu_and_mul")
    assert plan.decisions["gemm"].fusions["silu_and_mul"] == "not fused: BASEBOARD_FUSE=0"


def test_an_implementation_that_offers_no_fusion_composes():
    plan = triton_plan(gemm="torch", attention="torch")
    assert not plan.fused("rotary_embedding") and not plan.fused("silu_and_mul")
    assert plan.decisions["gemm"].fusions == {}


def test_a_fusion_for_another_op_is_a_registration_error():
    wrong = Impl("gemm", "mine", "baseboard.kernels.torch.gemm:Gemm", fuses=("rotary_embedding",))
    with pytest.raises(RegistrationError, match="fuses='rotary_embedding'.*those are: "
                                                "silu_and_mul, fused_add_rms_norm"):
        cpu_registry(wrong)


class GemmWithoutFusedForm:
    """A GEMM with the op's methods and none of its fusion's."""

    prepare = staticmethod(gemm.Gemm.prepare)
    apply = staticmethod(gemm.Gemm.apply)


def test_a_declared_fusion_without_its_method_fails_at_binding():
    """A plugin that declares a fusion it does not implement fails when its plan is bound,
    not mid-generation."""
    liar = Impl("gemm", "liar", f"{__name__}:GemmWithoutFusedForm", fuses=("silu_and_mul",))
    ctx = SelectionContext(CpuPlatform(), dtype=torch.float32)
    with pytest.raises(RegistrationError, match="gemm=liar .*apply_silu_and_mul is missing"):
        select_plan(cpu_registry(liar), ctx, {"gemm": Choice("liar", "argument")})


def test_info_says_which_form_the_layers_run():
    from baseboard.frontend.info import collect, render

    backends = {op: "triton" for op in ("rotary_embedding", "silu_and_mul", "gemm",
                                        "attention", "fused_add_rms_norm")}
    fused = render(collect(platform="cpu", cli_backends=backends, environ={}))
    assert "+ rotary_embedding: fused" in fused and "+ silu_and_mul: fused" in fused
    apart = render(collect(platform="cpu", cli_backends={**backends, "silu_and_mul": "torch"},
                           environ={"BASEBOARD_FUSE": "1"}))
    assert "+ silu_and_mul: not fused: silu_and_mul runs 'torch', not 'triton'" in apart
    off = collect(platform="cpu", cli_backends=backends, environ={"BASEBOARD_FUSE": "0"})
    assert off["ops"]["attention"]["fusions"] == {
        "rotary_embedding": "not fused: BASEBOARD_FUSE=0"}
