"""Plan resolution: settings + plugins + platform detection + explicit choices -> a plan.

Runs once per model load (and for `baseboard info`). Everything is read here, at
resolution time, never at import.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional

import torch

from ..core.errors import ConfigError, PlatformError, did_you_mean
from ..core.ops import OPS
from ..core.platform import Detection, Platform
from ..core.selection import Choice, Plan, SelectionContext, parse_backend_spec, select_plan
from ..core.settings import Settings, read_settings
from ..core.tuning import Workload, make_tuner, tuning_on
from ..plugins.catalog import Catalog, build_catalog

SHORTCUTS = {"BASEBOARD_ATTENTION_BACKEND": "attention", "BASEBOARD_GEMM_BACKEND": "gemm",
             "BASEBOARD_SAMPLE_BACKEND": "sample"}


@dataclass
class PlatformChoice:
    platform: Platform
    why: str
    detections: dict[str, Detection]


@dataclass
class Resolution:
    settings: Settings
    catalog: Catalog
    platform: PlatformChoice
    context: SelectionContext
    plan: Plan


def load_catalog(settings: Settings) -> Catalog:
    return build_catalog(settings["BASEBOARD_PLUGINS"], settings["BASEBOARD_DISABLE_PLUGINS"])


def _failed_plugins_note(catalog: Catalog) -> str:
    failed = catalog.plugins.failures()
    if not failed:
        return ""
    return " Plugins that failed to load: " + "; ".join(f"{r.name}: {r.error}" for r in failed) + "."


def choose_platform(catalog: Catalog, requested: Optional[str], source: str) -> PlatformChoice:
    """The requested platform (which must be present), else the present one of highest priority."""
    detections = catalog.detections  # detected once, as the plugins loaded
    if requested:
        if requested not in catalog.platforms:
            raise PlatformError(
                f"{source} asks for platform {requested!r}, which no loaded plugin provides."
                f"{did_you_mean(requested, catalog.platforms)} Known platforms: "
                f"{', '.join(sorted(catalog.platforms))}.{_failed_plugins_note(catalog)}")
        detection = detections[requested]
        if not detection.present:
            raise PlatformError(
                f"{source} asks for platform {requested!r}, which is not present here: "
                f"{detection.reason}. Unset it to detect the platform, or pick a present one: "
                f"{', '.join(n for n, d in detections.items() if d.present)}.")
        return PlatformChoice(catalog.platforms[requested], f"requested by {source}", detections)
    present = [p for name, p in catalog.platforms.items() if detections[name].present]
    if not present:
        raise PlatformError("no platform is present; the cpu platform plugin is missing or "
                            "disabled." + _failed_plugins_note(catalog))
    best = max(present, key=lambda p: (p.priority, p.name))
    return PlatformChoice(best, f"detected; highest priority ({best.priority}) of the present "
                                f"platforms", detections)


def read_plan_file(path: str, source: str) -> dict:
    """A plan file's contents, checked as strictly as BASEBOARD_BACKEND: every key of
    ``selected`` an op, every name a string; a ConfigError names the file and the key."""
    where = f"{source}={path!r}"
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{where} is not a readable plan file ({exc}). Write one with "
                          f"`baseboard info --save-plan FILE`.") from None
    selected = data.get("selected") if isinstance(data, dict) else None
    if not isinstance(selected, dict):
        raise ConfigError(f"{where} has no 'selected' object mapping ops to implementation "
                          f"names. Write one with `baseboard info --save-plan FILE`.")
    for op, name in selected.items():
        if op not in OPS:
            raise ConfigError(f"{where}: selected.{op} names an unknown op.{did_you_mean(op, OPS)}"
                              f" Known ops: {', '.join(OPS)}. Remove the key.")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}: selected.{op} is {name!r}; it must be an implementation "
                              f"name (a string such as 'torch').")
    platform = data.get("platform")
    if platform is not None and not isinstance(platform, str):
        raise ConfigError(f"{where}: platform is {platform!r}; it must be a platform name.")
    return data


def explicit_choices(settings: Settings, arguments: Mapping[str, str] | None,
                     cli: Mapping[str, str] | None, plan_file: dict | None,
                     plan_source: str) -> dict[str, Choice]:
    """Merge explicit choices; precedence: argument > CLI > environment > plan file."""
    choices: dict[str, Choice] = {}
    if plan_file:
        for op, name in plan_file["selected"].items():
            choices[op] = Choice(name, f"plan file {plan_source}")
    env: dict[str, Choice] = {}
    if settings["BASEBOARD_BACKEND"]:
        for op, name in parse_backend_spec(settings["BASEBOARD_BACKEND"],
                                           "BASEBOARD_BACKEND").items():
            env[op] = Choice(name, "BASEBOARD_BACKEND")
    for var, op in SHORTCUTS.items():
        name = settings[var]
        if name:
            if op in env and env[op].name != name:
                raise ConfigError(f"{var}={name!r} contradicts BASEBOARD_BACKEND, which sets "
                                  f"{op}={env[op].name!r}. Set only one of them.")
            env[op] = Choice(name, var)
    choices.update(env)
    for source, given in (("--backend", cli), ("argument backends=", arguments)):
        for op, name in (given or {}).items():
            if op not in OPS:
                raise ConfigError(f"{source}: unknown op {op!r}.{did_you_mean(op, OPS)} "
                                  f"Known ops: {', '.join(OPS)}.")
            choices[op] = Choice(name, source)
    return choices


def resolve_plan(*, platform: Optional[str] = None, backends: Mapping[str, str] | None = None,
            cli_backends: Mapping[str, str] | None = None, plan_path: Optional[str] = None,
            dtype: Optional[torch.dtype] = None, head_dim: Optional[int] = None,
            num_heads: Optional[int] = None, num_kv_heads: Optional[int] = None,
            block_size: Optional[int] = None, cuda_graphs: Optional[bool] = None,
            quant_schemes: tuple = (), tensor_parallel_size: int = 1,
            environ: Mapping[str, str] | None = None, settings: Optional[Settings] = None,
            catalog: Optional[Catalog] = None, workload: Optional[Workload] = None) -> Resolution:
    """Resolve the platform and a plan for every op.

    ``platform`` and ``backends`` are the Python arguments (highest precedence),
    ``cli_backends`` and ``plan_path`` come from the command line. ``catalog``: the
    plugins already loaded from the same settings (the engine needs them before it knows
    the model's shape), so that discovery runs once per load; ``settings`` likewise.
    ``quant_schemes``: the checkpoint's quantized layouts (``Checkpoint.quant_schemes``),
    which the quantized GEMMs' ``supports()`` read.
    ``workload``: the model's shapes, on which candidates are timed where BASEBOARD_TUNE
    is on (without one, nothing is timed).
    """
    settings = settings or read_settings(environ)
    catalog = catalog or load_catalog(settings)
    plan_source = "--plan" if plan_path else "BASEBOARD_PLAN"
    plan_path = plan_path or settings["BASEBOARD_PLAN"]
    plan_file = read_plan_file(plan_path, plan_source) if plan_path else None
    if platform:
        requested, source = platform, "argument platform="
    elif settings["BASEBOARD_PLATFORM"]:
        requested, source = settings["BASEBOARD_PLATFORM"], "BASEBOARD_PLATFORM"
    elif plan_file:
        requested, source = plan_file.get("platform"), f"plan file {plan_path}"
    else:
        requested, source = None, ""
    chosen = choose_platform(catalog, requested, source)
    chosen.platform = chosen.platform.configure(settings)
    planned = (plan_file or {}).get("platform")
    if planned is not None and planned != chosen.platform.name:
        raise ConfigError(f"plan file {plan_path} was written for platform {planned!r} (its key "
                          f"'platform'), but this run is on {chosen.platform.name!r} "
                          f"({chosen.why}). Replay it on {planned!r}, or write a plan here with "
                          f"`baseboard info --save-plan FILE`.")
    if cuda_graphs is None:
        cuda_graphs = settings["BASEBOARD_CUDA_GRAPHS"] and chosen.platform.supports_cuda_graphs
    ctx = SelectionContext(platform=chosen.platform,
                           dtype=dtype or chosen.platform.default_dtype(),
                           head_dim=head_dim, num_heads=num_heads, num_kv_heads=num_kv_heads,
                           block_size=block_size or chosen.platform.kv_block_size,
                           cuda_graphs=cuda_graphs, quant_schemes=tuple(quant_schemes),
                           tensor_parallel_size=tensor_parallel_size,
                           fuse=settings["BASEBOARD_FUSE"])
    choices = explicit_choices(settings, backends, cli_backends, plan_file, plan_path or "")
    tuner = None
    if workload is not None and tuning_on(settings["BASEBOARD_TUNE"],
                                          chosen.platform.device_type):
        tuner = make_tuner(chosen.platform, workload, ctx.dtype, ctx.cuda_graphs)
    plan = select_plan(catalog.registry, ctx, choices, tuner)
    return Resolution(settings, catalog, chosen, ctx, plan)
