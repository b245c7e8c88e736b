"""compressed-tensors' ``quantization_config`` (what llm-compressor writes): its config
groups, their targets, the ignore list, and the layout baseboard loads each group into.

A config group names the modules it quantizes (``targets``: "Linear", a module name, or
"re:<regex>" matched from the start of the name) and how (``weights``,
``input_activations``, ``format``). A module in ``ignore`` stays dense.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Optional

from ...core.errors import ModelError
from ...core.quant import PER_CHANNEL, QuantScheme

PACKED = "pack-quantized"  # int codes packed into int32 words along K
INT = "int-quantized"  # int8 codes as they are
FLOAT = "float-quantized"  # float8_e4m3fn codes as they are
NAIVE = "naive-quantized"  # int-quantized or float-quantized, by the weights' type
FORMATS = (PACKED, INT, FLOAT, NAIVE)
# GPTQ's activation orders: "weight" (alias "static") changes only how GPTQ calibrates;
# "group" (alias "dynamic") stores each input's group in weight_g_idx
ACTORDERS = (None, "weight", "static", "group", "dynamic")
SUPPORTED = (
    "pack-quantized: 4-bit int weights (group or channel, symmetric or not, any actorder; "
    "gemm_w4a16) or 8-bit (gemm_w8a16 when symmetric, dense at load when not), 16-bit "
    "activations",
    "int-quantized: symmetric int8 weights per channel or per tensor with dynamic per-token "
    "int8 activations (gemm_w8a8_int8), or per group/channel with 16-bit activations "
    "(gemm_w8a16)",
    "float-quantized: float8 e4m3 weights per channel or per tensor with dynamic per-token "
    "float8 activations (gemm_w8a8_fp8), or in blocks with dynamic per-token-group float8 "
    "activations of the block's width (gemm_w8a8_fp8_block)",
)


def supported() -> str:
    return "; ".join(SUPPORTED)


@dataclass(frozen=True)
class QuantArgs:
    """compressed-tensors' QuantizationArgs, the fields baseboard reads."""

    num_bits: int
    type: str  # "int" | "float"
    symmetric: bool
    strategy: str  # "tensor" | "channel" | "group" | "block" | "token"
    group_size: Optional[int]
    block_structure: Optional[tuple[int, int]]
    dynamic: bool
    actorder: Optional[str]

    def describe(self) -> str:
        kind = f"{self.type}{self.num_bits}"
        detail = {"group": f"group {self.group_size}", "block": f"block {self.block_structure}"}
        how = detail.get(self.strategy, self.strategy)
        return (f"{kind} {how} {'symmetric' if self.symmetric else 'asymmetric'}"
                f"{' dynamic' if self.dynamic else ''}")


@dataclass(frozen=True)
class Layout:
    """How baseboard loads the layers of one config group.

    kind       "packed" (weight_packed), "int8" or "fp8" (weight stored as codes),
               "fp8_block" (float8 weight with [N/BN, K/BK] block scales)
    scheme     the QuantScheme its records carry; None: dequantized at load (dense "gemm")
    act_order  the layers store weight_g_idx, the group of each input
    """

    group: str
    format: str
    weights: QuantArgs
    activations: Optional[QuantArgs]
    kind: str
    scheme: Optional[QuantScheme]
    act_order: bool = False

    def describe(self) -> str:
        acts = self.activations.describe() if self.activations else "16-bit"
        return (f"config group {self.group!r} ({self.format}, weights {self.weights.describe()}, "
                f"activations {acts})")


@dataclass(frozen=True)
class CompressedTensorsConfig:
    """A parsed ``quantization_config``: each group's targets and layout, and the ignore
    list, in config order."""

    groups: tuple[tuple[tuple[str, ...], Layout], ...]
    ignore: tuple[str, ...]
    source: str

    def layout_for(self, module: str) -> Layout:
        """The layout of a module that holds quantized tensors; a ModelError when the config
        leaves it dense (ignored, or no group targets it)."""
        if matches(module, self.ignore):
            raise ModelError(
                f"module '{module}' holds quantized tensors, but {self.source} lists it in "
                f"'ignore' {list(self.ignore)}. The checkpoint does not match its "
                f"quantization_config.")
        found = [layout for targets, layout in self.groups if matches(module, targets)]
        if not found:
            targets = {layout.group: list(t) for t, layout in self.groups}
            raise ModelError(
                f"module '{module}' holds quantized tensors, but no config group of "
                f"{self.source} targets it (targets by group: {targets}). The checkpoint does "
                f"not match its quantization_config.")
        if len({(f.weights, f.activations, f.format) for f in found}) > 1:
            raise ModelError(
                f"module '{module}' is targeted by config groups "
                f"{[f.group for f in found]} with different schemes; compressed-tensors "
                f"allows one scheme per module.")
        return found[0]


