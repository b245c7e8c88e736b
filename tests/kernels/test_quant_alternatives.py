"""torch's own quantized GEMMs (quant_alternatives.py) against the references: _scaled_mm and
_int_mm on the CPU, where torch has them; tinygemm (CUDA only) in test_quant_gpu.py."""

from __future__ import annotations

import pytest
import torch

from baseboard.core.errors import ConfigError
from baseboard.core.quant import PER_CHANNEL, QuantScheme
from baseboard.core.selection import SelectionContext
from baseboard.kernels.torch import quant_alternatives as alt
from baseboard.kernels.torch import quant_gemm as reference
from baseboard.platforms.cuda.platform import CudaPlatform
from baseboard.testing import quantize

PAIRS = {"fp8": (alt.ScaledMmFp8, reference.GemmW8A8Fp8, quantize.quantize_fp8_per_channel),
         "int8": (alt.IntMmInt8, reference.GemmW8A8Int8, quantize.quantize_int8_per_channel)}


@pytest.mark.parametrize("kind", PAIRS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_torch_w8a8_matches_the_reference(kind, dtype):
    impl, ref, quantizer = PAIRS[kind]
    k, n = 96, 80
    qweight, scales = quantizer(torch.randn(n, k) / k ** 0.5)
    bias = torch.randn(n).to(dtype) * 0.1
    state, ref_state = impl.prepare(qweight, scales, bias), ref.prepare(qweight, scales, bias)
    x = torch.randn(2, 7, k).to(dtype)  # leading dims are kept
    for out_dtype in (None, torch.float32):
        got, want = impl.apply(state, x, out_dtype), ref.apply(ref_state, x, out_dtype)
        assert got.shape == (2, 7, n) and got.dtype == want.dtype
        # bf16: the bias is added to the rounded product, one rounding more
        torch.testing.assert_close(got, want, rtol=1e-2 if got.dtype == torch.bfloat16 else 1e-5,
                                   atol=1e-2 if got.dtype == torch.bfloat16 else 1e-5)


def test_tinygemm_prepare_names_a_group_it_cannot_take():
    codes, scales, offsets = quantize.quantize_4bit_groups(torch.randn(64, 96), 16)
    with pytest.raises(ConfigError, match="groups of 16.*32, 64, 128, 256"):
        alt.TinyGemmW4A16.prepare(codes, scales, offsets, 16, None)


def context(dtype: torch.dtype, *schemes: QuantScheme) -> SelectionContext:
    return SelectionContext(CudaPlatform(), dtype=dtype, quant_schemes=schemes)


@pytest.mark.parametrize("supports,ctx,reason", [
    (alt.supports_tinygemm, context(torch.float16), "bfloat16 models only"),
    (alt.supports_tinygemm,
     context(torch.bfloat16, QuantScheme("gemm_w4a16", "uint4", PER_CHANNEL)), "per-channel"),
    (alt.supports_scaled_mm,
     context(torch.bfloat16, QuantScheme("gemm_w8a8_fp8", "float8_e4m3fn", block=(128, 128),
                                         activation="float8_e4m3fn")), "block 128x128"),
    (alt.supports_int_mm,
     context(torch.bfloat16, QuantScheme("gemm_w8a8_int8", "int8", 64, activation="int8")),
     "g64"),
])
def test_supports_names_what_it_rejects(supports, ctx, reason):
    verdict = supports(ctx)
    assert verdict and reason in verdict


def test_supports_accepts_what_they_take():
    assert alt.supports_tinygemm(context(torch.bfloat16, QuantScheme(
        "gemm_w4a16", "uint4", 128, symmetric=False))) is None
    assert alt.supports_int_mm(context(torch.float16, QuantScheme(
        "gemm_w8a8_int8", "int8", activation="int8"))) is None
