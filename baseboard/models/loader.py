"""Open a checkpoint: a Hugging Face directory (safetensors) or a single quantized file
(GGUF), read by the quantization method that claims it."""

from __future__ import annotations

import json
from pathlib import Path

from ..core.errors import ModelError
from ..quantization.method import find_method
from .checkpoint import Checkpoint
from .safetensors_loader import load_hf_directory


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path} is not readable JSON ({exc}).") from None


def _methods(catalog) -> list:
    return [method for method, _ in catalog.quant_methods.values()]


def _load_file(path: Path, catalog) -> Checkpoint:
    for method in _methods(catalog):
        if method.suffixes and path.name.endswith(method.suffixes):
            return method.load()(path, catalog)
    known = ", ".join(f"{m.name} ({' '.join(m.suffixes)})" for m in _methods(catalog)
                      if m.suffixes) or "none"
    raise ModelError(f"{path} is a file that no quantization method reads (single-file "
                     f"formats: {known}). Give a .gguf file or a Hugging Face directory with "
                     f"config.json and model.safetensors.")


def load_checkpoint(path: str | Path, catalog) -> Checkpoint:
    """Open ``path``: a directory with config.json and model.safetensors (or a sharded
    model.safetensors.index.json), or a file of a registered quantization method (.gguf).
    Raises ModelError naming the problem."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ModelError(f"model path {str(path)!r} does not exist. Give a directory with "
                         f"config.json and model.safetensors, or a .gguf file.")
    if path.is_file():
        return _load_file(path, catalog)
    config_path = path / "config.json"
    if not config_path.is_file():
        suffixes = tuple(s for m in _methods(catalog) for s in m.suffixes)
        single_files = sorted(p.name for p in path.iterdir()
                              if suffixes and p.name.endswith(suffixes) and p.is_file())
        if single_files:
            raise ModelError(f"directory {str(path)!r} has no config.json, but holds "
                             f"{', '.join(single_files)}: pass the file's path, e.g. "
                             f"{str(path / single_files[0])!r}.")
        raise ModelError(f"directory {str(path)!r} has no config.json; a Hugging Face model "
                         f"directory holds config.json and model.safetensors.")
    config = read_json(config_path)
    method = None
    quantization = config.get("quantization_config")
    if quantization is not None:
        if not isinstance(quantization, dict) or "quant_method" not in quantization:
            raise ModelError(f"{config_path}: quantization_config is {quantization!r}; it must "
                             f"be an object with a 'quant_method'.")
        method = find_method(catalog, quantization["quant_method"],
                             f"{config_path} (quantization_config.quant_method)")
        if not method.layers:  # the method builds the whole checkpoint itself
            return method.load()(path, catalog)
    generation = path / "generation_config.json"
    return load_hf_directory(path, config, read_json(generation) if generation.is_file() else None,
                             catalog, method)
