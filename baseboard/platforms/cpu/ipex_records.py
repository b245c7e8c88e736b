"""The ``ipex`` implementations the cpu plugin registers: Intel Extension for PyTorch's
ops, each behind an adapter (ipex_ops.py, ipex_gemm.py, ipex_attention.py).

Each is rejected where IPEX cannot run (not installed, built for another torch, failing
to import: an ENVIRONMENT rejection with both versions and the fix, from
``ipex_runtime.problem``), and for the cases its kernels do not take. Priorities come
from measurement on a 2-core Sapphire Rapids (benchmarks/ipex_e2e.py --ops; numbers in
docs/benchmarks.md): an op would go above the native kernels (priority 10) only where IPEX
was faster there, and none was shown to be; all stay below them, selectable by name
(``BASEBOARD_BACKEND=rms_norm=ipex``) and checked by the conformance kit all the same.
"""

from __future__ import annotations

from typing import Optional, Union

import torch

from ...core.registry import Impl, Rejection

_CPU = ("cpu",)
_HERE = "baseboard.platforms.cpu"
BELOW_NATIVE = 5  # the native kernels' is 10
ROW_DTYPES = (torch.bfloat16, torch.float16, torch.float32)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def ipex_supported(ctx) -> Optional[Rejection]:
    from .ipex_runtime import problem  # cheap here; imports IPEX only where it can run
    return problem()


def _dtypes(ctx, dtypes: tuple[torch.dtype, ...]) -> Optional[str]:
    if ctx.dtype not in dtypes:
        return (f"IPEX's kernel takes {', '.join(_dtype_name(d) for d in dtypes)}; this "
                f"model runs in {_dtype_name(ctx.dtype)}")
    return None


def rows_supported(ctx) -> Union[None, str, Rejection]:
    return _dtypes(ctx, ROW_DTYPES) or ipex_supported(ctx)


def woq_supported(ctx) -> Union[None, str, Rejection]:
    from .ipex_gemm import K_ALIGN

    for op in ("gemm_w4a16", "gemm_w8a16"):
        for scheme in ctx.schemes_for(op):
            if scheme.group_size % K_ALIGN:
                return (f"{scheme.describe()}: IPEX takes group sizes that are multiples of "
                        f"{K_ALIGN}")
    return _dtypes(ctx, (torch.bfloat16,)) or ipex_supported(ctx)


def attention_supported(ctx) -> Union[None, str, Rejection]:
    from .ipex_attention import HEAD_DIMS

    if ctx.head_dim is not None and ctx.head_dim not in HEAD_DIMS:
        return f"head_dim {ctx.head_dim} is not one of IPEX's {HEAD_DIMS}"
    return _dtypes(ctx, ROW_DTYPES) or ipex_supported(ctx)


def ipex_impls() -> list[Impl]:
    def impl(op: str, loader: str, supports, priority: int, doc: str) -> Impl:
        return Impl(op=op, name="ipex", loader=f"{_HERE}.{loader}", platforms=_CPU,
                    priority=priority, supports=supports, cuda_graph_safe=False, doc=doc)

    return [
        impl("rms_norm", "ipex_ops:rms_norm", rows_supported, BELOW_NATIVE,
             "IPEX rmsnorm"),
        impl("fused_add_rms_norm", "ipex_ops:fused_add_rms_norm", rows_supported,
             BELOW_NATIVE, "IPEX add_rmsnorm, the sum written back to the residual"),
        impl("rotary_embedding", "ipex_ops:rotary_embedding", rows_supported, BELOW_NATIVE,
             "IPEX rotary_position_embedding, copied back into q and k"),
        impl("silu_and_mul", "ipex_ops:silu_and_mul", rows_supported, BELOW_NATIVE,
             "IPEX silu_mul (torch.compile: the first call compiles)"),
        impl("gemm_w8a16", "ipex_gemm:IpexW8A16", woq_supported, BELOW_NATIVE,
             "IPEX weight-only int8 linear, bf16 compute on AMX, else float32"),
        impl("gemm_w4a16", "ipex_gemm:IpexW4A16", woq_supported, BELOW_NATIVE,
             "IPEX weight-only int4 linear, float32 compute"),
        impl("attention", "ipex_attention:IpexPagedAttention", attention_supported,
             BELOW_NATIVE, "IPEX PagedAttention: its own cache layout [blocks, Hk, block, D]"),
    ]
