"""Building the cpu kernels: the C sources in ``csrc/`` compiled with the host's C
compiler into one shared object, cached on disk.

The object is built on first use (about a second) into
``$XDG_CACHE_HOME/baseboard/cpu-kernels/<hash>/`` (``~/.cache`` by default), keyed by the
sources, the flags, the compiler and the Python headers. Where the Python headers are
installed it is also a CPython extension module (csrc/module.c), far cheaper to call
than ctypes (docs/benchmarks.md); elsewhere it is a plain library for ctypes. It links
OpenMP, and so shares torch's runtime (torch's libgomp is already loaded under the same
soname): the kernels run on torch's threads, never on a second pool fighting it for the
cores.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sysconfig
import tempfile
from pathlib import Path
from typing import Optional

SOURCES = ("gemm.c", "quant_gemm.c", "attention.c", "elementwise.c", "sampling.c")
HEADERS = ("kernels.h", "panels.h", "vec.h")
MODULE_SOURCE = "module.c"
MODULE_NAME = "_baseboard_cpu"
FLAGS = ("-O3", "-fPIC", "-shared", "-fopenmp", "-mavx512f", "-mavx512bw", "-mavx512vl",
         "-mavx512dq", "-mavx512bf16", "-mfma", "-mf16c", "-std=gnu11")


class NativeUnavailable(RuntimeError):
    """The native kernels cannot be built or loaded here; the message says why."""


def source_dir() -> Path:
    return Path(__file__).parent / "csrc"


def compiler() -> Optional[str]:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")


def python_include() -> Optional[str]:
    """The directory of Python.h, when the Python headers are installed."""
    include = sysconfig.get_paths().get("include")
    return include if include and (Path(include) / "Python.h").is_file() else None


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "baseboard" / "cpu-kernels"


def _key(cc: str, include: Optional[str]) -> str:
    digest = hashlib.sha256()
    for name in SOURCES + HEADERS + ((MODULE_SOURCE,) if include else ()):
        digest.update((source_dir() / name).read_bytes())
    digest.update(" ".join(FLAGS + (include or "",)).encode())
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, check=False)
    digest.update(version.stdout.encode())
    return digest.hexdigest()[:16]


def built_object(with_module: bool) -> Path:
    """The path of the built shared object, compiling it first if it is not cached.
    ``with_module``: include the extension module (needs the Python headers)."""
    cc = compiler()
    if cc is None:
        raise NativeUnavailable("no C compiler found (install gcc, or set CC)")
    if shutil.which(cc) is None:
        raise NativeUnavailable(f"the C compiler {cc!r} (CC) was not found; install gcc, or "
                                f"set CC to a C compiler")
    include = python_include() if with_module else None
    if with_module and include is None:
        raise NativeUnavailable("the Python headers (Python.h) are not installed")
    name = MODULE_NAME + sysconfig.get_config_var("EXT_SUFFIX") if include else \
        "libbaseboard_cpu.so"
    target = _cache_dir() / _key(cc, include) / name
    if not target.exists():
        _compile(cc, include, target)
    return target


def _compile(cc: str, include: Optional[str], target: Path) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # build beside the target, then rename: concurrent first uses never load a partial
        fd, partial = tempfile.mkstemp(suffix=".so", dir=target.parent)
    except OSError as exc:
        raise NativeUnavailable(f"the build directory {target.parent} cannot be written "
                                f"({exc}); set XDG_CACHE_HOME to a writable directory") from exc
    os.close(fd)
    names = SOURCES + ((MODULE_SOURCE,) if include else ())
    command = [cc, *FLAGS, f"-I{source_dir()}", *([f"-I{include}"] if include else []),
               *(str(source_dir() / n) for n in names), "-o", partial, "-lm"]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        os.unlink(partial)
        raise NativeUnavailable(f"compiling the cpu kernels failed ({' '.join(command)}): "
                                f"{result.stderr.strip()[-2000:]}")
    os.replace(partial, target)
