"""The cpu platform's quantized GEMMs (codes kept packed) against the torch references:
every path of the kernel (codes decoded in registers, AMX tiles, a dequantized panel), bf16
and float32 activations, group sizes 16 to per-channel, odd shapes."""

from __future__ import annotations

import pytest
import torch

from baseboard.core.errors import ModelError
from baseboard.kernels.torch import quant_gemm as reference
from baseboard.platforms.cpu import native

pytestmark = pytest.mark.skipif(native.unavailable_reason() is not None,
                                reason=str(native.unavailable_reason()))


def _impls():
    from baseboard.platforms.cpu import quant_gemm
    return quant_gemm


def _relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.float() - want.float()).abs().amax() / want.float().abs().amax()).item()


def _w4(n, k, g, scale_dtype, gen):
    q = torch.randint(0, 16, (n, k), dtype=torch.uint8, generator=gen)
    scales = (torch.rand(n, k // g, generator=gen) / 8).to(scale_dtype)
    offsets = (torch.randn(n, k // g, generator=gen) / 4).to(scale_dtype)
    return q, scales, offsets


def _w8(n, k, g, scale_dtype, gen):
    q = torch.randint(-128, 128, (n, k), dtype=torch.int8, generator=gen)
    return q, (torch.rand(n, k // g, generator=gen) / 64).to(scale_dtype)


def _prepared(bits, dtype, n, k, g, scale_dtype, bias, gen):
    """(native state, its apply, reference state, reference apply)."""
    q = _impls()
    if bits == 4:
        impl = q.Avx512W4A16 if dtype == torch.bfloat16 else q.Avx512W4A16Float32
        args = (*_w4(n, k, g, scale_dtype, gen), g, bias)
        ref = reference.GemmW4A16
    else:
        impl = q.Avx512W8A16 if dtype == torch.bfloat16 else q.Avx512W8A16Float32
        args = (*_w8(n, k, g, scale_dtype, gen), g, bias)
        ref = reference.GemmW8A16
    return impl.prepare(*args), impl.apply, ref.prepare(*args), ref.apply


ROWS = (1, 2, 3, 5, 8, 9, 17, 33)  # the register path's tiles and chains; AMX's 16-row tiles


def _paths(dtype):
    """The kernel's paths for activations of ``dtype``: (name, fused_rows, amx)."""
    paths = [("registers", 64, False), ("dequantizing", 0, False)]
    if dtype == torch.bfloat16 and _impls().amx_enabled():
        paths.append(("amx", 0, True))
    return paths


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("n,k,g", [(128, 64, 32), (70, 96, 16), (129, 257, 257), (40, 256, 128),
                                   (64, 96, 48)])
def test_every_path_matches_the_reference_at_every_row_count(bits, dtype, n, k, g):
    gen = torch.Generator().manual_seed(n * k + g + bits)
    bias = torch.randn(n, generator=gen).to(dtype) if n % 2 == 0 else None
    state, apply, ref_state, ref_apply = _prepared(bits, dtype, n, k, g, dtype, bias, gen)
    for path, fused_rows, amx in _paths(dtype):
        state.fused_rows, state.amx = fused_rows, amx
        for rows in ROWS:
            x = torch.randn(rows, k, generator=gen).to(dtype)
            # against float32 weights: the register and AMX paths keep the codes exact and
            # scale in float32; the dequantizing path rounds each weight to x's dtype
            want = ref_apply(ref_state, x, torch.float32)
            got32 = apply(state, x, torch.float32)
            assert got32.dtype == torch.float32
            exact = dtype == torch.float32 or path != "dequantizing"
            limit = 2e-6 if exact else 2 ** -7
            assert _relative_error(got32, want) <= limit, (path, rows)
            got = apply(state, x)
            assert got.dtype == dtype and got.shape == (rows, n)
            assert _relative_error(got, want) <= (2 ** -7 if dtype == torch.bfloat16 else 2e-6)


def test_the_defaults_choose_the_register_path_for_decode():
    gen = torch.Generator().manual_seed(9)
    bf16, *_ = _prepared(4, torch.bfloat16, 32, 64, 32, torch.float16, None, gen)
    f32, *_ = _prepared(8, torch.float32, 32, 64, 32, torch.float16, None, gen)
    assert bf16.fused_rows >= 1 and f32.fused_rows >= 8 and not f32.amx
    assert bf16.amx == _impls().amx_enabled()


@pytest.mark.parametrize("scale_dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_scales_of_every_dtype_are_read_as_stored(scale_dtype):
    gen = torch.Generator().manual_seed(3)
    state, apply, ref_state, ref_apply = _prepared(4, torch.float32, 64, 128, 32, scale_dtype,
                                                   None, gen)
    assert state.scales.dtype == scale_dtype  # kept, not widened: 2 bytes a group
    x = torch.randn(2, 128, generator=gen)
    assert _relative_error(apply(state, x), ref_apply(ref_state, x)) <= 2e-6


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_dequantizing_path_holds_the_references_weights(bits, dtype):
    """The dequantizing path computes each weight as the reference dequantizes it: the same
    values, bit for bit."""
    gen = torch.Generator().manual_seed(bits)
    state, _, ref_state, _ = _prepared(bits, dtype, 100, 96, 32, torch.float16, None, gen)
    assert torch.equal(state.dequantized(dtype), ref_state.weight.dequantize(dtype))


def test_codes_stay_packed():
    """4-bit codes take half a byte a weight, int8 one byte: the point of the kernel."""
    gen = torch.Generator().manual_seed(0)
    n, k = 96, 512
    w4, *_ = _prepared(4, torch.bfloat16, n, k, 32, torch.float16, None, gen)
    w8, *_ = _prepared(8, torch.bfloat16, n, k, 32, torch.float16, None, gen)
    assert w4.codes.numel() == n * k // 2 and w8.codes.numel() == n * k
    assert w4.codes.dtype == w8.codes.dtype == torch.uint8


def test_leading_dimensions_strided_rows_and_other_dtypes():
    gen = torch.Generator().manual_seed(1)
    bias = torch.randn(48, generator=gen).bfloat16()
    state, apply, ref_state, ref_apply = _prepared(4, torch.bfloat16, 48, 64, 32,
                                                   torch.bfloat16, bias, gen)
    x = torch.randn(2, 3, 64, generator=gen).bfloat16()
    got = apply(state, x)
    assert got.shape == (2, 3, 48)
    assert _relative_error(got, ref_apply(ref_state, x)) <= 2 ** -7
    strided = torch.randn(4, 128, generator=gen).bfloat16()[:, ::2]
    assert _relative_error(apply(state, strided), ref_apply(ref_state, strided)) <= 2 ** -7
    x16 = torch.randn(3, 64, generator=gen).half()  # float16 rows: F.linear, bf16 weights
    assert _relative_error(apply(state, x16), ref_apply(ref_state, x16)) <= 2 ** -7


def test_amx_is_used_exactly_where_the_cpu_and_linux_allow_it():
    from baseboard.platforms.cpu.platform import _cpu_flags
    reason = _impls().amx_unavailable_reason()
    if "amx_bf16" not in _cpu_flags():
        assert reason is not None and "amx_bf16" in reason
    assert _impls().amx_enabled() == (reason is None)


def test_an_odd_group_size_is_refused_for_bf16_with_the_alternative():
    q = _impls()
    codes, scales, offsets = _w4(8, 90, 15, torch.float32, torch.Generator().manual_seed(0))
    with pytest.raises(ModelError, match="group_size 15 is odd.*dequant_bf16"):
        q.Avx512W4A16.prepare(codes, scales, offsets, 15, None)
    # float32 activations run by single k: any group size divides
    state = q.Avx512W4A16Float32.prepare(codes, scales, offsets, 15, None)
    x = torch.randn(1, 90)
    ref = reference.GemmW4A16
    want = ref.apply(ref.prepare(codes, scales, offsets, 15, None), x)
    assert _relative_error(q.Avx512W4A16Float32.apply(state, x), want) <= 2e-6


def test_selection_rejects_an_odd_group_size_for_the_bf16_kernel():
    from baseboard.core.quant import QuantScheme
    from baseboard.core.selection import SelectionContext
    from baseboard.platforms.cpu.platform import CpuPlatform
    from baseboard.platforms.cpu.plugin import bf16_quant_supported

    def ctx(group):
        return SelectionContext(platform=CpuPlatform(), dtype=torch.bfloat16,
                                quant_schemes=(QuantScheme("gemm_w4a16", "uint4", group, False),))
    assert bf16_quant_supported(ctx(32)) is None
    assert "odd group size" in bf16_quant_supported(ctx(15))
