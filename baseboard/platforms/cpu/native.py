"""The cpu platform's native kernels: C sources in ``csrc/`` built once with the host's
C compiler into a shared library, cached on disk, and called through ctypes.

Why C and not only torch: at decode the CPU is bound by weight streaming and by
per-op overhead. torch's bf16 ``linear`` streams its [N, K] weight at about half
the memory bandwidth for M <= 8, and the reference norms and rotary run ten or
more small torch ops per call. The kernels here stream prepacked weights near the
bandwidth and do each row-wise op in one pass (measured in benchmarks/cpu_ops.py).

The library is built on first use (well under a second) into
``$XDG_CACHE_HOME/baseboard/cpu-kernels/<hash>/`` (``~/.cache`` by default), keyed by the
sources, the flags and the compiler, and links OpenMP so that it shares torch's
OpenMP runtime (torch's libgomp is already loaded under the same soname): the
kernels then run on torch's threads, never on a second pool fighting it for cores.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

from .platform import _cpu_flags

SOURCES = ("gemm.c", "attention.c", "elementwise.c", "sampling.c")
HEADERS = ("vec.h",)
FLAGS = ("-O3", "-fPIC", "-shared", "-fopenmp", "-mavx512f", "-mavx512bw", "-mavx512vl",
         "-mavx512dq", "-mavx512bf16", "-mfma", "-mf16c", "-std=gnu11")
NEEDED_CPU_FLAGS = ("avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_bf16")

DTYPE_CODES = {torch.bfloat16: 0, torch.float16: 1, torch.float32: 2}

_V, _L, _I, _F = ctypes.c_void_p, ctypes.c_long, ctypes.c_int, ctypes.c_float
SIGNATURES = {
    "bb_gemm_pack": [_V, _L, _L, _L, _V, _I],
    "bb_gemm": [_V, _L, _V, _V, _V, _L, _L, _L, _L, _I, _I],
    "bb_attention": [_V, _V, _L, _V, _L, _V, _L, _V, _L, _V, _L, _I],
    "bb_rms_norm": [_V, _L, _V, _L, _V, _L, _L, _F, _I, _I, _I],
    "bb_fused_add_rms_norm": [_V, _L, _V, _L, _V, _L, _L, _F, _I, _I, _I],
    "bb_silu_and_mul": [_V, _L, _V, _L, _L, _L, _I, _I],
    "bb_rotary_embedding": [_V, _V, _L, _L, _V, _L, _L, _L, _V, _L, _I, _I],
    "bb_argmax": [_V, _L, _L, _L, _V, _I],
}


class NativeUnavailable(RuntimeError):
    """The native kernels cannot be built or loaded here; the message says why."""


def _source_dir() -> Path:
    return Path(__file__).parent / "csrc"


def _compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "baseboard" / "cpu-kernels"


def _build_key(compiler: str) -> str:
    digest = hashlib.sha256()
    for name in SOURCES + HEADERS:
        digest.update((_source_dir() / name).read_bytes())
    digest.update(" ".join(FLAGS).encode())
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=False)
    digest.update(version.stdout.encode())
    return digest.hexdigest()[:16]


def _build(compiler: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    # build beside the target, then rename: concurrent first uses never load a partial file
    fd, partial = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    sources = [str(_source_dir() / name) for name in SOURCES]
    command = [compiler, *FLAGS, f"-I{_source_dir()}", *sources, "-o", partial, "-lm"]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        os.unlink(partial)
        raise NativeUnavailable(f"compiling the cpu kernels failed ({' '.join(command)}): "
                                f"{result.stderr.strip()[-2000:]}")
    os.replace(partial, target)


def _openmp_runtimes() -> set[str]:
    names = set()
    with open("/proc/self/maps") as maps:
        for line in maps:
            path = line.split()[-1]
            if any(tag in os.path.basename(path) for tag in ("libgomp", "libiomp", "libomp")):
                names.add(path)
    return names


def library() -> ctypes.CDLL:
    """The loaded kernel library (built on first use). Raises NativeUnavailable with the
    reason when this CPU, compiler or torch build cannot run it."""
    lib, reason = _load()
    if lib is None:
        raise NativeUnavailable(reason)
    return lib


@functools.lru_cache(maxsize=None)
def _load() -> tuple[ctypes.CDLL | None, str]:
    # a failure is remembered too: supports() asks on every resolve, and a failing
    # compiler must not run again each time
    try:
        return _build_and_open(), ""
    except (NativeUnavailable, OSError) as exc:
        return None, str(exc)


def _build_and_open() -> ctypes.CDLL:
    missing = [f for f in NEEDED_CPU_FLAGS if f not in _cpu_flags()]
    if missing:
        raise NativeUnavailable(f"the CPU lacks {', '.join(missing)}")
    compiler = _compiler()
    if compiler is None:
        raise NativeUnavailable("no C compiler found (install gcc, or set CC)")
    target = _cache_dir() / _build_key(compiler) / "libbaseboard_cpu.so"
    if not target.exists():
        _build(compiler, target)
    before = _openmp_runtimes()
    lib = ctypes.CDLL(str(target))
    if len(_openmp_runtimes()) > max(1, len(before)):
        raise NativeUnavailable(
            f"the kernels would load a second OpenMP runtime ({sorted(_openmp_runtimes())}) "
            f"beside torch's; they only run on torch's own libgomp")
    for name, argtypes in SIGNATURES.items():
        fn = getattr(lib, name)
        fn.argtypes = argtypes
        fn.restype = None
    return lib


def unavailable_reason() -> str | None:
    """None when the native kernels can run here, else why not (for ``supports``)."""
    lib, reason = _load()
    return None if lib is not None else f"native cpu kernels unavailable: {reason}"


HUGE_PAGE = 2 << 20
MADV_HUGEPAGE = 14  # linux/mman.h


@functools.lru_cache(maxsize=None)
def _madvise():
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


def streamed_empty(numel: int, dtype: torch.dtype) -> torch.Tensor:
    """An uninitialized 1-D tensor for data streamed every step (packed weights), on
    2 MiB-aligned memory marked MADV_HUGEPAGE: with 4 KiB pages the hardware prefetcher
    stops at every page boundary, and weight streaming measured about 15% slower
    (benchmarks/cpu_ops.py). Where the hint is refused (THP off, not Linux) the memory is
    ordinary pages; small tensors are not worth the alignment and stay ordinary too."""
    nbytes = numel * torch.empty(0, dtype=dtype).element_size()
    madvise = _madvise()
    if nbytes < HUGE_PAGE or madvise is None:
        return torch.empty(numel, dtype=dtype)
    # the pages are not touched before the hint: the first write faults in huge pages
    whole = -(-nbytes // HUGE_PAGE) * HUGE_PAGE
    raw = torch.empty(whole + HUGE_PAGE, dtype=torch.uint8)
    offset = -raw.data_ptr() % HUGE_PAGE
    madvise(raw.data_ptr() + offset, whole, MADV_HUGEPAGE)
    return raw[offset:offset + nbytes].view(dtype)


def dtype_code(dtype: torch.dtype) -> int:
    """The kernels' code for an activation dtype (bf16, fp16, fp32)."""
    return DTYPE_CODES[dtype]
