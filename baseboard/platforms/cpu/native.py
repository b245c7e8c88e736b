"""The cpu platform's native kernels (csrc/, built by build.py): loading them, and the
small helpers their Python wrappers share.

Why C and not only torch: at decode the CPU is bound by weight streaming and by
per-op overhead. torch's bf16 ``linear`` streams its [N, K] weight well below the
memory bandwidth for M <= 8, and the reference norms and rotary run ten or more small
torch ops per call. The kernels here stream prepacked weights near the bandwidth and do
each row-wise op in one pass (benchmarks/cpu_ops.py; numbers in docs/benchmarks.md).

``library()`` is the CPython extension module where the Python headers are installed,
else the same object through ctypes; both have the same functions (``bb_*``), taking
pointers as ints (or None), sizes and strides in elements.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.machinery
import importlib.util
import os
from typing import Any

import torch

from ...core.registry import ENVIRONMENT, UNSUPPORTED, Rejection
from .build import MODULE_NAME, NativeUnavailable, built_object, python_include
from .platform import _cpu_flags

NEEDED_CPU_FLAGS = ("avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_bf16")
DTYPE_CODES = {torch.bfloat16: 0, torch.float16: 1, torch.float32: 2}

_V, _L, _I, _F = ctypes.c_void_p, ctypes.c_long, ctypes.c_int, ctypes.c_float
SIGNATURES = {  # for ctypes; csrc/kernels.h has the C prototypes
    "bb_gemm_pack": [_V, _L, _L, _L, _V, _I],
    "bb_gemm": [_V, _L, _V, _V, _V, _L, _L, _L, _L, _I, _I],
    "bb_gemm_pack_f32": [_V, _L, _L, _L, _V, _I],
    "bb_gemm_f32": [_V, _L, _V, _V, _V, _L, _L, _L, _L, _I],
    "bb_qgemm_pack": [_V, _L, _L, _L, _I, _I, _V, _I],
    "bb_qgemm": [_V, _L, _I, _V, _V, _V, _I, _V, _V, _L, _I, _L, _L, _L, _L, _I, _L, _I, _V, _I],
    "bb_attention": [_V, _V, _L, _V, _L, _V, _L, _V, _L, _V, _L, _I],
    "bb_rms_norm": [_V, _L, _V, _L, _V, _L, _L, _F, _I, _I, _I],
    "bb_fused_add_rms_norm": [_V, _L, _V, _L, _V, _L, _L, _F, _I, _I, _I],
    "bb_silu_and_mul": [_V, _L, _V, _L, _L, _L, _I, _I],
    "bb_rotary_embedding": [_V, _V, _L, _L, _V, _L, _L, _L, _V, _L, _I, _I],
    "bb_argmax": [_V, _L, _L, _L, _V, _I],
}


def library() -> Any:
    """The loaded kernels (built on first use). Raises NativeUnavailable with the reason
    when this CPU, compiler or torch build cannot run them."""
    lib, reason, _ = _load()
    if lib is None:
        raise NativeUnavailable(reason)
    return lib


def unavailable_reason() -> str | None:
    """None when the native kernels can run here, else why not."""
    found = rejection()
    return None if found is None else found.reason


def rejection() -> Rejection | None:
    """None when the native kernels can run here, else the reason for ``supports``: a CPU
    without the instructions is UNSUPPORTED (nothing to fix here); a failed build or load
    (no compiler, an unwritable cache, a compiler error) is ENVIRONMENT, which selection
    reports, since every op then runs the far slower torch references."""
    lib, reason, kind = _load()
    return None if lib is not None else Rejection(f"native cpu kernels unavailable: {reason}",
                                                  kind)


@functools.lru_cache(maxsize=None)
def _load() -> tuple[Any, str, str]:
    # a failure is remembered too: supports() asks on every resolve, and a failing
    # compiler must not run again each time
    missing = [f for f in NEEDED_CPU_FLAGS if f not in _cpu_flags()]
    if missing:
        return None, f"the CPU lacks {', '.join(missing)}", UNSUPPORTED
    try:
        if python_include() is not None:
            return _one_openmp(lambda: _import_module(built_object(with_module=True))), "", ""
        return ctypes_library(), "", ""
    except (NativeUnavailable, OSError, ImportError) as exc:
        return None, str(exc), ENVIRONMENT


def _import_module(path: os.PathLike) -> Any:
    loader = importlib.machinery.ExtensionFileLoader(MODULE_NAME, str(path))
    spec = importlib.util.spec_from_file_location(MODULE_NAME, str(path), loader=loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


@functools.lru_cache(maxsize=None)
def ctypes_library() -> ctypes.CDLL:
    """The kernels through ctypes (the fallback where the Python headers are missing)."""
    path = built_object(with_module=python_include() is not None)
    lib = _one_openmp(lambda: ctypes.CDLL(str(path)))
    for name, argtypes in SIGNATURES.items():
        fn = getattr(lib, name)
        fn.argtypes = argtypes
        fn.restype = None
    return lib


def _one_openmp(open_library):
    before = _openmp_runtimes()
    lib = open_library()
    after = _openmp_runtimes()
    if len(after) > max(1, len(before)):
        raise NativeUnavailable(f"the kernels would load a second OpenMP runtime "
                                f"({sorted(after)}) beside torch's; they only run on torch's "
                                f"own libgomp")
    return lib


def _openmp_runtimes() -> set[str]:
    names = set()
    with open("/proc/self/maps") as maps:
        for line in maps:
            path = line.split()[-1]
            if any(tag in os.path.basename(path) for tag in ("libgomp", "libiomp", "libomp")):
                names.add(path)
    return names


def dtype_code(dtype: torch.dtype) -> int:
    """The kernels' code for an activation dtype (bf16, fp16, fp32)."""
    return DTYPE_CODES[dtype]


HUGE_PAGE = 2 << 20
MADV_HUGEPAGE = 14  # linux/mman.h


@functools.lru_cache(maxsize=None)
def _madvise():
    try:
        fn = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


def streamed_empty(numel: int, dtype: torch.dtype) -> torch.Tensor:
    """An uninitialized 1-D tensor for data streamed every step (packed weights), on
    2 MiB-aligned memory marked MADV_HUGEPAGE: with 4 KiB pages the hardware prefetcher
    stops at every page boundary, and weight streaming measured slower (docs/benchmarks.md).
    Where the hint is refused (THP off, not Linux) the memory is ordinary pages; tensors
    under 2 MiB are not worth the alignment and stay ordinary too."""
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
