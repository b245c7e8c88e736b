"""When the cpu kernels cannot be built, selection says so: their implementations are
rejected for an environment reason, and the plan's warnings name the lost preference.

The build really fails: each case runs in a fresh interpreter (the build result is
remembered per process) with an empty kernel cache and a compiler or cache directory
that cannot work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from baseboard.core.selection import SelectionContext, plan_warnings, select_plan
from baseboard.platforms.cpu import native
from baseboard.platforms.cpu.platform import _cpu_flags
from baseboard.plugins.catalog import build_catalog

pytestmark = pytest.mark.skipif(
    any(f not in _cpu_flags() for f in native.NEEDED_CPU_FLAGS),
    reason="this CPU cannot run the native kernels at all (an unsupported case, not a build "
           "failure)")

# resolves a bf16 plan on the cpu platform and prints its warnings and its JSON
RESOLVE = textwrap.dedent("""
    import json

    import torch

    from baseboard.core.selection import SelectionContext, plan_warnings, select_plan
    from baseboard.plugins.catalog import build_catalog

    catalog = build_catalog(None, ())
    ctx = SelectionContext(catalog.platforms["cpu"], dtype=torch.bfloat16, head_dim=64,
                           num_heads=4, num_kv_heads=2, block_size=16)
    plan = select_plan(catalog.registry, ctx, {})
    print(json.dumps({"warnings": plan_warnings(catalog.plugins.report, plan),
                      "plan": plan.to_json()}))
""")


def resolve_in_fresh_interpreter(**environ: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASEBOARD_")}
    env.update(environ)
    run = subprocess.run([sys.executable, "-c", RESOLVE], env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def cpu_plan(dtype: torch.dtype = torch.bfloat16):
    catalog = build_catalog(None, ())
    ctx = SelectionContext(catalog.platforms["cpu"], dtype=dtype, head_dim=64, num_heads=4,
                           num_kv_heads=2, block_size=16)
    return catalog, select_plan(catalog.registry, ctx, {})


@pytest.mark.parametrize("environ, cause", [
    (lambda tmp: {"CC": str(tmp / "no-such-cc"), "XDG_CACHE_HOME": str(tmp / "cache")},
     "no-such-cc' (CC) was not found"),
    # a file where the cache directory should be: no user, root included, can write there
    (lambda tmp: {"XDG_CACHE_HOME": str(tmp / "a-file")}, "cannot be written"),
], ids=["missing-compiler", "unwritable-cache"])
def test_a_failed_kernel_build_is_an_environment_rejection_and_a_warning(tmp_path, environ,
                                                                         cause):
    (tmp_path / "a-file").write_text("not a directory")
    found = resolve_in_fresh_interpreter(**environ(tmp_path))
    ops = found["plan"]["ops"]
    attention = {c["name"]: c for c in ops["attention"]["candidates"]}["cpu_paged"]
    assert not attention["accepted"] and attention["kind"] == "environment"
    assert cause in attention["reason"]
    gemm = {c["name"]: c for c in ops["gemm"]["candidates"]}["avx512_bf16"]
    assert (gemm["accepted"], gemm["kind"]) == (False, "environment")
    assert found["plan"]["selected"]["gemm"] != "avx512_bf16"
    # the platform prefers cpu_paged for attention: the one line the user must see
    lines = found["warnings"]
    assert len(lines) == 1, lines
    assert lines[0].startswith("attention: cpu_paged (cpu), preferred by platform cpu, "
                               "cannot run: native cpu kernels unavailable: ")
    assert cause in lines[0] and lines[0].endswith("torch (baseboard) runs instead")


def test_with_the_kernels_built_there_is_nothing_to_warn_about():
    catalog, plan = cpu_plan()
    assert plan.decisions["attention"].selected == "cpu_paged"
    assert plan_warnings(catalog.plugins.report, plan) == []


def test_a_case_the_kernels_do_not_take_is_unsupported_and_not_a_warning():
    catalog, plan = cpu_plan(torch.float16)  # the native GEMMs take bf16 and float32 only
    candidates = {c.name: c for c in plan.decisions["gemm"].candidates}
    assert candidates["avx512_bf16"].kind == "unsupported"
    assert "bf16 models only" in candidates["avx512_bf16"].reason
    assert plan_warnings(catalog.plugins.report, plan) == []
