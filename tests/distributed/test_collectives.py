"""The communication ops: their references on gloo, checked by the conformance kit's own
multi-process check (what a plugin's faster all_reduce is held to), and selection's verdict
where the platform's backend is missing."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from baseboard.core.errors import SelectionError
from baseboard.core.selection import SelectionContext, decide
from baseboard.kernels.torch.collectives import all_gather, all_reduce
from baseboard.testing.cases import cases_for
from baseboard.testing.collective_check import check_collective
from baseboard.testing.compare import Mismatch
from baseboard.testing.kit import open_kit


def _float32_case(op: str, tokens: int):
    return next(c for c in cases_for(op) if c.dtype == torch.float32
                and c.params["tokens"] == tokens)


@pytest.mark.slow
@pytest.mark.parametrize("op, reference", [("all_reduce", all_reduce),
                                           ("all_gather", all_gather)])
def test_the_references_pass_the_kit_check_on_gloo(op, reference):
    check_collective(_float32_case(op, 7), reference, reference, torch.device("cpu"))


def reduces_once_too_many(x, group):  # a module-level function: the ranks import it
    all_reduce(x, group)
    return all_reduce(x, group)


@pytest.mark.slow
def test_the_kit_check_fails_a_wrong_all_reduce():
    with pytest.raises(Mismatch, match=r"all_reduce\(x \[7, 96\], group\) on rank [01] of 2"):
        check_collective(_float32_case("all_reduce", 7), reduces_once_too_many, all_reduce,
                         torch.device("cpu"))


def test_a_platform_whose_backend_torch_lacks_cannot_run_tensor_parallel():
    kit = open_kit([], "cpu")
    platform = dataclasses.replace(kit.platform, name="npu", dist_backend="hccl")
    # one rank calls no collective: nothing is required
    decide(kit.catalog.registry, SelectionContext(platform), "all_reduce", None)
    with pytest.raises(SelectionError, match="torch.distributed has no backend 'hccl'"):
        decide(kit.catalog.registry, SelectionContext(platform, tensor_parallel_size=2),
               "all_reduce", None)


def test_info_shows_the_collectives_and_the_split(tiny_llama_dir):
    from baseboard.frontend.info import collect, render

    one = render(collect(str(tiny_llama_dir), platform="cpu"))
    assert "all_reduce           torch        " in one
    assert "(called with --tensor-parallel-size > 1 only)" in one
    info = collect(str(tiny_llama_dir), platform="cpu", tensor_parallel_size=2)
    assert info["engine"]["tensor_parallel_size"] == 2
    assert info["ops"]["all_gather"]["selected"] == "torch"
    assert "called with --tensor-parallel-size > 1 only" not in render(info)
