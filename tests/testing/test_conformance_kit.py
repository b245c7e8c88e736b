"""The kit fails wrong implementations, skips rejected cases and stays out of normal runs."""

import pytest

from baseboard.core.ops import OPS
from baseboard.core.registry import Impl
from baseboard.core.selection import SelectionContext, rejection
from baseboard.testing.cases import cases_for
from baseboard.testing.checks import CHECKS
from baseboard.testing.kit import open_kit, platform_problems
from baseboard.testing.null import NullPlatform
from baseboard.testing.sandbox import run_pytest

WRONG_PLUGIN = """
    import torch

    from baseboard.core.registry import Impl
    from baseboard.plugins import hookimpl

    BASEBOARD_CONTRACT = 1


    def rms_norm(x, weight, eps):
        x32 = x.float()  # forgets to multiply by weight
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


    def silu_and_mul(x):
        gate, up = x.chunk(2, dim=-1)
        return torch.nn.functional.silu(gate) * up


    def sample(logits, params, generator):
        return logits.argmax(dim=-1)


    def no_half(ctx):
        return "float16 is not implemented" if ctx.dtype == torch.float16 else None


    def raises_for_bf16(ctx):
        return {torch.float32: None, torch.float16: None}[ctx.dtype]


    @hookimpl
    def baseboard_ops():
        return [Impl("rms_norm", "noweight", "wrong_plugin:rms_norm"),
                Impl("silu_and_mul", "nohalf", "wrong_plugin:silu_and_mul", supports=no_half),
                Impl("sample", "extraarg", "wrong_plugin:sample"),
                Impl("gemm_w8a8_int8", "raising", "baseboard.kernels.torch.quant_gemm:GemmW8A8Int8",
                     supports=raises_for_bf16)]
"""


@pytest.fixture
def wrong(site):
    site.install("wrong-dist", {"wrong": "wrong_plugin"}, {"wrong_plugin": WRONG_PLUGIN})
    return site


def test_a_wrong_implementation_fails_the_kit(wrong, tmp_path):
    run = run_pytest("--baseboard-plugin", "wrong", cwd=tmp_path, path=wrong.root)
    out = run.stdout
    assert run.returncode == 1, out + run.stderr
    assert "FAILED baseboard-plugin[wrong]::rms_norm=noweight::float32-T7-K257" in out
    assert "differ from the reference by more than" in out
    assert "sample=extraarg (plugin 'wrong', wrong_plugin:sample) has parameters " \
           "['logits', 'params', 'generator'], but op 'sample' takes ['logits', 'params']" in out
    # the correct one passes where it runs and is skipped, with its reason, where it does not
    assert "silu_and_mul=nohalf::float32" not in out
    assert "silu_and_mul=nohalf: rejects this case: float16 is not implemented" in out
    assert "does not load; its 'signature' test says why" in out
    assert "gemm_w8a8_int8=raising: supports(ctx) raised KeyError(torch.bfloat16)" in out
    def count(op: str, dtypes=("float32", "bfloat16", "float16")) -> int:
        return sum(case.id.split("-")[0] in dtypes for case in cases_for(op))

    assert run.count("skipped") == count("silu_and_mul", ("float16",))
    # load, three good signatures, nohalf's cases, raising's float32 and float16 cases
    assert run.count("passed") == 1 + 3 + count("silu_and_mul", ("float32", "bfloat16")) + \
        count("gemm_w8a8_int8", ("float32", "float16"))
    # noweight's cases, extraarg's signature and cases, raising's bfloat16 cases
    assert run.count("failed") == count("rms_norm") + 1 + count("sample") + \
        count("gemm_w8a8_int8", ("bfloat16",))


def test_without_the_option_the_kit_stays_out_of_the_way(wrong, tmp_path):
    (tmp_path / "test_plain.py").write_text("def test_plain():\n    assert True\n")
    run = run_pytest(cwd=tmp_path, path=wrong.root)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.count("passed") == 1
    assert "conformance kit" not in run.stdout
    # paths given with the option run as well as the kit
    run = run_pytest("test_plain.py", "--baseboard-plugin", "wrong", "-k", "test_plain or nohalf",
                     cwd=tmp_path, path=wrong.root)
    assert run.returncode == 0, run.stdout + run.stderr
    nohalf_cases = sum(not case.id.startswith("float16") for case in cases_for("silu_and_mul"))
    assert run.count("passed") == 1 + 1 + nohalf_cases


