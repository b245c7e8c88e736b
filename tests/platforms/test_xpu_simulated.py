"""The xpu platform in a simulated environment: torch.xpu answering as one Intel Data Center
GPU Max 1550, and a fake XPU build of Intel Extension for PyTorch
(simulated/fake_ipex_xpu). Proves detection, device properties, the distributed backend,
that the Triton kernels are registered for xpu, and that IPEX's ops are selected above them
and match the references. No Intel GPU ran any of this."""

from __future__ import annotations

import pytest
import torch

from baseboard.builtin.plugin import reference_impls
from baseboard.core.registry import ENVIRONMENT, UNSUPPORTED
from baseboard.core.selection import plan_warnings, rejection
from baseboard.frontend.plan import resolve_plan
from baseboard.testing.cases import cases_for
from baseboard.testing.checks import run_case
from simulated.environment import forget_modules
from simulated.fixtures import fake_ipex_xpu, xpu  # noqa: F401  (fixtures)

IPEX_OPS = ("attention", "rms_norm", "fused_add_rms_norm", "rotary_embedding", "silu_and_mul")
TRITON_OPS = ("gemm", "sample")


def resolve(environ=None):
    return resolve_plan(environ=environ or {}, dtype=torch.bfloat16, head_dim=128,
                        num_heads=32, num_kv_heads=8, block_size=16)


def candidate(resolution, op, name="ipex"):
    return next(c for c in resolution.plan.decisions[op].candidates if c.name == name)


def test_simulated_xpu_is_detected_with_its_properties(xpu):
    resolution = resolve()
    platform = resolution.platform.platform
    assert platform.name == "xpu" and platform.device_type == "xpu"
    assert resolution.platform.detections["xpu"].reason == "1 XPU device(s) visible"
    assert platform.capability() == "Intel(R) Data Center GPU Max 1550, 448 Xe cores"
    assert platform.memory() == (63 << 30, 64 << 30)
    assert platform.device() == torch.device("xpu", 0)


def test_xpu_distributed_backend_is_xccl():
    from baseboard.platforms.xpu.platform import XpuPlatform

    assert XpuPlatform().dist_backend == "xccl"


def test_simulated_xpu_runs_the_triton_kernels_without_ipex(xpu):
    resolution = resolve()
    for op in (*IPEX_OPS, *TRITON_OPS):
        decision = resolution.plan.decisions[op]
        assert (decision.selected, decision.plugin) == ("triton", "xpu"), op
    missing = candidate(resolution, "rms_norm")
    assert missing.kind == UNSUPPORTED and "intel-extension-for-pytorch is not installed" \
        in missing.reason
    assert plan_warnings([], resolution.plan) == []  # an info line, not a warning


def test_simulated_ipex_xpu_ops_are_selected_above_triton(fake_ipex_xpu):
    plan = resolve().plan
    for op in IPEX_OPS:
        decision = plan.decisions[op]
        assert (decision.selected, decision.plugin) == ("ipex", "xpu"), op
        assert decision.why == "preferred by platform xpu"
    for op in TRITON_OPS:
        assert plan.selected()[op] == "triton", op


@pytest.mark.parametrize("version,reason", [
    ("2.8.0+cpu", "not an XPU build (+xpu)"),
    ("1.13.120+xpu", "built for torch 1.13"),
])
def test_simulated_unusable_ipex_build_is_a_warning_naming_it(xpu, monkeypatch, version, reason):
    from simulated.environment import install_fake

    monkeypatch.setenv("SIMULATED_IPEX_VERSION", version)
    install_fake(monkeypatch, "intel_extension_for_pytorch")
    resolution = resolve()
    rejected = candidate(resolution, "rms_norm")
    assert rejected.kind == ENVIRONMENT and reason in rejected.reason
    assert resolution.plan.selected()["rms_norm"] == "triton"
    assert any("rms_norm: ipex (xpu), preferred by platform xpu, cannot run" in line
               for line in plan_warnings([], resolution.plan))
    forget_modules("intel_extension_for_pytorch")


@pytest.mark.parametrize("op", IPEX_OPS)
def test_simulated_ipex_xpu_op_matches_the_reference(fake_ipex_xpu, op):
    from baseboard.platforms.xpu.platform import XpuPlatform
    from baseboard.platforms.xpu.plugin import ipex_xpu_impls

    record = next(i for i in ipex_xpu_impls() if i.op == op)
    reference = next(i for i in reference_impls() if i.op == op).load()
    cases = [c for c in cases_for(op) if rejection(record, c.context(XpuPlatform())) is None]
    assert cases and all(c.dtype != torch.float32 for c in cases)
    if op == "attention":  # each case runs four engine steps: bfloat16 keeps it short
        cases = [c for c in cases if c.dtype == torch.bfloat16]
    for case in cases:
        run_case(case, record.load(), reference, torch.device("cpu"))
    assert fake_ipex_xpu.CALLS
    if op == "attention":  # one varlen call per step, decodes and prefills together
        assert {"reshape_and_cache_flash", "flash_attn_varlen_func"} == \
            {name for name, _ in fake_ipex_xpu.CALLS}
