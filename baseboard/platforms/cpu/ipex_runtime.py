"""Intel Extension for PyTorch (IPEX): whether it can run here, and importing it.

IPEX is built for one torch release: intel-extension-for-pytorch 2.8.x runs on torch
2.8.x only, and when the two differ its import prints a warning and raises. So the
versions are compared from package metadata first, and IPEX is imported only where they
match, once, inside ``problem()``; every IPEX implementation's ``supports`` returns that
problem as an ENVIRONMENT rejection, which ``baseboard info`` shows with the fix.

IPEX 2.8 also imports ``transformers.modeling_attn_mask_utils`` (for its own model
rewrites), a module transformers 5 removed; the names it takes from there are unbound and
the import fails with a NameError. The ops used here never call those functions, so a
stand-in module whose functions raise is registered for the length of the import only,
where transformers has no such module.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.metadata
import importlib.util
import sys
import types
from typing import Any, Iterator, Optional

import torch

from ...core.errors import PluginError
from ...core.registry import ENVIRONMENT, Rejection

DISTRIBUTION = "intel-extension-for-pytorch"
MODULE = "intel_extension_for_pytorch"
LATEST = "2.8"  # the last IPEX release for the CPU, and the torch it is built for
REMOVED_TRANSFORMERS_MODULE = "transformers.modeling_attn_mask_utils"


def major_minor(version: str) -> str:
    """'2.8.0+cpu' -> '2.8'."""
    return ".".join(version.split("+")[0].split(".")[:2])


def version_problem(ipex_version: Optional[str], torch_version: str) -> Optional[str]:
    """Why IPEX ``ipex_version`` (None: not installed) cannot run beside torch
    ``torch_version``, with the fix; None when the two are a pair."""
    if ipex_version is None:
        return (f"{DISTRIBUTION} is not installed. Each release is built for one torch "
                f"release ({LATEST} for torch {LATEST}, the last), and torch {torch_version} "
                f"is installed: pip install torch=={LATEST}.* {DISTRIBUTION}=={LATEST}.* in "
                f"an environment of their own (`make test-ipex` builds one, .venv-ipex)")
    wanted = major_minor(ipex_version)
    if wanted != major_minor(torch_version):
        return (f"{DISTRIBUTION} {ipex_version} needs torch {wanted}.*, but torch "
                f"{torch_version} is installed; install the pair (pip install "
                f"torch=={wanted}.* {DISTRIBUTION}=={ipex_version}), or uninstall "
                f"{DISTRIBUTION}")
    return None


def installed_version() -> Optional[str]:
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None


@contextlib.contextmanager
def _removed_transformers_module() -> Iterator[None]:
    """A stand-in for the transformers module IPEX 2.8 imports, for the import only."""
    try:
        present = importlib.util.find_spec(REMOVED_TRANSFORMERS_MODULE) is not None
    except ModuleNotFoundError:  # no transformers at all: IPEX's own guard handles it
        present = True
    if present or REMOVED_TRANSFORMERS_MODULE in sys.modules:
        yield
        return
    stand_in = types.ModuleType(REMOVED_TRANSFORMERS_MODULE)

    def removed(*args: Any, **kwargs: Any) -> None:
        raise PluginError(f"{REMOVED_TRANSFORMERS_MODULE} was removed in transformers "
                                 f"5; IPEX's model rewrites that call it do not run here.")

    stand_in._prepare_4d_causal_attention_mask = removed
    stand_in._prepare_4d_attention_mask = removed
    sys.modules[REMOVED_TRANSFORMERS_MODULE] = stand_in
    try:
        yield
    finally:
        sys.modules.pop(REMOVED_TRANSFORMERS_MODULE, None)


@functools.lru_cache(maxsize=None)
def _load() -> tuple[Optional[Any], Optional[str]]:
    """(the IPEX module, None) or (None, why it cannot run here). Imports IPEX at most once."""
    version = installed_version()
    problem = version_problem(version, torch.__version__)
    if problem:
        return None, problem
    try:
        with _removed_transformers_module():
            module = importlib.import_module(MODULE)
    except Exception as exc:  # any failure of a vendor import is this machine's problem
        return None, (f"{DISTRIBUTION} {version} is installed beside torch "
                      f"{torch.__version__} but failed to import: {exc!r}; reinstall the pair "
                      f"(pip install --force-reinstall torch=={major_minor(version)}.* "
                      f"{DISTRIBUTION}=={version})")
    return module, None


def problem() -> Optional[Rejection]:
    """None when IPEX runs here, else an ENVIRONMENT rejection naming both versions and
    the fix. The first call imports IPEX (a few seconds) where the versions match."""
    _, reason = _load()
    return None if reason is None else Rejection(reason, ENVIRONMENT)


def ipex() -> Any:
    """The imported IPEX module; raises PluginError with the reason otherwise."""
    module, reason = _load()
    if module is None:
        raise PluginError(reason)
    return module
