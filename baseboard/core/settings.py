"""Every BASEBOARD_* environment variable, declared once.

Variables are read when a plan is resolved (``read_settings``), never at import.
An unknown ``BASEBOARD_*`` name in the environment is an error that names the
closest known variable, because a typo there would otherwise be silently ignored.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from .errors import ConfigError, did_you_mean

PREFIX = "BASEBOARD_"


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected one of 1/0, true/false, yes/no, on/off")


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise ValueError("expected a number in (0, 1]")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError("expected a positive integer")
    return value


def _one_of(modes: tuple[str, ...]):
    """A parser that takes one of ``modes`` (any case, spaces around ignored)."""
    def parse(text: str) -> str:
        mode = text.strip().lower()
        if mode not in modes:
            raise ValueError(f"expected one of {', '.join(modes)}")
        return mode
    return parse


TUNE_MODES = ("auto", "off", "force")
ROCM_AITER_MODES = ("auto", "on", "off")
_tune_mode = _one_of(TUNE_MODES)
_rocm_aiter_mode = _one_of(ROCM_AITER_MODES)


@dataclass(frozen=True)
class Setting:
    name: str
    parse: Callable[[str], Any]
    default: Any
    doc: str
    type_name: str


SETTINGS: tuple[Setting, ...] = (
    Setting("BASEBOARD_PLATFORM", str, None,
            "Use this platform instead of detecting one (cuda, rocm, cpu, xpu or a plugin's). "
            "Fails if the platform is unknown or not present on this machine.", "str"),
    Setting("BASEBOARD_BACKEND", str, None,
            "Explicit implementation per op, as 'op=name,op=name' "
            "(for example 'gemm=torch,attention=triton').", "op=name list"),
    Setting("BASEBOARD_ATTENTION_BACKEND", str, None,
            "Shortcut for BASEBOARD_BACKEND='attention=NAME'.", "str"),
    Setting("BASEBOARD_GEMM_BACKEND", str, None,
            "Shortcut for BASEBOARD_BACKEND='gemm=NAME'.", "str"),
    Setting("BASEBOARD_SAMPLE_BACKEND", str, None,
            "Shortcut for BASEBOARD_BACKEND='sample=NAME'.", "str"),
    Setting("BASEBOARD_PLAN", str, None,
            "Path of a plan JSON file (written by 'baseboard info --save-plan'); "
            "every op in it is pinned as an explicit choice.", "path"),
    Setting("BASEBOARD_PLUGINS", _names, None,
            "Allow-list of plugin names to load (comma separated); others are skipped. "
            "The core plugin 'baseboard' is always loaded.", "name list"),
    Setting("BASEBOARD_DISABLE_PLUGINS", _names, (),
            "Plugin names not to load (comma separated).", "name list"),
    Setting("BASEBOARD_CUDA_GRAPHS", _bool, True,
            "Capture decode steps as CUDA graphs on platforms that support them.", "bool"),
    Setting("BASEBOARD_FUSE", _bool, True,
            "Run the fused forms implementations offer (Impl.fuses: rotary in the KV write, "
            "SiLU-and-mul in the down projection); 0 runs every op apart, for comparison.",
            "bool"),
    Setting("BASEBOARD_ASYNC_SCHEDULING", _bool, None,
            "Launch each step before reading the previous step's tokens back, so the host's "
            "work overlaps the device's; default: on for accelerators, off on the CPU.",
            "bool"),
    Setting("BASEBOARD_GRAPH_PARTS", _bool, True,
            "With CUDA graphs, run a step that mixes decodes and prefills (requests joining "
            "a running batch) as replays of the captured graphs, where timing at load found "
            "that faster than launching it from Python; 0 launches such steps eagerly.",
            "bool"),
    Setting("BASEBOARD_PDL", _bool, True,
            "Launch the Triton kernels with programmatic dependent launch on GPUs that have it "
            "(Hopper and later): each kernel starts while the one before it finishes.", "bool"),
    Setting("BASEBOARD_GPU_MEMORY_UTILIZATION", _fraction, 0.9,
            "Fraction of the accelerator's memory baseboard may use (weights, activations, KV cache).",
            "float"),
    Setting("BASEBOARD_NUM_THREADS", _positive_int, None,
            "Torch CPU threads; default: the number of cores this process may run on.", "int"),
    Setting("BASEBOARD_TUNE", _tune_mode, "auto",
            "Where several implementations of an op are accepted and none is chosen "
            "explicitly, time them on the model's shapes at load and use the fastest (times "
            "cached under $XDG_CACHE_HOME/baseboard/tuning): auto on accelerators only, off "
            "never, force on the CPU too.", "auto/off/force"),
    Setting("BASEBOARD_ROCM_AITER", _rocm_aiter_mode, "auto",
            "On the rocm platform, AMD's AITER kernels (package amd-aiter) above the Triton "
            "ones where the GPU and the shapes fit: auto uses them where aiter imports, on "
            "fails the load where it does not, off never uses them.", "auto/on/off"),
)

SETTINGS_BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}


class Settings:
    """The values of every setting, as read from one environment."""

    def __init__(self, values: dict[str, Any], explicit: frozenset[str]):
        self._values = values
        self.explicit = explicit  # names set in the environment

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def items(self):
        return self._values.items()

    def as_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self._values.items()}


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """Messages for every BASEBOARD_* name in ``environ`` that is not a declared setting."""
    return [
        f"unknown environment variable {name}.{did_you_mean(name, SETTINGS_BY_NAME)} "
        f"Known variables: {', '.join(sorted(SETTINGS_BY_NAME))}."
        for name in sorted(environ)
        if name.startswith(PREFIX) and name not in SETTINGS_BY_NAME
    ]


def read_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Parse every declared setting from ``environ`` (default ``os.environ``).

    Raises ConfigError for an unknown BASEBOARD_* variable or a value that does not parse.
    """
    environ = os.environ if environ is None else environ
    problems = unknown_variables(environ)
    if problems:
        raise ConfigError(problems[0] + " Unset it or correct its name.")
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        raw = environ.get(setting.name)
        if raw is None or raw == "":
            values[setting.name] = setting.default
            continue
        try:
            values[setting.name] = setting.parse(raw)
        except ValueError as exc:
            raise ConfigError(
                f"{setting.name}={raw!r} is not a valid {setting.type_name}: {exc}. "
                f"{setting.doc}") from None
    explicit = frozenset(s.name for s in SETTINGS if environ.get(s.name))
    return Settings(values, explicit)
