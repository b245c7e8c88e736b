"""``baseboard quantize``: round-to-nearest quantization of a Hugging Face safetensors
directory into the layout of a quantization method, with its ``quantization_config``:
gptq and awq, or llm-compressor's compressed-tensors layouts (w4a16, w8a8-int8, fp8).

Every 2-D weight of the decoder layers (``model.layers.*``: attention and MLP
projections) is quantized; embeddings, norms, biases and the lm_head stay as they are,
as GPTQ and AWQ leave them. The weights are written shard by shard (one source shard in
memory at a time) under the source's file names; every other file (tokenizer, generation
config, ...) is copied.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from ..core.errors import ConfigError, ModelError
from . import awq, gptq
from .rtn import quantize_rtn

LAYER_PREFIX = "model.layers."
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")


@dataclass(frozen=True)
class QuantizeOptions:
    """What the command line asked for; None: the method's default."""

    method: str
    bits: Optional[int] = None
    group_size: Optional[int] = None
    sym: Optional[bool] = None


class GptqWriter:
    """GPTQ layout, checkpoint_format "gptq" (zero points stored as zero - 1)."""

    def __init__(self, options: QuantizeOptions):
        self.bits = 4 if options.bits is None else options.bits
        if self.bits not in gptq.BITS:
            raise ConfigError(f"--bits {self.bits} is not supported by --method gptq; "
                              f"supported: {', '.join(map(str, gptq.BITS))}.")
        self.group_size = 128 if options.group_size is None else options.group_size
        if not (self.group_size == -1 or self.group_size > 0):
            raise ConfigError(f"--group-size {self.group_size} is not supported; use -1 (one "
                              f"group per output row) or a positive size such as 128.")
        self.sym = True if options.sym is None else options.sym

    def quantization_config(self) -> dict:
        return {"quant_method": "gptq", "bits": self.bits, "group_size": self.group_size,
                "desc_act": False, "sym": self.sym, "checkpoint_format": "gptq"}

    def layer(self, name: str, weight: torch.Tensor) -> dict[str, torch.Tensor]:
        size = group_size_for(name, weight.shape, self.group_size)
        q = quantize_rtn(weight, self.bits, size, self.sym)
        return gptq.pack(q.codes, q.scales, q.zeros, q.g_idx, self.bits)


class AwqWriter:
    """AWQ's GEMM layout: 4-bit, asymmetric (zero_point: true)."""

    def __init__(self, options: QuantizeOptions):
        if options.bits not in (None, awq.BITS):
            raise ConfigError(f"--bits {options.bits} is not supported by --method awq; "
                              f"supported: 4.")
        if options.sym:
            raise ConfigError("--sym is not supported by --method awq: AWQ's GEMM layout "
                              "stores a zero point per group (zero_point: true). Leave it "
                              "out, or use --method gptq --sym.")
        self.group_size = 128 if options.group_size is None else options.group_size
        if self.group_size <= 0:
            raise ConfigError(f"--group-size {self.group_size} is not supported by --method "
                              f"awq; use a positive size such as 128.")

    def quantization_config(self) -> dict:
        return {"quant_method": "awq", "bits": awq.BITS, "group_size": self.group_size,
                "zero_point": True, "version": "gemm"}

    def layer(self, name: str, weight: torch.Tensor) -> dict[str, torch.Tensor]:
        size = group_size_for(name, weight.shape, self.group_size)
        q = quantize_rtn(weight, awq.BITS, size, False)
        return awq.pack(q.codes, q.scales, q.zeros)


class CompressedTensorsWriter:
    """llm-compressor's layouts (quant_method "compressed-tensors"), written by that
    method's own packer: w4a16 (pack-quantized, groups or per-channel, sym or asym),
    w8a8-int8 (int8 per-channel weights, dynamic per-token activations) and fp8 (FP8_DYNAMIC:
    float8_e4m3fn per-channel weights, dynamic per-token activations)."""

    def __init__(self, options: QuantizeOptions):
        self.scheme = options.method
        bits = 4 if self.scheme == "w4a16" else 8
        if options.bits not in (None, bits):
            raise ConfigError(f"--bits {options.bits} is not supported by --method "
                              f"{self.scheme}; it writes {bits}-bit weights.")
        if self.scheme == "w4a16":
            self.group_size = 128 if options.group_size is None else options.group_size
            if not (self.group_size == -1 or self.group_size > 0):
                raise ConfigError(f"--group-size {self.group_size} is not supported; use -1 "
                                  f"(one scale per output row) or a positive size such as 128.")
            self.sym = True if options.sym is None else options.sym
            return
        if options.group_size not in (None, -1):
            raise ConfigError(f"--group-size is not supported by --method {self.scheme}: its "
                              f"weights have one scale per output row. Leave it out.")
        if options.sym is False:
            raise ConfigError(f"--no-sym is not supported by --method {self.scheme}: its "
                              f"weights are symmetric. Leave it out.")
        self.group_size, self.sym = -1, True

    def _group(self) -> Optional[int]:
        return None if self.group_size == -1 else self.group_size

    def quantization_config(self) -> dict:
        from .compressed_tensors.quantize import quantization_config

        return quantization_config(self.scheme, self._group(), self.sym)

    def layer(self, name: str, weight: torch.Tensor) -> dict[str, torch.Tensor]:
        from .compressed_tensors.quantize import quantize_weight

        group_size_for(name, weight.shape, self.group_size)
        return quantize_weight(weight, self.scheme, self._group(), self.sym)


