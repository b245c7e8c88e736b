"""What the foreign kernel packages (examples/baseboard-flaggems, examples/baseboard-liger)
needed the contract to say, and the kit to check."""

import pytest
import torch

from baseboard.core.errors import RegistrationError
from baseboard.core.registry import ENVIRONMENT, Impl, Registry, unmet_requirements
from baseboard.core.selection import SelectionContext, rejection
from baseboard.platforms.cpu.platform import CpuPlatform
from baseboard.testing.checks import projection_views
from baseboard.testing.sandbox import run_pytest

# A rotary kernel that takes each token's heads to start Hq * D values after the previous
# token's, as a kernel that ignores the row stride does; right on contiguous q and k only.
PACKED_ROWS_ROTARY = """
    import torch

    from baseboard.core.registry import Impl
    from baseboard.kernels.torch.rotary import rotary_embedding as reference
    from baseboard.plugins import hookimpl

    BASEBOARD_CONTRACT = 1


    def packed(x):
        return torch.as_strided(x, x.shape, (x.shape[1] * x.shape[2], x.shape[2], 1))


    def rotary_embedding(positions, q, k, cos_sin_cache):
        return reference(positions, packed(q), packed(k), cos_sin_cache)


    @hookimpl
    def baseboard_ops():
        return [Impl("rotary_embedding", "packedrows", "packed_rotary:rotary_embedding",
                     platforms=("cpu",))]
"""


def test_the_kit_passes_rotary_q_and_k_as_views_of_one_projection(site, tmp_path):
    site.install("packed-dist", {"packed": "packed_rotary"}, {"packed_rotary": PACKED_ROWS_ROTARY})
    run = run_pytest("--baseboard-plugin", "packed", "--baseboard-platform", "cpu",
                     "-k", "rotary_embedding", cwd=tmp_path, path=site.root)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "views of one qkv projection" in run.stdout
    failed = [line for line in run.stdout.splitlines() if line.startswith("FAILED")]
    # one token has no next row to misplace: every case of 7 or 33 tokens fails, no other
    assert len(failed) == 18 and all("-T7-" in f or "-T33-" in f for f in failed), run.stdout


def test_projection_views_are_strided_like_the_models_qkv_split():
    q, k = torch.randn(5, 4, 8), torch.randn(5, 2, 8)
    q_view, k_view = projection_views(q, k)
    assert q_view.stride() == k_view.stride() == ((4 + 2 * 2) * 8, 8, 1)
    assert q_view.untyped_storage().data_ptr() == k_view.untyped_storage().data_ptr()
    torch.testing.assert_close(q_view, q)
    torch.testing.assert_close(k_view, k)


# The adapters call what the library's tested release has (Liger's rope_forward took
# rotary_dim only lately): a plugin names the oldest release it works with in `requires`.
def _liger_rotary(requires: tuple[str, ...]):
    return Impl("rotary_embedding", "ligerlike", "baseboard.kernels.torch.rotary:rotary_embedding",
                platforms=("cpu",), requires=requires)


@pytest.mark.parametrize("installed, verdict", [
    ("0.9.0", None),
    ("0.8.5", None),
    ("0.6.0", "needs liger-kernel>=0.8.5 (found 0.6.0) installed "
              "(pip install 'liger-kernel>=0.8.5')"),
])
def test_requires_takes_a_version_specifier_checked_from_metadata(site, installed, verdict):
    site.install("liger-kernel", {}, {"liger_kernel_stand_in": ""}, version=installed)
    found = rejection(_liger_rotary(("liger-kernel>=0.8.5",)), SelectionContext(CpuPlatform()))
    if verdict is None:
        assert found is None
    else:
        assert (found.reason, found.kind) == (verdict, ENVIRONMENT)


def test_a_missing_distribution_with_a_specifier_says_what_to_install():
    found = unmet_requirements(("no-such-kernels>=2", "torch"))
    assert found == "needs no-such-kernels>=2 installed (pip install 'no-such-kernels>=2')"
    assert unmet_requirements(("no-such-kernels",)) == ("needs no-such-kernels installed "
                                                       "(pip install no-such-kernels)")


def test_a_requirement_that_is_not_pep_508_is_refused_at_registration():
    registry = Registry()
    with pytest.raises(RegistrationError, match=r"plugin 'bad': rotary_embedding=ligerlike "
                                                r"requires 'liger kernel 0\.8', which is not"):
        registry.add(_liger_rotary(("liger kernel 0.8",)), "bad")
