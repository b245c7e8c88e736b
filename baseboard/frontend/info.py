"""`baseboard info`: the environment (versions) plus an explanation of every decision."""

from __future__ import annotations

import importlib.metadata
import platform as host
import sys
from typing import Any


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


def collect(**resolve_args: Any) -> dict[str, Any]:
    """Everything `baseboard info` shows, as one JSON-ready dict."""
    from .resolve import resolve_plan

    resolution = resolve_plan(**resolve_args)
    chosen = resolution.platform
    catalog = resolution.catalog
    settings = resolution.settings
    return {
        "platform": chosen.platform.name,
        "platform_reason": chosen.why,
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


def render(info: dict[str, Any]) -> str:
    """The human-readable form of ``collect()``."""
    lines = [f"platform: {info['platform']} ({info['platform_reason']})", "", "platforms:"]
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
    for op, d in info["ops"].items():
        lines.append(f"  {op:<20} {d['selected']:<12} {d['why']}")
        for c in d["candidates"]:
            if c["name"] != d["selected"]:
                state = "ok (lower rank)" if c["accepted"] else f"rejected: {c['reason']}"
                lines.append(f"  {'':<20}   {c['name']:<10} ({c['plugin']}) {state}")
    lines += ["", "models: " + ", ".join(info["models"]),
              "quantization methods: " + (", ".join(info["quantization_methods"]) or "-"),
              "", "settings:"]
    for name, s in info["settings"].items():
        lines.append(f"  {name:<34} {s['value']!s:<10} {'(set)' if s['set'] else '(default)'}")
    lines += ["", "versions:"]
    lines += [f"  {k:<28} {v if v is not None else '-'}" for k, v in info["versions"].items()]
    return "\n".join(lines)

