"""gemlite's records on cuda, selected for a CUDA context on this machine (no GPU needed:
selection reads records and supports(), and imports no implementation). Its kernels
against the reference are in test_gemlite_gpu.py."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from baseboard.core.errors import ConfigError, SelectionError
from baseboard.core.quant import PER_CHANNEL, QuantScheme
from baseboard.core.selection import Choice, SelectionContext, bind, select_plan
from baseboard.kernels import gemlite_gemm
from baseboard.plugins.catalog import build_catalog
from baseboard.testing import quantize

W4_G128 = QuantScheme("gemm_w4a16", "uint4", 128, symmetric=False)
W8_CHANNEL = QuantScheme("gemm_w8a16", "int8", PER_CHANNEL)


def cuda_context(dtype=torch.bfloat16, *schemes: QuantScheme):
    catalog = build_catalog(None, ())
    return catalog, SelectionContext(catalog.platforms["cuda"], dtype=dtype, quant_schemes=schemes)


@pytest.mark.skipif(importlib.util.find_spec("gemlite") is not None,
                    reason="gemlite is installed here")
@pytest.mark.parametrize("op,scheme", [("gemm_w4a16", W4_G128), ("gemm_w8a16", W8_CHANNEL)])
def test_absent_gemlite_is_rejected_with_the_install_command(op, scheme):
    catalog, ctx = cuda_context(torch.bfloat16, scheme)
    decision = select_plan(catalog.registry, ctx, {}).decisions[op]
    assert decision.selected == "triton"  # the default whether gemlite is there or not
    gemlite = next(c for c in decision.candidates if c.name == "gemlite")
    assert not gemlite.accepted and "pip install 'gemlite>=0.6'" in gemlite.reason
    with pytest.raises(SelectionError, match="gemlite.*cannot run here.*needs gemlite"):
        select_plan(catalog.registry, ctx, {op: Choice("gemlite", "--backend")})


def test_gemlite_ranks_below_the_triton_kernels_and_tinygemm():
    catalog, _ = cuda_context()
    for op in ("gemm_w4a16", "gemm_w8a16"):
        by_name = {impl.name: impl for impl in catalog.registry.for_op(op)
                   if impl.runs_on("cuda")}
        assert by_name["gemlite"].priority < by_name["triton"].priority
        assert by_name["gemlite"].priority < by_name.get("tinygemm", by_name["triton"]).priority


def reason(op: str, dtype=torch.bfloat16, *schemes: QuantScheme):
    _, ctx = cuda_context(dtype, *schemes)
    return gemlite_gemm.supports_gemlite(op)(ctx)


@pytest.mark.parametrize("op,dtype,scheme,expected", [
    ("gemm_w4a16", torch.float32, W4_G128, "bfloat16 or float16 models only"),
    ("gemm_w4a16", torch.bfloat16, QuantScheme("gemm_w4a16", "uint4", 16), "group size 16"),
    ("gemm_w4a16", torch.float16, QuantScheme("gemm_w4a16", "uint4", 96), "powers of two"),
    ("gemm_w8a16", torch.bfloat16, QuantScheme("gemm_w8a16", "int8", 64, symmetric=False),
     "asymmetric 8-bit"),
    ("gemm_w8a16", torch.bfloat16, QuantScheme("gemm_w8a16", "float8_e4m3fn"),
     "weights of type float8_e4m3fn"),
    ("gemm_w8a16", torch.bfloat16, QuantScheme("gemm_w8a16", "int8", block=(128, 128)),
     "2-D block scales"),
])
def test_supports_names_the_scheme_it_rejects(op, dtype, scheme, expected):
    verdict = reason(op, dtype, scheme)
    assert verdict and expected in verdict


def test_supports_rejects_a_model_with_one_layout_it_cannot_take():
    odd = QuantScheme("gemm_w4a16", "uint4", 16)
    assert "g16" in reason("gemm_w4a16", torch.bfloat16, W4_G128, odd)


@pytest.mark.parametrize("op,scheme", [
    ("gemm_w4a16", W4_G128),
    ("gemm_w4a16", QuantScheme("gemm_w4a16", "uint4", 32, act_order=True)),
    ("gemm_w4a16", QuantScheme("gemm_w4a16", "int4", PER_CHANNEL)),
    ("gemm_w8a16", W8_CHANNEL),
    ("gemm_w8a16", QuantScheme("gemm_w8a16", "int8", 128)),
])
def test_supports_accepts_what_gemlite_takes(op, scheme):
    assert reason(op, torch.bfloat16, scheme) is None
    assert reason(op, torch.float16, scheme) is None


def test_supports_rejects_the_cpu_platform():
    catalog = build_catalog(None, ())
    ctx = SelectionContext(catalog.platforms["cpu"], dtype=torch.bfloat16)
    assert "NVIDIA" in gemlite_gemm.supports_gemlite("gemm_w4a16")(ctx)


def test_prepare_names_a_weight_gemlite_cannot_take():
    # checked before gemlite is imported, so this runs where gemlite is absent
    codes, scales, offsets = quantize.quantize_4bit_groups(torch.randn(64, 96), 32)
    with pytest.raises(ConfigError, match="CUDA GPUs only"):
        gemlite_gemm.GemliteW4A16.prepare(codes, scales, offsets, 32, None)


@pytest.mark.parametrize("op", ["gemm_w4a16", "gemm_w8a16"])
def test_the_records_load_and_match_the_ops_signatures(op):
    catalog = build_catalog(None, ())
    impl = next(i for i in catalog.registry.for_op(op) if i.name == "gemlite")
    loaded = bind(impl, catalog.registry.reference(op))  # raises on a signature mismatch
    assert callable(loaded.prepare) and callable(loaded.apply)
