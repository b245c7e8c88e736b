"""A simulated XPU build of Intel Extension for PyTorch, for tests without an Intel GPU.

``ipex.llm.functional`` has the functions baseboard's xpu platform calls, with IPEX's
argument order (add_rms_norm takes the residual first; silu_and_mul writes into ``out``;
rotary_embedding_batched rotates [T, H * D] rows in place), computed with plain torch.
Every call is recorded in ``CALLS``. ``__version__`` carries the +xpu tag of the XPU
build and torch's major.minor, unless SIMULATED_IPEX_VERSION is set.
"""

from __future__ import annotations

import os

import torch

CALLS: list[tuple[str, dict]] = []
__version__ = os.environ.get("SIMULATED_IPEX_VERSION",
                             ".".join(torch.__version__.split(".")[:2]) + ".10+xpu")

from . import llm  # noqa: E402  (functional records into CALLS)
