"""Whether the XPU build of Intel Extension for PyTorch can serve the xpu platform's ops.

The package is imported only when an ``ipex`` implementation's supports() asks, on the xpu
platform (selection rejects other platforms first), once per process. IPEX raises at import
when it does not match torch; that, like any import failure, becomes a rejection.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
from typing import Any, Optional, Union

import torch

from ...core.registry import ENVIRONMENT, Rejection

HALF_DTYPES = (torch.bfloat16, torch.float16)


def _major_minor(version: str) -> str:
    return ".".join(version.split("+")[0].split(".")[:2])


@functools.cache
def ipex_xpu_problem() -> Optional[Rejection]:
    """None when an XPU build of IPEX matching torch imports. Not installed is an
    UNSUPPORTED rejection (the Triton kernels serve); installed but unusable (fails to
    import, a CPU build, another torch's) an ENVIRONMENT one, which `baseboard info`
    turns into a warning."""
    if importlib.util.find_spec("intel_extension_for_pytorch") is None:
        return Rejection("intel-extension-for-pytorch is not installed (its XPU build, "
                         "from Intel's XPU package index); the Triton kernels run instead")
    try:
        ipex = importlib.import_module("intel_extension_for_pytorch")
    except Exception as exc:  # a vendor library: any failure is the environment's
        return Rejection(f"intel_extension_for_pytorch failed to import: {exc!r}", ENVIRONMENT)
    version = getattr(ipex, "__version__", "unknown")
    if "+xpu" not in version:
        return Rejection(f"intel-extension-for-pytorch {version} is not an XPU build (+xpu); "
                         f"install the XPU build for torch {torch.__version__}", ENVIRONMENT)
    if _major_minor(version) != _major_minor(torch.__version__):
        return Rejection(f"intel-extension-for-pytorch {version} is built for torch "
                         f"{_major_minor(version)}, and torch is {torch.__version__}; install "
                         f"the matching pair", ENVIRONMENT)
    return None


def ipex_xpu_supports(ctx: Any) -> Union[None, str, Rejection]:
    """supports() of the IPEX-XPU row-wise ops: half precision, then the package."""
    if ctx.dtype not in HALF_DTYPES:
        return f"dtype {str(ctx.dtype).replace('torch.', '')} is not bfloat16 or float16"
    return ipex_xpu_problem()
