"""The Triton records: what their supports() accept and reject, and that several platform
plugins can each register them under the one name "triton"."""

from __future__ import annotations

import pytest
import torch

from baseboard.core.errors import RegistrationError
from baseboard.core.ops import OPS
from baseboard.core.registry import Impl, Registry
from baseboard.core.selection import SelectionContext
from baseboard.kernels.triton.records import triton_impls
from baseboard.platforms.cpu.platform import CpuPlatform
from baseboard.platforms.cuda.platform import CudaPlatform

TRITON_OPS = {"rms_norm", "fused_add_rms_norm", "rotary_embedding", "silu_and_mul", "attention",
              "sample", "gemm", "gemm_w4a16", "gemm_w8a16", "gemm_w8a8_int8", "gemm_w8a8_fp8",
              "gemm_w8a8_fp8_block"}


def records(platform: str = "cuda") -> dict[str, Impl]:
    return {impl.op: impl for impl in triton_impls((platform,), priority=50)}


def gpu(**fields) -> SelectionContext:
    return SelectionContext(CudaPlatform(), **{"dtype": torch.bfloat16, **fields})


def test_one_record_per_op_with_lazy_loaders():
    impls = records()
    assert set(impls) == TRITON_OPS and set(impls) <= set(OPS)
    for impl in impls.values():
        assert impl.name == "triton" and impl.requires == ("triton",)
        assert impl.loader.startswith("baseboard.kernels.triton.")
        assert impl.platforms == ("cuda",) and impl.priority == 50


@pytest.mark.parametrize("fields,reason", [
    (dict(dtype=torch.float32), "dtype float32 is not supported"),
    (dict(head_dim=72), "head size 72"),
    (dict(head_dim=32), "head size 32"),  # small heads only for the interpreter
    (dict(head_dim=128, block_size=8), "block size 8"),
    (dict(head_dim=128, num_heads=12, num_kv_heads=5), "not a multiple"),
])
def test_attention_rejects_shapes_it_has_no_kernel_for(monkeypatch, fields, reason):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert reason in records()["attention"].supports(gpu(**fields))


@pytest.mark.parametrize("head_dim", [64, 80, 96, 128, 256])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_attention_accepts_supported_shapes_on_a_gpu(monkeypatch, head_dim, dtype):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    ctx = gpu(dtype=dtype, head_dim=head_dim, block_size=16, num_heads=32, num_kv_heads=8)
    assert all(impl.supports(ctx) is None for impl in records().values())


def test_cpu_needs_the_interpreter(monkeypatch):
    ctx = SelectionContext(CpuPlatform(), dtype=torch.float32, head_dim=32, block_size=16)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    for impl in records("cpu").values():
        assert "TRITON_INTERPRET=1" in impl.supports(ctx)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert all(impl.supports(ctx) is None for impl in records("cpu").values())


def test_each_platform_plugin_may_register_the_same_name():
    registry = Registry()
    for plugin in ("cuda", "rocm", "cpu"):
        for impl in triton_impls((plugin,), priority=50):
            registry.add(impl, plugin)
    owners = sorted(impl.plugin for impl in registry.for_op("attention"))
    assert owners == ["cpu", "cuda", "rocm"]
    with pytest.raises(RegistrationError, match="'cuda' and plugin 'other'.*cuda"):
        registry.add(triton_impls(("cuda",), priority=1)[0], "other")
