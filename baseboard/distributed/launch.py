"""Starting or joining the ranks of a tensor-parallel engine, and the channel between them.

Two ways in. ``LLM(..., tensor_parallel_size=N)`` in one process starts N - 1 workers
(torch.multiprocessing, spawn) that meet the driver (rank 0) through a rendezvous file.
Under ``torchrun`` (RANK and WORLD_SIZE set) every process calls ``LLM(...)``: rank 0
returns the engine, and the others serve rank 0 inside the call, then exit when its engine
closes.

Every rank joins two process groups: a gloo group for what the host sends (the plan at
load, each step's inputs), and one of the platform's backend for the model's collectives
(NCCL on NVIDIA), which never waits on the host and can be captured in a CUDA graph. The
plan is resolved once, on rank 0; the others are told its choices, so every rank runs the
same implementations.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Optional

import torch

from ..core.errors import ConfigError
from .sharding import check_divisible
from .workers import Workers

# the model's collectives: long enough for a first step that compiles its kernels
COLLECTIVE_TIMEOUT = timedelta(minutes=10)
# the host's messages: a worker waits for the next step as long as the driver is idle
# (a driver that dies closes its sockets, which ends the wait at once)
CONTROL_TIMEOUT = timedelta(days=7)
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE")


@dataclass
class Launch:
    """This process's place among the ranks. ``workers``: the processes rank 0 started
    (None under torchrun); ``serve_and_exit``: a torchrun rank > 0, whose ``LLM(...)``
    never returns."""

    rank: int
    size: int
    local_rank: int
    init_method: str
    workers: Optional[Workers] = None
    serve_and_exit: bool = False


def check_tensor_parallel(config: Any, platform: Any, size: int) -> None:
    """ConfigError for a split this model or machine cannot take."""
    check_divisible(config, size)
    if platform.device_type == "cpu":
        return
    module = getattr(torch, platform.device_type, None)
    count = module.device_count() if module is not None else 0
    local = int(os.environ.get("LOCAL_WORLD_SIZE", size))
    if min(size, local) > count:
        raise ConfigError(f"tensor_parallel_size={size} needs {min(size, local)} "
                          f"{platform.device_type} devices on this machine, but "
                          f"{count} are visible; use at most {count} (or launch one process "
                          f"per device with torchrun across machines).")


def from_environment(size: int) -> Optional[Launch]:
    """This process's rank under torchrun, or None when it was not started by one."""
    if not all(name in os.environ for name in TORCHRUN_VARIABLES):
        return None
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if world == 1:
        return None
    if world != size:
        raise ConfigError(f"tensor_parallel_size={size}, but torchrun started WORLD_SIZE="
                          f"{world} processes; baseboard splits one model over all of them. "
                          f"Launch with --nproc-per-node x --nnodes = {size}.")
    local = int(os.environ.get("LOCAL_RANK", rank))
    return Launch(rank, size, local, "env://", serve_and_exit=rank != 0)


def spawn_workers(args: Any, size: int) -> Launch:
    """Start ranks 1..size-1 (each builds the same engine and serves rank 0)."""
    from .worker import run_worker

    workers = Workers(run_worker, size, args)
    return Launch(0, size, 0, workers.init_method, workers)