def matches(module: str, patterns: tuple[str, ...]) -> bool:
    """compressed-tensors' matching: "re:<regex>" from the start of the name, else the exact
    module name, or "Linear" (every module holding a quantizable weight is a Linear in the
    models baseboard runs)."""
    for pattern in patterns:
        if pattern.startswith("re:"):
            if re.match(pattern[3:], module):
                return True
        elif pattern in (module, "Linear"):
            return True
    return False


def _args(value: Any, where: str) -> Optional[QuantArgs]:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ModelError(f"{where} is {value!r}; compressed-tensors writes an object with "
                         f"num_bits, type, symmetric and strategy.")
    block = value.get("block_structure")
    try:
        return QuantArgs(
            num_bits=int(value.get("num_bits", 8)), type=str(value.get("type", "int")),
            symmetric=bool(value.get("symmetric", True)),
            strategy=str(value.get("strategy") or "tensor"),
            group_size=value.get("group_size"),
            block_structure=tuple(int(b) for b in block) if block else None,
            dynamic=value.get("dynamic") is True, actorder=value.get("actorder"))
    except (TypeError, ValueError) as exc:
        raise ModelError(f"{where} is not a valid set of quantization arguments ({exc}): "
                         f"{value!r}") from None


def _refuse(group: str, format: str, weights: QuantArgs, activations: Optional[QuantArgs],
            source: str, why: str) -> ModelError:
    acts = activations.describe() if activations else "16-bit"
    return ModelError(
        f"{source}: config group {group!r} ({format}, weights {weights.describe()}, "
        f"activations {acts}) is not supported: {why}. Supported: {supported()}.")


def _layout(group: str, format: str, weights: QuantArgs, activations: Optional[QuantArgs],
            source: str) -> Layout:
    """The layout of one config group, or a ModelError saying why it is not supported."""
    def refuse(why: str) -> ModelError:
        return _refuse(group, format, weights, activations, source, why)

    if weights.actorder not in ACTORDERS:
        raise refuse(f"actorder {weights.actorder!r} is not one of "
                     f"{', '.join(map(str, ACTORDERS[1:]))}")
    act_order = weights.actorder in ("group", "dynamic")
    if act_order and not (format == PACKED and weights.strategy == "group"):
        raise refuse(f"actorder {weights.actorder!r} (weight_g_idx) is read for "
                     f"pack-quantized group layers only")
    if weights.dynamic:
        raise refuse("weights quantized at run time (dynamic) are not a stored layout")
    if weights.strategy == "group" and not (isinstance(weights.group_size, int)
                                            and weights.group_size > 0):
        raise refuse(f"group_size {weights.group_size!r} is not a positive integer")
    if format == NAIVE:
        format = FLOAT if weights.type == "float" else INT
    if activations is not None:
        if not (activations.dynamic and activations.symmetric):
            raise refuse("activations must be quantized dynamically (dynamic: true) and "
                         "symmetrically; static input scales are not read")
        if activations.type != weights.type or activations.num_bits != 8:
            raise refuse(f"activations of type {activations.type}{activations.num_bits} with "
                         f"{weights.type} weights")

    group_size = weights.group_size if weights.strategy == "group" else PER_CHANNEL
    if format == PACKED:
        if weights.type != "int" or weights.num_bits not in (4, 8):
            raise refuse("pack-quantized weights must be int4 or int8")
        if weights.strategy not in ("group", "channel") or activations is not None:
            raise refuse("pack-quantized layers must be group or channel quantized, with "
                         "16-bit activations")
        if weights.num_bits == 4:
            scheme = QuantScheme("gemm_w4a16", "uint4", group_size, weights.symmetric,
                                 act_order)
        else:  # gemm_w8a16 has no zero point: an asymmetric int8 layer is dense at load
            scheme = QuantScheme("gemm_w8a16", "int8", group_size, act_order=act_order) \
                if weights.symmetric else None
        return Layout(group, format, weights, activations, "packed", scheme, act_order)
    if format == INT:
        if weights.type != "int" or weights.num_bits != 8 or not weights.symmetric:
            raise refuse("int-quantized weights must be symmetric int8")
        if activations is None:
            if weights.strategy not in ("group", "channel", "tensor"):
                raise refuse(f"weight strategy {weights.strategy!r}")
            return Layout(group, format, weights, None, "int8",
                          QuantScheme("gemm_w8a16", "int8", group_size))
        if weights.strategy not in ("channel", "tensor") or activations.strategy != "token":
            raise refuse("W8A8 int8 needs channel or tensor weight scales and per-token "
                         "activations")
        return Layout(group, format, weights, activations, "int8",
                      QuantScheme("gemm_w8a8_int8", "int8", activation="int8"))
    if format == FLOAT:
        if weights.type != "float" or weights.num_bits != 8:
            raise refuse("float-quantized weights must be float8 (e4m3)")
        if activations is None:
            raise refuse("float8 weights with 16-bit activations have no op; quantize the "
                         "activations too (llm-compressor's FP8_DYNAMIC or FP8_BLOCK)")
        if weights.strategy == "block":
            block = weights.block_structure
            if not block or len(block) != 2 or activations.strategy != "group" \
                    or activations.group_size != block[1]:
                raise refuse("block weights need a block_structure [BN, BK] and activations "
                             "quantized per group of BK inputs")
            return Layout(group, format, weights, activations, "fp8_block",
                          QuantScheme("gemm_w8a8_fp8_block", "float8_e4m3fn",
                                      activation="float8_e4m3fn", block=block))
        if weights.strategy not in ("channel", "tensor") or activations.strategy != "token":
            raise refuse("FP8 W8A8 needs channel or tensor weight scales and per-token "
                         "activations")
        return Layout(group, format, weights, activations, "fp8",
                      QuantScheme("gemm_w8a8_fp8", "float8_e4m3fn",
                                  activation="float8_e4m3fn"))
    raise refuse(f"format {format!r} is not read; formats read: {', '.join(FORMATS)}")


