"""``EngineArgs``: what a user passes to ``LLM(...)``, checked in full before anything loads.

vLLM's names and meanings. Every value is checked for its type and range here, so a
wrong argument is an error naming it at once, not after a model has been read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any, Mapping, Optional, Union

import torch

from ..core.errors import ConfigError, did_you_mean
from ..core.ops import OPS
from .sampling_params import SEED_MAX, SEED_MIN

DTYPES = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16,
          "fp16": torch.float16, "half": torch.float16, "float32": torch.float32,
          "fp32": torch.float32, "float": torch.float32}


@dataclass(frozen=True)
class EngineArgs:
    """The engine's arguments; see ``LLM`` for what each one means."""

    model: str
    dtype: Union[None, str, torch.dtype] = None
    platform: Optional[str] = None
    backends: Optional[Mapping[str, str]] = None
    max_num_seqs: int = 256
    max_model_len: Optional[int] = None
    kv_cache_memory: Optional[int] = None
    block_size: Optional[int] = None
    seed: Optional[int] = None
    max_num_batched_tokens: Optional[int] = None
    cli_backends: Optional[Mapping[str, str]] = None
    plan_path: Optional[str] = None
    skip_tokenizer_init: bool = False
    async_scheduling: Optional[bool] = None
    tokenizer: Optional[str] = None
    gpu_memory_utilization: Optional[float] = None
    enforce_eager: bool = False
    quantization: Optional[str] = None
    trust_remote_code: bool = False
    tensor_parallel_size: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.model, os.PathLike):
            object.__setattr__(self, "model", os.fspath(self.model))
        _expect(isinstance(self.model, str) and self.model, "model", self.model,
                "a model directory, a .gguf file or the name of an embedded model ('smollm2')")
        parse_dtype(self.dtype)
        for name in ("platform", "plan_path", "tokenizer", "quantization"):
            value = getattr(self, name)
            _expect(value is None or (isinstance(value, str) and value), name, value,
                    "a non-empty string or None")
        for name in ("backends", "cli_backends"):
            _check_backends(name, getattr(self, name))
        _expect(_is_int(self.max_num_seqs) and self.max_num_seqs > 0, "max_num_seqs",
                self.max_num_seqs, "a positive integer")
        for name in ("max_model_len", "kv_cache_memory", "block_size", "max_num_batched_tokens"):
            value = getattr(self, name)
            _expect(value is None or (_is_int(value) and value > 0), name, value,
                    "a positive integer or None")
        _expect(self.seed is None or (_is_int(self.seed) and SEED_MIN <= self.seed <= SEED_MAX),
                "seed", self.seed, "an integer in [-2**63, 2**64 - 1] or None")
        for name in ("skip_tokenizer_init", "enforce_eager", "trust_remote_code"):
            _expect(isinstance(getattr(self, name), bool), name, getattr(self, name),
                    "True or False")
        _expect(self.async_scheduling is None or isinstance(self.async_scheduling, bool),
                "async_scheduling", self.async_scheduling, "True, False or None")
        utilization = self.gpu_memory_utilization
        _expect(utilization is None or (_is_number(utilization) and 0 < utilization <= 1),
                "gpu_memory_utilization", utilization, "a number in (0, 1] or None")
        _expect(_is_int(self.tensor_parallel_size) and self.tensor_parallel_size > 0,
                "tensor_parallel_size", self.tensor_parallel_size, "a positive integer")

    def replace(self, **changes: Any) -> EngineArgs:
        return EngineArgs(**{**{f.name: getattr(self, f.name) for f in fields(self)}, **changes})


def parse_dtype(dtype: Union[None, str, torch.dtype]) -> Optional[torch.dtype]:
    """None for "auto" (the checkpoint's or the platform's choice), else a torch float dtype."""
    if dtype is None or dtype == "auto":
        return None
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    raise ConfigError(f"dtype={dtype!r} is not supported; use 'auto', 'bfloat16', 'float16' "
                      f"or 'float32' (or the torch dtype).")


def _check_backends(name: str, backends: object) -> None:
    if backends is None:
        return
    _expect(isinstance(backends, Mapping), name, backends, "a mapping {op: implementation name}")
    for op, impl in backends.items():
        if op not in OPS:
            raise ConfigError(f"{name}: unknown op {op!r}.{did_you_mean(str(op), OPS)} Known ops: "
                              f"{', '.join(OPS)}.")
        _expect(isinstance(impl, str) and impl, f"{name}[{op!r}]", impl,
                "an implementation name (a non-empty string)")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _expect(ok: object, name: str, value: object, valid: str) -> None:
    if not ok:
        raise ConfigError(f"{name}={value!r} is invalid; {name} must be {valid}.")
