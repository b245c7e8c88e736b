"""AITER's adapters (baseboard/platforms/rocm/aiter_*.py) against the torch references, with
the fake ``aiter`` of simulated/ computing on the CPU. What this proves is the plumbing: the
5-D K cache layout pa_fwd_asm reads, the block tables, context lengths and cumulative
lengths handed to it and to the varlen prefill, scales, and every argument's order. It is
the conformance kit's own check per case, run for every case the AITER record accepts.
AMD GPUs never ran it: the fake is AITER's API, not its kernels."""

from __future__ import annotations

import importlib
from types import SimpleNamespace

import pytest
import torch

from baseboard.builtin.plugin import reference_impls
from baseboard.core.attention import AttentionBatch, AttentionSpec
from baseboard.core.errors import ConfigError
from baseboard.core.selection import rejection
from baseboard.platforms.rocm.fp8 import e4m3fn_to_e4m3fnuz
from baseboard.testing.cases import Case, cases_for
from baseboard.testing.checks import run_case
from simulated.environment import MI300X, install_fake, simulate_rocm
from simulated.fixtures import fake_aiter, rocm  # noqa: F401  (fixtures)

CPU = torch.device("cpu")
FUNCTION_OPS = ("rms_norm", "fused_add_rms_norm", "rotary_embedding", "silu_and_mul", "gemm",
                "gemm_w8a8_int8", "gemm_w8a8_fp8")
# (Hq, Hk, dtype): the GQA ratios pa_fwd_asm has kernels for (8, 16), head size 128
ATTENTION = ((8, 1, torch.bfloat16), (16, 1, torch.bfloat16), (16, 2, torch.float16))


def load_reference(op):
    return next(i for i in reference_impls() if i.op == op).load()


def aiter_record(op):
    from baseboard.platforms.rocm.plugin import aiter_impls

    return next(i for i in aiter_impls() if i.op == op)


def accepted_cases(op):
    from baseboard.platforms.rocm.platform import RocmPlatform

    record, platform = aiter_record(op), RocmPlatform()
    return [c for c in cases_for(op) if rejection(record, c.context(platform)) is None]


@pytest.mark.parametrize("op", FUNCTION_OPS)
def test_simulated_aiter_op_matches_the_reference_on_every_accepted_case(rocm, op):
    if op == "gemm_w8a8_fp8":
        # gfx950 computes float8_e4m3fn, as the reference does; gfx942's e4m3fnuz is below
        simulate_rocm(rocm, SimpleNamespace(**{**MI300X.__dict__, "gcnArchName": "gfx950"}))
    install_fake(rocm, "aiter")
    fake_aiter = importlib.import_module("aiter")
    cases = accepted_cases(op)
    assert cases and all(c.dtype in (torch.bfloat16, torch.float16) for c in cases)
    impl, reference = aiter_record(op).load(), load_reference(op)
    for case in cases:
        run_case(case, impl, reference, CPU)
    assert fake_aiter.CALLS, "the adapter did not call aiter"


@pytest.mark.parametrize("heads,kv_heads,dtype", ATTENTION)
def test_simulated_aiter_attention_matches_the_reference(fake_aiter, heads, kv_heads, dtype):
    case = Case("attention", f"H{heads}-KV{kv_heads}-D128-B16", dtype,
                dict(num_heads=heads, num_kv_heads=kv_heads, head_dim=128, block_size=16))
    run_case(case, aiter_record("attention").load(), load_reference("attention"), CPU)
    called = {name for name, _ in fake_aiter.CALLS}
    assert {"reshape_and_cache", "pa_fwd_asm", "flash_attn_varlen_func"} <= called
    assert all(notes["asm_layout"] for name, notes in fake_aiter.CALLS
               if name == "reshape_and_cache")
    # step 2 of the check has a prefill after a cached 20-token prefix: gathered keys
    assert any(name == "flash_attn_varlen_func" and notes["keys"] > notes["sequences"] * 13
               for name, notes in fake_aiter.CALLS)


def spec(**fields):
    values = dict(num_heads=8, num_kv_heads=2, head_dim=128, scale=128 ** -0.5, block_size=16,
                  dtype=torch.bfloat16, device=CPU, max_num_seqs=4, max_model_len=64)
    return AttentionSpec(**{**values, **fields})