def on_local_device(config: Any, launch: Launch) -> Any:
    """``config`` with this rank's device (LOCAL_RANK's) and its share of the CPU threads."""
    platform = config.platform
    if platform.device_type == "cpu":
        return dataclasses.replace(config, num_threads=max(1, config.num_threads // launch.size))
    getattr(torch, platform.device_type).set_device(launch.local_rank)
    return dataclasses.replace(config, device=platform.device(launch.local_rank))


def connect(launch: Launch, args: Any, config: Optional[Any],
            configure: Callable[[Any], Any]) -> tuple[StepChannel, Any]:
    """Join the groups; rank 0 sends its plan and the others configure with it.
    Returns the channel and this rank's EngineConfig (its own device)."""
    import torch.distributed as dist

    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group("gloo", init_method=launch.init_method, rank=launch.rank,
                                world_size=launch.size, timeout=CONTROL_TIMEOUT)
    elif dist.get_world_size() != launch.size:
        raise ConfigError(f"tensor_parallel_size={launch.size}, but the process group already "
                          f"initialised in this process has {dist.get_world_size()} ranks.")
    control = dist.group.WORLD if owns else dist.new_group(backend="gloo",
                                                           timeout=CONTROL_TIMEOUT)
    message = [(config.platform.name, config.platform.device_type, config.plan.selected())
               if launch.rank == 0 else None]
    dist.broadcast_object_list(message, src=0, group=control)
    if launch.rank != 0:
        platform, device_type, selected = message[0]
        if device_type != "cpu":  # before anything touches a device: not device 0's memory
            getattr(torch, device_type).set_device(launch.local_rank)
        config = configure(args.replace(platform=platform, backends=selected,
                                        cli_backends=None, plan_path=None,
                                        skip_tokenizer_init=True))
    config = on_local_device(config, launch)
    device_group = dist.new_group(backend=config.platform.dist_backend,
                                  timeout=COLLECTIVE_TIMEOUT)
    # the backend's communicator is made now, before any CUDA graph is captured
    dist.all_reduce(torch.zeros(1, device=config.device), group=device_group)
    return StepChannel(launch, control, device_group, owns), config


class StepChannel:
    """What the driver sends the workers, over the gloo group: each step's inputs (token
    ids, positions, the AttentionBatch, the prompt rows whose logits are asked for), and,
    over the device group, the tokens it sampled (the next step's placeholders)."""

    def __init__(self, launch: Launch, control: Any, device_group: Any, owns: bool):
        self.launch = launch
        self.rank, self.size = launch.rank, launch.size
        self.control = control
        self.device_group = device_group
        self.owns = owns
        self.closed = False
        workers = launch.workers
        if workers is not None and device_group is not None:
            workers.on_failure(self._abort)

    def _abort(self) -> None:
        """Make the driver's pending collectives fail instead of waiting for the dead."""
        import torch.distributed as dist

        if dist.get_backend(self.device_group) != "gloo":  # gloo fails on the closed socket
            dist.distributed_c10d._abort_process_group(self.device_group)

    def send_step(self, message: Any) -> None:
        import torch.distributed as dist

        self.check()
        dist.broadcast_object_list([message], src=0, group=self.control)

    def receive_step(self) -> Any:
        import torch.distributed as dist

        message = [None]
        dist.broadcast_object_list(message, src=0, group=self.control)
        return message[0]

    def share_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Rank 0's sampled tokens [B] int64, on every rank's device."""
        import torch.distributed as dist

        dist.broadcast(tokens, src=0, group=self.device_group)
        return tokens

    def min_over_ranks(self, value: int) -> int:
        """The smallest of every rank's ``value`` (each rank's KV blocks, from its memory)."""
        import torch.distributed as dist

        tensor = torch.tensor([value], dtype=torch.long)
        dist.all_reduce(tensor, op=dist.ReduceOp.MIN, group=self.control)
        return int(tensor.item())

    def check(self) -> None:
        """Raise a dead worker's error before anything else is sent."""
        workers = self.launch.workers
        if workers is not None and workers.failure is not None:
            raise workers.failure

    def explain(self, exc: BaseException) -> BaseException:
        workers = self.launch.workers
        return workers.explain(exc) if workers is not None else exc

    def close(self) -> None:
        """Tell the workers to stop (rank 0), wait for them and leave the groups."""
        import torch.distributed as dist

        if self.closed:
            return
        self.closed = True
        workers = self.launch.workers
        if self.rank == 0 and (workers is None or workers.failure is None):
            try:
                dist.broadcast_object_list([None], src=0, group=self.control)
            except Exception:  # a worker already gone: close() ends the rest
                pass
        if workers is not None:
            workers.close()
        self._leave()

    def abandon(self) -> None:
        """After a failed load: end the workers without a word (they may be waiting in
        any collective, where a stop message would not be read), then leave the groups."""
        if self.closed:
            return
        self.closed = True
        if self.launch.workers is not None:
            self.launch.workers.close(wait=False)
        self._leave()

    def _leave(self) -> None:
        import torch.distributed as dist

        if not dist.is_initialized():
            return
        # NCCL's communicator is aborted, not destroyed: ncclCommDestroy can hang once CUDA
        # graphs have captured its collectives (pytorch/pytorch#115388), and the engine,
        # whose graphs hold them, never runs again
        try:
            if dist.get_backend(self.device_group) != "gloo":
                dist.distributed_c10d._abort_process_group(self.device_group)
        except (RuntimeError, ValueError):  # already aborted when a worker died
            pass
        if self.owns:
            dist.destroy_process_group()
