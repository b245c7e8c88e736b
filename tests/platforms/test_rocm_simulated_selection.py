"""The rocm platform in a simulated environment: a torch that looks like a ROCm build with
an Instinct MI300X (gfx942), and a fake ``aiter`` package (simulated/fake_aiter). Proves
detection, which implementations are selected, why the others are not, and
BASEBOARD_ROCM_AITER. No AMD GPU ran any of this."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from baseboard.core.errors import ConfigError, SelectionError
from baseboard.core.quant import QuantScheme
from baseboard.core.registry import ENVIRONMENT, UNSUPPORTED
from baseboard.core.selection import SelectionContext, plan_warnings
from baseboard.frontend.info import render
from baseboard.frontend.plan import resolve_plan
from simulated.environment import MI300X, simulate_rocm
from simulated.fixtures import fake_aiter, rocm  # noqa: F401  (fixtures)

AITER_OPS = ("rms_norm", "fused_add_rms_norm", "rotary_embedding", "silu_and_mul", "gemm",
             "gemm_w8a8_int8", "gemm_w8a8_fp8", "attention")
LLAMA_8B = dict(head_dim=128, num_heads=32, num_kv_heads=4, block_size=16)  # 8 q per KV head


def resolve(environ=None, **fields):
    fields = {**LLAMA_8B, "dtype": torch.bfloat16, "cuda_graphs": False, **fields}
    return resolve_plan(environ=environ or {}, **fields)


def candidate(resolution, op, name="aiter"):
    return next(c for c in resolution.plan.decisions[op].candidates if c.name == name)


def test_simulated_rocm_torch_is_detected_as_rocm_not_cuda(rocm):
    resolution = resolve()
    detections = resolution.platform.detections
    assert resolution.platform.platform.name == "rocm"
    assert detections["rocm"].present and "1 ROCm device(s)" in detections["rocm"].reason
    assert not detections["cuda"].present
    assert "ROCm build, not a CUDA build" in detections["cuda"].reason
    platform = resolution.platform.platform
    assert platform.capability() == "gfx942:sramecc+:xnack-" and platform.arch() == "gfx942"
    assert platform.dist_backend == "nccl"  # RCCL answers to torch's nccl name
    assert platform.device_type == "cuda"  # ROCm torch's device type for AMD GPUs


def test_simulated_fp8_type_is_e4m3fnuz_on_gfx942_and_e4m3fn_on_gfx950(monkeypatch):
    from baseboard.platforms.rocm.platform import RocmPlatform

    simulate_rocm(monkeypatch, MI300X)
    assert RocmPlatform().fp8_dtype() == torch.float8_e4m3fnuz
    simulate_rocm(monkeypatch, SimpleNamespace(**{**MI300X.__dict__,
                                                  "gcnArchName": "gfx950:sramecc+:xnack-"}))
    assert RocmPlatform().fp8_dtype() == torch.float8_e4m3fn


def test_simulated_aiter_is_selected_above_triton_where_it_imports(fake_aiter):
    plan = resolve().plan
    for op in AITER_OPS:
        decision = plan.decisions[op]
        assert (decision.selected, decision.plugin) == ("aiter", "rocm"), op
        assert decision.why == "preferred by platform rocm"
        names = [c.name for c in decision.candidates]
        assert names[0] == "aiter" and names.index("triton" if "triton" in names else "torch") == 1
    # AITER has no weight-only GEMM and no sampler: those stay where they were
    for op in ("gemm_w4a16", "gemm_w8a16", "sample"):
        assert all(c.name != "aiter" for c in plan.decisions[op].candidates), op
    assert plan.selected()["sample"] == "triton"


def test_simulated_aiter_attention_needs_cuda_graphs_off(fake_aiter):
    resolution = resolve(cuda_graphs=True)
    assert resolution.plan.selected()["attention"] == "triton"
    assert "cuda_graph_safe" in candidate(resolution, "attention").reason
    assert resolution.plan.selected()["rms_norm"] == "aiter"  # row kernels are graph-safe


@pytest.mark.parametrize("fields,reason", [
    (dict(head_dim=64), "pa_fwd_asm takes head size 128, not 64"),
    (dict(block_size=32), "pa_fwd_asm takes KV-cache block size 16, not 32"),
    (dict(num_heads=32, num_kv_heads=8), "8 or 16 query heads per KV head, not 32/8"),
    (dict(num_heads=32, num_kv_heads=32), "8 or 16 query heads per KV head, not 32/32"),
])
def test_simulated_paged_decode_shapes_outside_pa_fwd_asm_fall_to_triton(fake_aiter, fields,
                                                                         reason):
    resolution = resolve(**fields)
    rejected = candidate(resolution, "attention")
    assert not rejected.accepted and reason in rejected.reason
    assert rejected.kind == UNSUPPORTED
    assert resolution.plan.selected()["attention"] == "triton"
    assert resolution.plan.selected()["rms_norm"] == "aiter"


def test_simulated_gqa_16_is_served_by_aiter(fake_aiter):
    assert resolve(num_heads=64, num_kv_heads=4).plan.selected()["attention"] == "aiter"


def test_simulated_float32_is_not_aiters(fake_aiter):
    resolution = resolve(dtype=torch.float32)
    assert "dtype float32 is not bfloat16 or float16" in candidate(resolution, "rms_norm").reason


def test_simulated_gpu_without_aiter_kernels_is_rejected_with_its_arch(monkeypatch, fake_aiter):
    simulate_rocm(monkeypatch, SimpleNamespace(**{**MI300X.__dict__, "gcnArchName": "gfx90a"}))
    resolution = resolve()
    assert "built for gfx942, gfx950, and this GPU is gfx90a" in \
        candidate(resolution, "gemm").reason
    assert resolution.plan.selected()["gemm"] == "triton"


def test_bad_rocm_aiter_value_names_the_allowed_ones(rocm):
    with pytest.raises(ConfigError, match="BASEBOARD_ROCM_AITER='yes'.*auto, on, off"):
        resolve({"BASEBOARD_ROCM_AITER": "yes"})


def test_simulated_rocm_aiter_off_keeps_every_op_on_triton(fake_aiter):
    resolution = resolve({"BASEBOARD_ROCM_AITER": "off"})
    for op in AITER_OPS:
        assert resolution.plan.selected()[op] != "aiter", op
        assert candidate(resolution, op).reason == "BASEBOARD_ROCM_AITER=off"
    assert resolution.plan.selected()["attention"] == "triton"
    assert not fake_aiter.CALLS


def test_simulated_rocm_aiter_on_without_aiter_is_an_error(rocm):
    with pytest.raises(ConfigError, match="BASEBOARD_ROCM_AITER=on, but AITER cannot run "
                                          "here: amd-aiter is not installed"):
        resolve({"BASEBOARD_ROCM_AITER": "on"})


def test_simulated_rocm_aiter_on_a_gpu_aiter_lacks_is_an_error(monkeypatch, fake_aiter):
    simulate_rocm(monkeypatch, SimpleNamespace(**{**MI300X.__dict__, "gcnArchName": "gfx1100"}))
    with pytest.raises(ConfigError, match="this GPU is gfx1100"):
        resolve({"BASEBOARD_ROCM_AITER": "on"})


def test_simulated_rocm_aiter_on_with_aiter_selects_it(fake_aiter):
    assert resolve({"BASEBOARD_ROCM_AITER": "on"}).plan.selected()["attention"] == "aiter"


def test_simulated_auto_without_aiter_is_an_info_line_not_a_warning(rocm):
    resolution = resolve()
    missing = candidate(resolution, "rms_norm")
    assert missing.kind == UNSUPPORTED and "amd-aiter is not installed" in missing.reason
    assert resolution.plan.selected()["rms_norm"] == "triton"
    assert plan_warnings([], resolution.plan) == []


def test_simulated_broken_aiter_install_is_a_warning(rocm, tmp_path):
    from simulated.environment import forget_modules

    (tmp_path / "aiter").mkdir()
    (tmp_path / "aiter" / "__init__.py").write_text(
        "raise ImportError('libamdhip64.so: cannot open shared object file')\n")
    forget_modules("aiter")
    rocm.syspath_prepend(str(tmp_path))
    resolution = resolve()
    broken = candidate(resolution, "rms_norm")
    assert broken.kind == ENVIRONMENT and "libamdhip64.so" in broken.reason
    warnings = plan_warnings([], resolution.plan)
    assert any(line.startswith("rms_norm: aiter (rocm), preferred by platform rocm, cannot "
                               "run: aiter is installed but failed to import") for line in warnings)


def test_simulated_info_shows_why_aiter_is_not_used(rocm):
    from baseboard.frontend.info import collect

    info = collect(dtype="bfloat16", environ={"BASEBOARD_TUNE": "off"})  # no device to time
    assert info["platform"] == "rocm"
    text = render(info)
    assert "aiter      (rocm) rejected (unsupported): amd-aiter is not installed" in text
    assert info["settings"]["BASEBOARD_ROCM_AITER"] == {"value": "auto", "set": False}


def fp8_context(platform, weight):
    scheme = QuantScheme("gemm_w8a8_fp8", weight=weight, activation="float8_e4m3fn")
    return SelectionContext(platform, dtype=torch.bfloat16, quant_schemes=(scheme,))


def test_simulated_fp8_schemes_follow_the_gpus_fp8_type(monkeypatch, fake_aiter):
    from baseboard.platforms.rocm.plugin import aiter_impls
    from baseboard.platforms.rocm.platform import RocmPlatform

    fp8 = next(i for i in aiter_impls() if i.op == "gemm_w8a8_fp8")
    platform = RocmPlatform()
    # gfx942: float8_e4m3fnuz checkpoints as they are, float8_e4m3fn ones rescaled
    assert fp8.supports(fp8_context(platform, "float8_e4m3fnuz")) is None
    assert fp8.supports(fp8_context(platform, "float8_e4m3fn")) is None
    blocked = QuantScheme("gemm_w8a8_fp8", weight="float8_e4m3fn", block=(128, 128))
    assert "per-channel" in fp8.supports(SelectionContext(platform, dtype=torch.bfloat16,
                                                          quant_schemes=(blocked,)))
    simulate_rocm(monkeypatch, SimpleNamespace(**{**MI300X.__dict__, "gcnArchName": "gfx950"}))
    assert fp8.supports(fp8_context(platform, "float8_e4m3fn")) is None
    assert "gfx950 computes fp8 as float8_e4m3fn" in \
        fp8.supports(fp8_context(platform, "float8_e4m3fnuz"))


def test_simulated_rocm_plan_binds_with_the_fake(fake_aiter):
    plan = resolve().plan
    x = torch.randn(3, 64, dtype=torch.bfloat16)
    out = plan.rms_norm(x, torch.ones(64, dtype=torch.bfloat16), 1e-6)
    assert out.shape == (3, 64) and fake_aiter.CALLS[-1][0] == "rmsnorm2d_fwd"


def test_simulated_per_op_choice_overrides_aiter_and_names_its_reason(fake_aiter):
    from baseboard.core.errors import SelectionError

    plan = resolve({"BASEBOARD_BACKEND": "rms_norm=triton"}).plan
    assert plan.selected()["rms_norm"] == "triton" and plan.selected()["gemm"] == "aiter"
    with pytest.raises(SelectionError, match="attention='aiter'.*pa_fwd_asm takes head size "
                                             "128, not 64"):
        resolve({"BASEBOARD_ATTENTION_BACKEND": "aiter"}, head_dim=64)


def test_simulated_torch_attention_is_refused_in_graphs_with_the_switch_to_name(rocm):
    """The reference attention builds its index tensors per step on the host, so a graph
    would replay freed ones: asking for it with graphs on is an error naming the fix."""
    with pytest.raises(SelectionError, match="BASEBOARD_CUDA_GRAPHS=0"):
        resolve(cuda_graphs=True, backends={"attention": "torch"})
    eager = resolve(cuda_graphs=False, backends={"attention": "torch"})
    assert eager.plan.selected()["attention"] == "torch"