def test_simulated_aiter_cache_is_pa_fwd_asms_5d_key_layout(fake_aiter):
    from baseboard.platforms.rocm.aiter_attention import AiterAttention

    attention = AiterAttention(spec())
    assert attention.kv_cache_shape(5) == (2, 5, 2, 16, 16, 8)  # D/x = 128/8, x = 8 bf16
    cache = torch.zeros(attention.kv_cache_shape(5), dtype=torch.bfloat16)
    slots = [3 * 16 + 5, 1 * 16 + 15, 4 * 16 + 0]  # (block, offset) (3, 5), (1, 15), (4, 0)
    batch = AttentionBatch(query_lens=[3], context_lens=[3], block_tables=[[3, 1, 4]],
                           slot_mapping=slots)
    k = torch.randn(3, 2, 128).to(torch.bfloat16)
    v = torch.randn(3, 2, 128).to(torch.bfloat16)
    attention.forward(torch.randn(3, 8, 128).to(torch.bfloat16), k, v, cache,
                      attention.build_metadata(batch))
    for t, slot in enumerate(slots):
        block, offset = divmod(slot, 16)
        for h in range(2):
            for d in (0, 7, 8, 127):
                # keys [nb, Hk, D/x, bs, x]; values [nb, Hk, bs/x, D, x]
                assert cache[0, block, h, d // 8, offset, d % 8] == k[t, h, d]
                assert cache[1].view(5, 2, 2, 128, 8)[block, h, offset // 8, d, offset % 8] \
                    == v[t, h, d]


def test_simulated_aiter_decode_hands_pa_fwd_asm_int32_tables_and_lengths(fake_aiter):
    from baseboard.platforms.rocm.aiter_attention import AiterAttention

    metadata = AiterAttention(spec()).build_metadata(AttentionBatch(
        query_lens=[1, 1, 4], context_lens=[17, 3, 4], block_tables=[[2, 0], [1], [3]],
        slot_mapping=[0 * 16 + 0, 1 * 16 + 2, 48, 49, 50, 51]))
    assert metadata.decode.block_tables.tolist() == [[2, 0], [1, 0]]
    assert metadata.decode.context_lens.tolist() == [17, 3]
    assert metadata.decode.block_tables.dtype == torch.int32
    assert metadata.prefill.cu_seqlens_q.tolist() == [0, 4]
    assert metadata.prefill.context_slots is None  # from position 0: the step's own k, v


def test_aiter_attention_refuses_a_softmax_scale_pa_fwd_asm_cannot_apply(fake_aiter):
    from baseboard.platforms.rocm.aiter_attention import AiterAttention

    with pytest.raises(ConfigError, match="scale is 0.5.*BASEBOARD_ATTENTION_BACKEND=triton"):
        AiterAttention(spec(scale=0.5))


def test_e4m3fn_weights_keep_their_values_as_e4m3fnuz():
    qweight = (torch.randn(64, 96) * 100).to(torch.float8_e4m3fn)
    qweight.view(torch.int8)[0, :4] = -128  # negative zero in float8_e4m3fn
    scales = torch.rand(64) + 0.5
    fnuz, doubled = e4m3fn_to_e4m3fnuz(qweight, scales)
    assert fnuz.dtype == torch.float8_e4m3fnuz
    assert torch.equal(fnuz.float() * doubled[:, None], qweight.float() * scales[:, None])
    assert not fnuz.float().isnan().any()  # 0x80 would be NaN in float8_e4m3fnuz
    assert torch.equal(doubled, scales * 2)


def test_simulated_fp8_prepare_on_gfx942_computes_in_e4m3fnuz(fake_aiter):
    from baseboard.platforms.rocm.aiter_gemm import AiterGemmW8A8Fp8

    qweight = (torch.randn(32, 64) * 10).to(torch.float8_e4m3fn)
    state = AiterGemmW8A8Fp8.prepare(qweight, torch.full((32,), 0.01), None)
    assert state.qweight.dtype == torch.float8_e4m3fnuz
    assert torch.equal(state.scales.view(-1), torch.full((32,), 0.02))
    AiterGemmW8A8Fp8.apply(state, torch.randn(5, 64).to(torch.bfloat16))
    assert [n for n, _ in fake_aiter.CALLS] == ["dynamic_per_token_scaled_quant", "gemm_a8w8_CK"]
    assert all(notes["dtype"] == torch.float8_e4m3fnuz for _, notes in fake_aiter.CALLS)


def test_simulated_fp8_on_gfx942_is_the_product_on_the_e4m3fnuz_grid(fake_aiter):
    """gfx942 quantizes activations to float8_e4m3fnuz (amax / 240): another grid than the
    float8_e4m3fn reference's (amax / 448), so the result is compared with the same product
    computed here on the e4m3fnuz grid."""
    from baseboard.platforms.rocm.aiter_gemm import AiterGemmW8A8Fp8
    from baseboard.testing import quantize

    qweight, scales = quantize.quantize_fp8_per_channel(torch.randn(80, 96) / 10)
    bias = torch.randn(80)  # float32: CK takes it in the output dtype, converted per call
    x = torch.randn(7, 96).to(torch.bfloat16)
    got = AiterGemmW8A8Fp8.apply(AiterGemmW8A8Fp8.prepare(qweight, scales, bias), x)
    x_scale = x.float().abs().amax(-1, keepdim=True) / 240.0
    xq = (x.float() / x_scale).to(torch.float8_e4m3fnuz).float()
    expected = (xq @ (qweight.float() * scales[:, None]).T) * x_scale + bias.float()
    torch.testing.assert_close(got.float(), expected.to(torch.bfloat16).float(),
                               atol=1e-2, rtol=1e-2)
