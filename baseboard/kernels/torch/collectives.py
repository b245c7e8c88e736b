"""Communication references: torch.distributed with the platform's own backend (NCCL on
NVIDIA, RCCL under torch's "nccl" name on ROCm, "xccl" on Intel XPU, gloo on the CPU).

Neither waits for the device: NCCL enqueues the collective on the current stream, which is
what lets a CUDA graph capture it.
"""

from __future__ import annotations

from typing import Any, Optional

import torch


def all_reduce(x: torch.Tensor, group: Any) -> torch.Tensor:
    """x [T, N] -> the sum over the group's ranks [T, N], reduced in place."""
    import torch.distributed as dist

    dist.all_reduce(x, group=group)
    return x


def all_gather(x: torch.Tensor, group: Any) -> torch.Tensor:
    """x [T, N] -> [T, W * N], rank r's x in columns [r * N, (r + 1) * N)."""
    import torch.distributed as dist

    world = dist.get_world_size(group)
    rows, cols = x.shape
    stacked = torch.empty((world * rows, cols), dtype=x.dtype, device=x.device)
    # all_gather_single is all_gather_into_tensor's name from torch 2.13 on
    gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    gather(stacked, x.contiguous(), group=group)
    # [W * T, N] -> [T, W * N]: the ranks' column blocks side by side
    return stacked.view(world, rows, cols).transpose(0, 1).reshape(rows, world * cols)


def supports(ctx: Any) -> Optional[str]:
    """Both references run wherever torch.distributed has the platform's backend; with one
    rank nothing is ever called, so nothing is required."""
    if getattr(ctx, "tensor_parallel_size", 1) == 1:
        return None
    import torch.distributed as dist

    backend = ctx.platform.dist_backend
    if not dist.is_available():
        return "this torch is built without torch.distributed"
    if not backend or not dist.is_backend_available(backend):
        return (f"torch.distributed has no backend {backend!r} (the dist_backend of platform "
                f"{ctx.platform.name}) in this build")
    return None
