"""`baseboard info`: the environment (versions) plus an explanation of every decision."""

from __future__ import annotations

import importlib.metadata
import platform as host
import sys
from typing import Any, Mapping, Optional


VERSIONED = ("torch", "triton", "transformers", "safetensors", "pluggy", "gguf",
             "intel-extension-for-pytorch", "amd-aiter", "flash-attn", "flashinfer-python")


def versions() -> dict[str, str | None]:
    """Versions of python and the libraries baseboard cares about (None: not installed).
    Read from package metadata, so no vendor library is imported."""
    found: dict[str, str | None] = {"python": sys.version.split()[0]}
    for name in VERSIONED:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    import torch

    found["torch.version.cuda"] = torch.version.cuda
    found["torch.version.hip"] = torch.version.hip
    return found


COLLECTIVES = ("all_reduce", "all_gather")


def collect(model: Optional[str] = None, *, dtype: Optional[str] = None,
            platform: Optional[str] = None, cli_backends: Optional[dict[str, str]] = None,
            plan_path: Optional[str] = None,
            environ: Optional[Mapping[str, str]] = None,
            tensor_parallel_size: int = 1) -> dict[str, Any]:
    """Everything `baseboard info` shows, as one JSON-ready dict: the decisions of a load of
    ``model`` (default: the embedded model; without it, the platform's default dtype) over
    ``tensor_parallel_size`` ranks."""
    from ..core.errors import ModelError
    from ..core.selection import plan_warnings
    from ..core.settings import read_settings
    from ..models.embedded import DEFAULT_MODEL, embedded_model
    from .plan import load_catalog, resolve_plan

    settings = read_settings(environ)
    catalog = load_catalog(settings)
    if model is None:
        try:
            model = str(embedded_model(DEFAULT_MODEL))
        except ModelError as exc:  # info must work without the default model installed
            resolution = resolve_plan(platform=platform, cli_backends=cli_backends,
                                      plan_path=plan_path, settings=settings, catalog=catalog,
                                      tensor_parallel_size=tensor_parallel_size)
            model_info, engine = {"path": None, "note": str(exc)}, {}
    if model is not None:
        resolution, model_info, engine = _model_decisions(
            model, dict(dtype=dtype, platform=platform, cli_backends=cli_backends,
                        plan_path=plan_path, tensor_parallel_size=tensor_parallel_size),
            settings, catalog)
    chosen = resolution.platform
    return {
        "warnings": plan_warnings(catalog.plugins.report, resolution.plan),
        "platform": chosen.platform.name,
        "platform_reason": chosen.why,
        "model": model_info,
        "engine": engine,
        "platforms": {
            name: {**p.describe(chosen.detections[name].present),
                   "present": chosen.detections[name].present,
                   "detection": chosen.detections[name].reason}
            for name, p in sorted(catalog.platforms.items(), key=lambda kv: -kv[1].priority)
        },
        "plugins": [r.as_dict() for r in catalog.plugins.report],
        "ops": {op: d.as_dict() for op, d in resolution.plan.decisions.items()},
        "plan": resolution.plan.to_json(),
        "models": {arch: plugin for arch, (_, plugin) in sorted(catalog.models.items())},
        "quantization_methods": {name: plugin for name, (_, plugin)
                                 in sorted(catalog.quant_methods.items())},
        "settings": {name: {"value": value, "set": name in settings.explicit}
                     for name, value in settings.as_dict().items()},
        "versions": versions(),
        "host": {"machine": host.machine(), "system": host.system()},
    }


def _model_decisions(model: str, arguments: dict[str, Any], settings: Any,
                     catalog: Any) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """(plan resolution, model facts, engine configuration) of a load of ``model``."""
    from ..engine.args import EngineArgs
    from .resolve import configure, open_checkpoint

    args = EngineArgs(model=model, **arguments)
    checkpoint = open_checkpoint(args, catalog)
    config = configure(args, checkpoint, settings, catalog)
    model_info = {"path": config.model, "architecture": config.model_config.architecture,
                  "quant_method": config.quant_method, "linear_ops": list(checkpoint.linear_ops),
                  "quant_schemes": [s.describe() for s in checkpoint.quant_schemes]}
    engine = {"dtype": _dtype_name(config.dtype), "device": str(config.device),
              "block_size": config.block_size, "max_num_seqs": config.max_num_seqs,
              "max_model_len": config.max_model_len,
              "max_num_batched_tokens": config.max_num_batched_tokens,
              "cuda_graphs": config.cuda_graphs,
              "graph_prefill_sizes": list(config.graph_prefill_sizes),
              "graph_parts": config.graph_parts,
              "async_scheduling": config.async_scheduling, "pdl": config.pdl,
              "num_threads": config.num_threads,
              "tensor_parallel_size": config.tensor_parallel_size}
    return config.resolution, model_info, engine