RAISING_PLUGIN = """
    from baseboard.core.registry import Impl
    from baseboard.plugins import hookimpl
    from baseboard.testing.null import NullPlatform

    BASEBOARD_CONTRACT = 1


    class NoDriver(NullPlatform):
        def detect(self):
            raise OSError("libnodriver.so: cannot open shared object file")


    @hookimpl
    def baseboard_platforms():
        return [NoDriver(name="nodriver")]


    @hookimpl
    def baseboard_ops():
        return [Impl("rms_norm", "nodriver", "baseboard.kernels.torch.norm:rms_norm")]
"""


def test_a_plugin_whose_detection_raises_fails_its_load_test(site, tmp_path):
    site.install("nodriver-dist", {"nodriver": "nodriver_plugin"},
                 {"nodriver_plugin": RAISING_PLUGIN})
    run = run_pytest("--baseboard-plugin", "nodriver", cwd=tmp_path, path=site.root)
    out = run.stdout + run.stderr
    assert run.returncode == 1, out
    assert "INTERNALERROR" not in out
    assert "FAILED baseboard-plugin[nodriver]::load" in out
    assert "platform 'nodriver': detect() raised OSError: libnodriver.so" in out
    # it registers nothing, so its load test is the only test
    assert (run.count("failed"), run.count("passed")) == (1, 0)


# every weight op computed in the activations' dtype and upcast when float32 is asked for
ROUNDING_PLUGIN = """
    from baseboard.core.registry import Impl
    from baseboard.kernels.torch import gemm, quant_gemm
    from baseboard.plugins import hookimpl

    BASEBOARD_CONTRACT = 1


    def rounding(reference):
        class Rounding:
            prepare = staticmethod(reference.prepare)

            @staticmethod
            def apply(state, x, out_dtype=None):
                return reference.apply(state, x).to(out_dtype or x.dtype)
        return Rounding


    Gemm = rounding(gemm.Gemm)
    GemmW4A16 = rounding(quant_gemm.GemmW4A16)
    GemmW8A16 = rounding(quant_gemm.GemmW8A16)
    GemmW8A8Int8 = rounding(quant_gemm.GemmW8A8Int8)
    GemmW8A8Fp8 = rounding(quant_gemm.GemmW8A8Fp8)


    @hookimpl
    def baseboard_ops():
        return [Impl(op, "rounding", f"rounding_plugin:{cls}") for op, cls in (
            ("gemm", "Gemm"), ("gemm_w4a16", "GemmW4A16"), ("gemm_w8a16", "GemmW8A16"),
            ("gemm_w8a8_int8", "GemmW8A8Int8"), ("gemm_w8a8_fp8", "GemmW8A8Fp8"))]
"""
WEIGHT_OPS = ("gemm", "gemm_w4a16", "gemm_w8a16", "gemm_w8a8_int8", "gemm_w8a8_fp8")


def test_a_float32_result_rounded_to_the_activation_dtype_fails_every_weight_op(site,
                                                                                tmp_path):
    site.install("rounding-dist", {"rounding": "rounding_plugin"},
                 {"rounding_plugin": ROUNDING_PLUGIN})
    run = run_pytest("--baseboard-plugin", "rounding", cwd=tmp_path, path=site.root)
    out = run.stdout
    assert run.returncode == 1, out + run.stderr
    halves = [(op, case.id) for op in WEIGHT_OPS for case in cases_for(op)
              if not case.id.startswith("float32")]
    for op, case_id in halves:
        assert f"FAILED baseboard-plugin[rounding]::{op}=rounding::{case_id}" in out
    assert "float32 values are exactly representable in bfloat16, so the result was " \
           "computed in bfloat16 and upcast" in out
    assert "exactly representable in float16" in out
    # float32 activations ask for nothing more: those cases pass
    float32_cases = sum(len(cases_for(op)) for op in WEIGHT_OPS) - len(halves)
    assert (run.count("failed"), run.count("passed")) == (len(halves),
                                                          1 + len(WEIGHT_OPS) + float32_cases)


