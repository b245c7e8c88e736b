"""An on-disk cache of what a checkpoint's metadata converts to: its ModelConfig and its
tokenizer, so that loading the same model again skips transformers' config classes (about
half a second of imports on a 2-core CPU) and the GGUF tokenizer conversion.

An entry is found by a hash of the metadata it was converted from and of the code that
converted it (the source of the converting module and transformers' version), not by the
file's name, size or modification time: a hash of a multi-gigabyte file would cost seconds,
and the metadata is small and already in memory. A changed converter or input is a miss;
only successful conversions are stored. Entries live in $XDG_CACHE_HOME/baseboard
(~/.cache/baseboard); an unwritable cache is not used.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any, Optional


def cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "baseboard"


@lru_cache(maxsize=None)
def _code_version(module_file: str) -> str:
    source = hashlib.sha256(Path(module_file).read_bytes()).hexdigest()
    return f"{source}-transformers-{metadata.version('transformers')}"


def entry(kind: str, module_file: str, inputs: Any) -> Path:
    """The directory of the cache entry for ``inputs`` (anything JSON can write) converted
    by the module whose file is ``module_file``; it exists only once stored."""
    material = json.dumps([_code_version(module_file), inputs], sort_keys=True, default=list)
    return cache_root() / kind / hashlib.sha256(material.encode()).hexdigest()[:32]


def read_json(directory: Path) -> Optional[Any]:
    """The value stored in ``directory``, or None for a miss (or a damaged entry)."""
    try:
        return json.loads((directory / "value.json").read_text())
    except (OSError, ValueError):
        return None


def write_json(directory: Path, value: Any) -> None:
    """Store ``value``; written to a temporary file and renamed, so a reader never sees half
    of it. An unwritable cache directory is left alone."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=directory, delete=False) as f:
            json.dump(value, f)
        os.replace(f.name, directory / "value.json")
    except OSError:
        pass
