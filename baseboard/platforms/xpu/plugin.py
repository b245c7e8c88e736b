"""The xpu platform plugin: the platform and the implementations it registers.

The Triton kernels serve every op they have (Intel's XPU build of Triton compiles them);
where the XPU build of Intel Extension for PyTorch imports, its kernels are preferred
for paged attention, the norms, rotary and SiLU-and-mul.
"""

from __future__ import annotations

from ...core.registry import Impl
from ...kernels.triton.records import triton_impls
from ...plugins import hookimpl
from .ipex_support import ipex_xpu_supports
from .platform import IPEX_OPS, XpuPlatform

BASEBOARD_CONTRACT = 1
IPEX_PRIORITY = 60  # above the Triton kernels (50)


def ipex_xpu_impls() -> list[Impl]:
    rows = [Impl(op=op, name="ipex", loader=f"baseboard.platforms.xpu.ipex_ops:{op}",
                 platforms=("xpu",), priority=IPEX_PRIORITY, supports=ipex_xpu_supports,
                 doc="Intel Extension for PyTorch (XPU): ipex.llm.functional")
            for op in IPEX_OPS if op != "attention"]
    attention = Impl(op="attention", name="ipex",
                     loader="baseboard.platforms.xpu.ipex_attention:IpexXpuAttention",
                     platforms=("xpu",), priority=IPEX_PRIORITY, supports=ipex_xpu_supports,
                     cuda_graph_safe=False,
                     doc="Intel Extension for PyTorch (XPU): PagedAttention, one varlen call")
    return [*rows, attention]


@hookimpl
def baseboard_platforms():
    return [XpuPlatform()]


@hookimpl
def baseboard_ops() -> list[Impl]:
    return [*triton_impls(("xpu",), priority=50), *ipex_xpu_impls()]