def _dtype_name(dtype: Any) -> str:
    return str(dtype).replace("torch.", "")


def render(info: dict[str, Any]) -> str:
    """The human-readable form of ``collect()``."""
    lines = [f"platform: {info['platform']} ({info['platform_reason']})"]
    model, engine = info["model"], info["engine"]
    if model["path"] is None:
        lines.append(f"model: none ({model['note']}); the plan is for the platform's default dtype")
    else:
        lines.append(f"model: {model['path']} ({model['architecture']}, "
                     f"{model['quant_method'] or 'not quantized'}); its linear layers call "
                     f"{', '.join(model['linear_ops'])}")
        if model.get("quant_schemes"):
            lines.append(f"quantized layouts: {'; '.join(model['quant_schemes'])}")
        lines.append("engine: " + ", ".join(f"{k} {v}" for k, v in engine.items()))
    lines += [f"warning: {line}" for line in info["warnings"]]
    lines += ["", "platforms:"]
    for name, p in info["platforms"].items():
        mark = "present" if p["present"] else "absent "
        lines.append(f"  {name:<8} {mark} priority {p['priority']:>4}  {p['detection']}"
                     f"  [plugin {p['plugin']}]")
    lines += ["", "plugins:"]
    for r in info["plugins"]:
        error = f"  {r['error']}" if r["error"] else ""
        lines.append(f"  {r['name']:<10} {r['status']:<11} {r['distribution']} {r['version']}"
                     f"{error}")
    lines += ["", "ops (selected <- candidates):"]
    linear_ops = set(model.get("linear_ops", ()))
    for op, d in info["ops"].items():
        unused = " (no layer of this model calls it)" if model["path"] and op.startswith(
            "gemm") and op not in linear_ops else ""
        if op in COLLECTIVES and engine.get("tensor_parallel_size", 1) == 1:
            unused = " (called with --tensor-parallel-size > 1 only)"
        lines.append(f"  {op:<20} {d['selected']:<12} {d['why']}{unused}")
        for replaced, state in d.get("fusions", {}).items():  # which form the layers run
            lines.append(f"  {'':<20}   + {replaced}: {state}")
        for c in d["candidates"]:
            if c["name"] != d["selected"]:
                state = "ok (lower rank)" if c["accepted"] else \
                    f"rejected ({c['kind']}): {c['reason']}"
                if c["name"] in d.get("measured", {}):
                    state = "ok, measured " + _measured_text(d["measured"][c["name"]])
                lines.append(f"  {'':<20}   {c['name']:<10} ({c['plugin']}) {state}")
    lines += ["", "models: " + ", ".join(info["models"]),
              "quantization methods: " + (", ".join(info["quantization_methods"]) or "-"),
              "", "settings:"]
    for name, s in info["settings"].items():
        lines.append(f"  {name:<34} {s['value']!s:<10} {'(set)' if s['set'] else '(default)'}")
    lines += ["", "versions:"]
    lines += [f"  {k:<28} {v if v is not None else '-'}" for k, v in info["versions"].items()]
    return "\n".join(lines)



def _measured_text(times: dict[str, float]) -> str:
    """shape -> seconds as '16x64 3.2 us, ...' (BASEBOARD_TUNE's measurements)."""
    return ", ".join(f"{shape} {seconds * 1e6:.1f} us" for shape, seconds in times.items())


def add_info_arguments(parser: Any) -> None:
    """The info flags (the caller adds --platform, --backend and --plan)."""
    parser.add_argument("--model", help="resolve for this model directory or .gguf file "
                                        "(default: the embedded SmolLM2-135M)")
    parser.add_argument("--dtype", default="auto",
                        help="auto, bfloat16, float16 or float32 (default: auto)")
    parser.add_argument("--tensor-parallel-size", type=int, default=1, metavar="N",
                        help="resolve for a model split over N devices (default: 1)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--save-plan", metavar="FILE", help="write the resolved plan as JSON")


def run_info(args: Any) -> int:
    """`baseboard info`: print the decisions of a load (and save its plan)."""
    import json
    from pathlib import Path

    from ..core.errors import ConfigError
    from .generate import backend_flags

    info = collect(args.model, dtype=args.dtype, platform=args.platform,
                   cli_backends=backend_flags(args.backend), plan_path=args.plan,
                   tensor_parallel_size=args.tensor_parallel_size)
    if args.save_plan:
        try:
            Path(args.save_plan).write_text(json.dumps(info["plan"], indent=2) + "\n")
        except OSError as exc:
            raise ConfigError(f"--save-plan {args.save_plan}: cannot write the plan there "
                              f"({exc.strerror}). Give a path in an existing, writable "
                              f"directory.") from None
    print(json.dumps(info, indent=2, default=str) if args.json else render(info))
    return 0