def _is_class_name(target: str) -> bool:
    """"Linear", "Embedding": a capitalized name without dots (module names have them)."""
    return not target.startswith("re:") and "." not in target and target[:1].isupper()


def _patterns(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ModelError(f"{where} is {value!r}; it must be a list of module names, class names "
                     f"or 're:' patterns.")


def parse_config(config: dict, source: str) -> CompressedTensorsConfig:
    """Parse and validate a compressed-tensors ``quantization_config``; a ModelError names
    what is not supported and lists what is."""
    # Checkpoints of 2024 say "frozen" over the same stored layouts; the format and each
    # tensor's dtype (checked per layer) tell whether the codes were stored compressed
    status = config.get("quantization_status", "compressed")
    if status not in ("compressed", "frozen"):
        raise ModelError(f"{source}: quantization_status is {status!r}; baseboard reads "
                         f"checkpoints saved compressed (llm-compressor's "
                         f"save_pretrained(save_compressed=True)).")
    for key, what in (("sparsity_config", "sparse weights"),
                      ("transform_config", "weight transforms (SpinQuant, QuIP)"),
                      ("kv_cache_scheme", "a quantized KV cache")):
        if config.get(key):
            raise ModelError(f"{source}: {key} is set ({what}), which baseboard does not read. "
                             f"Supported: {supported()}.")
    groups = config.get("config_groups")
    if not isinstance(groups, dict) or not groups:
        raise ModelError(f"{source}: config_groups is {groups!r}; compressed-tensors writes an "
                         f"object of named groups, each with targets and weights.")
    parsed = []
    for name, group in groups.items():
        where = f"{source} config_groups.{name}"
        if not isinstance(group, dict):
            raise ModelError(f"{where} is {group!r}; it must be an object.")
        weights = _args(group.get("weights"), f"{where}.weights")
        if weights is None:
            raise ModelError(f"{where} has no weights; baseboard reads weight quantization. "
                             f"Supported: {supported()}.")
        if group.get("output_activations"):
            raise _refuse(name, str(group.get("format")), weights, None, source,
                          "output activations are quantized")
        format = group.get("format") or config.get("format")
        activations = _args(group.get("input_activations"), f"{where}.input_activations")
        targets = _patterns(group.get("targets"), f"{where}.targets")
        classes = [t for t in targets if _is_class_name(t) and t != "Linear"]
        if classes:
            raise ModelError(f"{where}.targets names module class(es) {classes}; baseboard "
                             f"reads the class 'Linear', module names and 're:' patterns "
                             f"(its models' quantized weights are all linear layers).")
        parsed.append((targets, _layout(name, str(format), weights, activations, source)))
    return CompressedTensorsConfig(tuple(parsed), _patterns(config.get("ignore"),
                                                            f"{source} ignore"), source)
