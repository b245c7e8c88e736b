"""The communication ops' check: one process per rank (spawned), each with its own
device, meeting in a torch.distributed group of the device's backend (gloo on the CPU,
NCCL on NVIDIA). Every rank draws its own input from the case's seed and its rank, so
each can compute what the collective must return; the implementation and the reference
are both compared with that. On a CUDA device the implementation is also captured in a
CUDA graph and replayed on new inputs, as the engine's decode graphs replay it.
"""

from __future__ import annotations

import os
import tempfile
import traceback
import zlib
from typing import Any

import torch

from .cases import Case
from .compare import Mismatch, compare


def check_collective(case: Case, impl: Any, reference: Any, device: torch.device) -> None:
    """Raise Mismatch when ``impl`` (all_reduce or all_gather) gives any rank a wrong
    result; the case's ``world`` ranks run in as many processes (and devices). Skipped
    (under pytest) on a machine with fewer devices than ranks."""
    missing = _missing_devices(case.params["world"], device)
    if missing:
        import pytest

        pytest.skip(missing)
    failure = check_collectives([case], impl, reference, device).get(case.id)
    if failure:
        raise Mismatch(failure)


def check_collectives(cases: list[Case], impl: Any, reference: Any,
                      device: torch.device) -> dict[str, str]:
    """Case id -> what went wrong, for each failing case of ``cases`` (one op, one world
    size), all run by one set of rank processes: starting them costs more than the cases."""
    import torch.multiprocessing as mp

    world = cases[0].params["world"]
    missing = _missing_devices(world, device)
    if missing:
        return {case.id: missing for case in cases}
    context = mp.get_context("spawn")
    failures = context.SimpleQueue()
    with tempfile.TemporaryDirectory() as directory:
        init_method = f"file://{os.path.join(directory, 'rendezvous')}"
        processes = [context.Process(target=_rank_main, args=(
            rank, world, init_method, cases, impl, reference, device.type, failures))
            for rank in range(world)]
        for process in processes:
            process.start()
        for process in processes:
            process.join(300 + 30 * len(cases))
            if process.is_alive():
                process.kill()
    found: dict[str, list[str]] = {}
    while not failures.empty():
        case_id, text = failures.get()
        found.setdefault(case_id, []).append(text)
    result = {case_id: "; ".join(sorted(texts)) for case_id, texts in found.items()}
    crashed = [p.exitcode for p in processes if p.exitcode != 0]
    if crashed:
        for case in cases:
            result.setdefault(case.id, f"{case.op} [{case.id}]: a rank's process exited with "
                                       f"{crashed[0]} (a crash, or a collective that hung)")
    return result


def _missing_devices(world: int, device: torch.device) -> str:
    """Why ``world`` ranks cannot run here ('' when they can): one device each."""
    if device.type == "cpu":
        return ""
    visible = getattr(torch, device.type).device_count()
    if visible >= world:
        return ""
    return (f"needs {world} {device.type} devices (one per rank), and {visible} "
            f"{'is' if visible == 1 else 'are'} visible")


def rank_input(case: Case, rank: int) -> torch.Tensor:
    """Rank ``rank``'s x [T, N] of ``case``, on the CPU in the case's dtype."""
    seed = zlib.crc32(f"{case.op}/{case.id}/rank{rank}".encode())
    gen = torch.Generator().manual_seed(seed)
    return torch.randn((case.params["tokens"], case.params["hidden"]),
                       generator=gen).to(case.dtype)


def expected_result(case: Case) -> torch.Tensor:
    everyone = [rank_input(case, r) for r in range(case.params["world"])]
    if case.op == "all_reduce":  # the float32 sum, rounded once
        return torch.stack([x.float() for x in everyone]).sum(0).to(case.dtype)
    return torch.cat(everyone, dim=-1)


def _rank_main(rank: int, world: int, init_method: str, cases: list[Case], impl: Any,
               reference: Any, device_type: str, failures: Any) -> None:
    import torch.distributed as dist

    backend = dist.Backend.default_device_backend_map.get(device_type, "gloo")
    device = torch.device(device_type, rank) if device_type != "cpu" else torch.device("cpu")
    if device_type != "cpu":
        getattr(torch, device_type).set_device(rank)
    dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world)
    try:
        for case in cases:
            try:
                _check_rank(case, impl, reference, device, dist.group.WORLD, rank)
            except Mismatch as exc:
                failures.put((case.id, f"rank {rank}: {exc}"))
            except Exception:
                failures.put((case.id, f"rank {rank}: {traceback.format_exc(limit=4)}"))
    finally:
        dist.destroy_process_group()


def _check_rank(case: Case, impl: Any, reference: Any, device: torch.device, group: Any,
                rank: int) -> None:
    x = rank_input(case, rank).to(device)
    want = expected_result(case).to(device)
    t, n = case.params["tokens"], case.params["hidden"]
    what = f"{case.op}(x [{t}, {n}], group) on rank {rank} of {case.params['world']}"
    compare(f"reference {what}", reference(x.clone(), group), want, case)
    compare(what, impl(x.clone(), group), want, case)
    if device.type == "cuda":
        _check_in_graph(what, case, impl, x, want, group)


def _check_in_graph(what: str, case: Case, impl: Any, x: torch.Tensor, want: torch.Tensor,
                    group: Any) -> None:
    """Capture ``impl`` in a CUDA graph on zeros, replay it on x."""
    static = torch.zeros_like(x)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up outside the graph, as the engine does
        impl(static.clone(), group)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        out = impl(static, group)
    static.copy_(x)
    graph.replay()
    torch.cuda.synchronize()
    compare(f"{what}, captured in a CUDA graph and replayed", out, want, case)
