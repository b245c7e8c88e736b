"""``resolve(model, ...)``: the one load path. A checkpoint, the arguments, the settings and
the plugins become one frozen ``EngineConfig``; the engine, ``baseboard info`` and a saved
plan all come from it, so what `info` shows is what `generate` runs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from ..core.errors import ConfigError, ModelError
from ..core.settings import Settings, read_settings
from ..core.tuning import Workload
from ..engine.args import EngineArgs, parse_dtype
from ..engine.config import EngineConfig
from ..plugins.catalog import Catalog
from .plan import load_catalog, resolve_plan

DEFAULT_MAX_NUM_BATCHED_TOKENS = 4096
PREFILL_GRAPH_SIZES = (16, 32, 64, 128, 256, 512)  # past 512 tokens the work outweighs launches


def resolve(model: str, *, environ: Mapping[str, str] | None = None,
            **arguments: Any) -> EngineConfig:
    """The engine configuration ``LLM(model, **arguments)`` would run with: the checkpoint's
    metadata is read (not its weights), the plugins loaded and every op's implementation
    chosen. ``environ`` stands in for os.environ."""
    args = EngineArgs(model=model, **arguments)
    settings = read_settings(environ)
    catalog = load_catalog(settings)
    return configure(args, open_checkpoint(args, catalog), settings, catalog)


def open_checkpoint(args: EngineArgs, catalog: Catalog) -> Any:
    """The checkpoint ``args.model`` names (a path or an embedded model's name), with its
    metadata read; ModelError for what baseboard cannot run."""
    from ..models.embedded import model_path
    from ..models.loader import load_checkpoint

    path = model_path(args.model)
    _check_remote_code(path, catalog, args.trust_remote_code)
    checkpoint = load_checkpoint(path, catalog)
    if args.quantization is not None and args.quantization != checkpoint.quant_method:
        stored = checkpoint.quant_method or "not quantized"
        raise ConfigError(f"quantization={args.quantization!r}, but {path} is {stored}; "
                          f"baseboard runs a checkpoint in the format it is stored in. Drop "
                          f"quantization= or give a checkpoint quantized with "
                          f"{args.quantization!r}.")
    return checkpoint


def configure(args: EngineArgs, checkpoint: Any, settings: Settings,
              catalog: Catalog) -> EngineConfig:
    """Every decision of a load, made once: platform and plan, dtype, limits, graphs."""
    config = checkpoint.config
    resolution = resolve_plan(
        platform=args.platform, backends=args.backends, cli_backends=args.cli_backends,
        plan_path=args.plan_path, dtype=parse_dtype(args.dtype) or checkpoint_dtype(checkpoint),
        head_dim=config.head_dim, num_heads=config.num_heads, num_kv_heads=config.num_kv_heads,
        block_size=args.block_size, cuda_graphs=False if args.enforce_eager else None,
        settings=settings, catalog=catalog, quant_schemes=checkpoint.quant_schemes,
        tensor_parallel_size=args.tensor_parallel_size,
        workload=Workload.for_model(config, tuple(checkpoint.linear_ops)))
    platform = resolution.platform.platform
    ctx = resolution.context
    if args.tensor_parallel_size > 1:
        from ..distributed.launch import check_tensor_parallel

        check_tensor_parallel(config, platform, args.tensor_parallel_size)
    if ctx.dtype not in platform.supported_dtypes:
        raise ConfigError(f"dtype {ctx.dtype} is not supported on platform {platform.name} "
                          f"(supported: {', '.join(map(str, platform.supported_dtypes))}).")
    limit = config.max_position_embeddings
    if args.max_model_len is not None and args.max_model_len > limit:
        raise ModelError(f"max_model_len={args.max_model_len} is more than the model's {limit} "
                         f"positions (max_position_embeddings); use at most {limit}.")
    max_model_len = args.max_model_len or limit
    batched = args.max_num_batched_tokens or max(DEFAULT_MAX_NUM_BATCHED_TOKENS, max_model_len)
    if batched < max_model_len:
        raise ConfigError(f"max_num_batched_tokens={batched} is less than max_model_len="
                          f"{max_model_len}; a whole prompt must fit one step.")
    async_scheduling = args.async_scheduling
    if async_scheduling is None:
        async_scheduling = settings["BASEBOARD_ASYNC_SCHEDULING"]
    if async_scheduling is None:  # only a device running apart from the host gains
        async_scheduling = platform.device_type != "cpu"
    return EngineConfig(
        model=str(checkpoint.path), model_config=config, quant_method=checkpoint.quant_method,
        platform=platform, device=platform.device(), dtype=ctx.dtype,
        block_size=ctx.block_size, max_num_seqs=args.max_num_seqs, max_model_len=max_model_len,
        max_num_batched_tokens=batched, kv_cache_memory=args.kv_cache_memory,
        gpu_memory_utilization=args.gpu_memory_utilization
        or settings["BASEBOARD_GPU_MEMORY_UTILIZATION"],
        cuda_graphs=ctx.cuda_graphs,
        graph_prefill_sizes=prefill_graph_sizes(batched, max_model_len) if ctx.cuda_graphs
        else (),
        graph_parts=ctx.cuda_graphs and settings["BASEBOARD_GRAPH_PARTS"],
        async_scheduling=async_scheduling, pdl=settings["BASEBOARD_PDL"],
        num_threads=settings["BASEBOARD_NUM_THREADS"] or len(os.sched_getaffinity(0)),
        seed=args.seed, plan=resolution.plan, resolution=resolution,
        tensor_parallel_size=args.tensor_parallel_size)


def checkpoint_dtype(checkpoint: Any) -> Optional[torch.dtype]:
    """What dtype="auto" means before the platform is known: float32 for GGUF files, which
    are made to compute in float32 (as llama.cpp does; in bf16, close logits of a small
    model flip its answer), else None: the platform's default dtype."""
    return torch.float32 if str(checkpoint.path).endswith(".gguf") else None


def prefill_graph_sizes(max_num_batched_tokens: int, max_model_len: int) -> tuple[int, ...]:
    """One-sequence prefill lengths captured as CUDA graphs: powers of two up to 512."""
    return tuple(s for s in PREFILL_GRAPH_SIZES if s <= min(max_num_batched_tokens, max_model_len))


def _check_remote_code(path: Path, catalog: Catalog, trust_remote_code: bool) -> None:
    """A checkpoint whose architecture exists only as its own Python code (config.json's
    auto_map) cannot run: baseboard executes no code from a checkpoint."""
    config_path = path / "config.json"
    if not config_path.is_file():
        return
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError):
        return  # the loader names the unreadable file
    if not isinstance(config, dict):
        return
    architectures = config.get("architectures") or []
    if config.get("auto_map") and not any(a in catalog.models for a in architectures):
        given = "even with trust_remote_code=True " if trust_remote_code else ""
        raise ModelError(f"{path} defines its architecture {architectures or '?'} in its own "
                         f"code (config.json 'auto_map'), which baseboard does not run {given}"
                         f"(it executes no code from a checkpoint). Registered architectures: "
                         f"{', '.join(sorted(catalog.models))}; a plugin can add one.")