# attention whose metadata live in one object that every build overwrites, as views into
# persistent buffers do; and the same, refusing metadata older than the latest build
STALE_PLUGIN = """
    from baseboard.core.errors import BaseboardError
    from baseboard.core.registry import Impl
    from baseboard.kernels.torch.attention import TorchAttention
    from baseboard.plugins import hookimpl

    BASEBOARD_CONTRACT = 1


    class SharedMetadata(TorchAttention):
        def build_metadata(self, batch):
            fresh = super().build_metadata(batch)
            if not hasattr(self, "shared"):
                self.shared = fresh
            self.shared.__dict__.update(fresh.__dict__)
            return self.shared


    class RefusesStale(SharedMetadata):
        def build_metadata(self, batch):
            self.builds = getattr(self, "builds", 0) + 1
            return self.builds, super().build_metadata(batch)

        def forward(self, q, k, v, kv_cache, metadata):
            build, shared = metadata
            if build != self.builds:
                raise BaseboardError("metadata of an earlier step")
            return super().forward(q, k, v, kv_cache, shared)


    @hookimpl
    def baseboard_ops():
        return [Impl("attention", "shared", "stale_plugin:SharedMetadata"),
                Impl("attention", "refuses", "stale_plugin:RefusesStale")]
"""


def test_attention_metadata_overwritten_by_the_next_build_fails_unless_refused(site,
                                                                                tmp_path):
    site.install("stale-dist", {"stale": "stale_plugin"}, {"stale_plugin": STALE_PLUGIN})
    run = run_pytest("--baseboard-plugin", "stale", "-k", "load or signature or float32",
                     cwd=tmp_path, path=site.root)
    out = run.stdout
    assert run.returncode == 1, out + run.stderr
    cases = [case.id for case in cases_for("attention") if case.id.startswith("float32")]
    for case_id in cases:
        assert f"FAILED baseboard-plugin[stale]::attention=shared::{case_id}" in out
        assert f"attention=refuses::{case_id}" not in out
    assert "attention step 4: 4 decodes, run after the metadata of the next step were built " \
           "(forward with metadata older than the latest build_metadata must be right or " \
           "raise a BaseboardError)" in out
    # the first three steps, built and run in turn, pass: only the stale step fails
    assert "attention step 1" not in out and "attention step 3" not in out
    assert (run.count("failed"), run.count("passed")) == (len(cases), 1 + 2 + len(cases))


def test_an_unknown_plugin_is_a_usage_error(tmp_path):
    run = run_pytest("--baseboard-plugin", "exampel", cwd=tmp_path)
    assert run.returncode == 4
    assert "--baseboard-plugin 'exampel': no installed plugin has this name. " \
           "Did you mean 'example'?" in run.stderr


def test_every_op_of_the_contract_has_cases_and_a_check():
    for op in OPS:
        assert cases_for(op), op
        assert op in CHECKS, op
        ids = [case.id for case in cases_for(op)]
        assert len(ids) == len(set(ids)), op


def test_the_null_platform_is_a_complete_platform():
    assert platform_problems(NullPlatform()) == []
    assert platform_problems(NullPlatform(present=False)) == []
    assert platform_problems(NullPlatform(free_memory=3, total_memory=2)) == [
        "memory() returned (free=3, total=2); expected 0 <= free <= total bytes"]


def test_the_kit_skips_an_implementation_missing_a_distribution_as_selection_rejects_it():
    needy = Impl("rms_norm", "needy", "baseboard.kernels.torch.norm:rms_norm",
                 requires=("no-such-distribution-xyz",))
    kit = open_kit([], "cpu")
    reason = kit.unavailable(needy)
    assert reason == rejection(needy, SelectionContext(kit.platform)).reason
    assert reason == ("needs no-such-distribution-xyz installed (pip install "
                      "no-such-distribution-xyz)")