WRITERS = {"gptq": GptqWriter, "awq": AwqWriter, "w4a16": CompressedTensorsWriter,
           "w8a8-int8": CompressedTensorsWriter, "fp8": CompressedTensorsWriter}


def group_size_for(name: str, shape: tuple[int, ...], group_size: int) -> int:
    """The group size of a [N, K] weight (-1: K); a ConfigError where it does not divide K."""
    k = shape[1]
    size = k if group_size == -1 else group_size
    if k % size:
        raise ConfigError(f"--group-size {group_size} does not divide the {k} inputs of "
                          f"{name!r}; pick a size that divides every layer's inputs, or -1.")
    return size


METHODS = tuple(WRITERS)


def writer_for(options: QuantizeOptions):
    """The writer of ``options.method``; an unknown method is a ConfigError listing them."""
    if options.method in WRITERS:
        return WRITERS[options.method](options)
    raise ConfigError(f"--method {options.method!r} is not a quantization method baseboard "
                      f"writes; choose one of {', '.join(METHODS)}.")


def is_quantized_layer(name: str, shape: tuple[int, ...]) -> bool:
    """A decoder layer's linear weight: 2-D, under model.layers."""
    return name.startswith(LAYER_PREFIX) and name.endswith(".weight") and len(shape) == 2


def quantize_checkpoint(src: Path, dst: Path, options: QuantizeOptions,
                        progress: bool = True) -> Path:
    """Write ``src`` (a Hugging Face safetensors directory) quantized to ``dst``, which must
    not exist or be empty. Returns ``dst``."""
    from safetensors import safe_open
    from safetensors.torch import save_file
    from tqdm import tqdm

    from ..models.loader import read_json
    from ..models.safetensors_loader import INDEX, read_headers, safetensors_files

    writer = writer_for(options)
    src, dst = Path(src).expanduser(), Path(dst).expanduser()
    if not (src / "config.json").is_file():
        raise ModelError(f"{str(src)!r} is not a Hugging Face model directory (no "
                         f"config.json).")
    config = read_json(src / "config.json")
    if config.get("quantization_config"):
        method = config["quantization_config"].get("quant_method")
        raise ModelError(f"{str(src)!r} is already quantized ({method}); quantize an "
                         f"unquantized checkpoint.")
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise ConfigError(f"destination {str(dst)!r} exists and is not an empty directory; "
                          f"give a new path.")
    files = safetensors_files(src)
    header = read_headers(files)
    layers = [n for n, (shape, _) in header.items() if is_quantized_layer(n, shape)]
    for name in layers:  # every layer checked before anything is written
        group_size_for(name, header[name][0], writer.group_size)
    dst.mkdir(parents=True, exist_ok=True)
    weight_map: dict[str, str] = {}
    bar = tqdm(total=len(layers), desc=f"quantizing to {options.method}", unit="layer",
               disable=not progress)
    with bar:
        for file in files:
            tensors: dict[str, torch.Tensor] = {}
            with safe_open(file, framework="pt") as f:
                for name in f.keys():
                    tensor = f.get_tensor(name)
                    if not is_quantized_layer(name, tuple(tensor.shape)):
                        tensors[name] = tensor
                        continue
                    module = name.removesuffix(".weight")
                    for part, packed in writer.layer(name, tensor).items():
                        tensors[f"{module}.{part}"] = packed
                    bar.set_postfix_str(module, refresh=False)
                    bar.update()
            save_file(tensors, dst / file.name, metadata={"format": "pt"})
            weight_map.update(dict.fromkeys(tensors, file.name))
    if (src / INDEX).is_file():
        size = sum((dst / f.name).stat().st_size for f in files)
        (dst / INDEX).write_text(json.dumps({"metadata": {"total_size": size},
                                             "weight_map": weight_map}, indent=2))
    config["quantization_config"] = writer.quantization_config()
    (dst / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    for path in src.iterdir():
        if path.is_file() and path.name != "config.json" and path.name not in WEIGHT_FILES \
                and path not in files:
            shutil.copy2(path, dst / path.name)
    return dst
