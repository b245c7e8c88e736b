"""The tokenizer a GGUF file's metadata describes, built by transformers' GGUF converter
from the metadata our reader already holds, and kept in the model cache (models/cache.py):
a second load reads tokenizer.json instead of converting again.

transformers' own route (``AutoTokenizer.from_pretrained(dir, gguf_file=...)``) parses the
file again, twice for a llama file (once with gguf's slow reader for the config), which
took seconds; the converter itself takes a fraction of one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ...core.errors import ModelError
from ...models import cache
from .reader import GgufFile

# the tokenizer_config entries that name a special token by its id in the vocabulary
SPECIAL_TOKENS = {"bos_token": "bos_token_id", "eos_token": "eos_token_id",
                  "unk_token": "unknown_token_id", "pad_token": "padding_token_id"}


def gguf_tokenizer(file: GgufFile) -> Any:
    """A transformers fast tokenizer (vocabulary, merges, special tokens, chat template)."""
    from transformers import PreTrainedTokenizerFast

    meta = file.metadata
    if "tokenizer.ggml.tokens" not in meta:
        raise ModelError(f"{file.path.name} has no tokenizer.ggml.tokens, so no tokenizer can "
                         f"be built from it. Pass token ids instead of text "
                         f"(skip_tokenizer_init=True).")
    described = {k: v for k, v in meta.items() if k.startswith("tokenizer.")}
    stored = cache.entry("tokenizer", __file__, [meta["general.architecture"], described])
    if (stored / "tokenizer.json").is_file():
        return PreTrainedTokenizerFast.from_pretrained(stored)
    tokenizer = _convert(file)
    _store(tokenizer, stored)
    return tokenizer


def _convert(file: GgufFile) -> Any:
    try:
        from transformers import PreTrainedTokenizerFast
        from transformers.integrations.gguf import GGUF_TOKENIZER_MAPPING, convert_gguf_tokenizer
    except ImportError as exc:
        raise ModelError(f"building the tokenizer of {file.path.name} needs transformers' GGUF "
                         f"converter (transformers.integrations.gguf, transformers 5), which "
                         f"this transformers lacks ({exc}). Upgrade transformers.") from None
    meta = file.metadata
    # {"tokenizer": {...}, "tokenizer_config": {...}}: metadata key "tokenizer.X" -> name
    groups = {group: {name: meta[f"tokenizer.{key}"] for key, name in renames.items()
                      if f"tokenizer.{key}" in meta}
              for group, renames in GGUF_TOKENIZER_MAPPING.items()}
    vocabulary, settings = groups["tokenizer"], groups["tokenizer_config"]
    if vocabulary.get("tokenizer_type") == "llama":
        # llama.cpp adds BOS for a sentencepiece vocabulary that does not say otherwise
        settings.setdefault("add_bos_token", True)
    tokens = vocabulary["tokens"]
    for name, key in SPECIAL_TOKENS.items():
        token_id = meta.get(f"tokenizer.ggml.{key}")
        if token_id is not None and not 0 <= token_id < len(tokens):
            raise ModelError(f"{file.path.name}: tokenizer.ggml.{key} is {token_id!r}, outside "
                             f"the vocabulary of {len(tokens)} tokens (ids 0..{len(tokens) - 1}).")
        settings[name] = tokens[token_id] if token_id is not None else None
    try:
        backend, extra = convert_gguf_tokenizer(meta["general.architecture"], vocabulary)
        return PreTrainedTokenizerFast(tokenizer_object=backend, **settings, **extra)
    except Exception as exc:  # the converters raise many types on vocabularies they reject
        raise ModelError(f"no tokenizer could be built from the metadata of {file.path} "
                         f"({type(exc).__name__}: {exc}).") from None


def _store(tokenizer: Any, directory: Path) -> None:
    """Save the tokenizer's files beside ``directory`` and rename them into place, so a
    reader finds all of them or none."""
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=directory.parent))
    except OSError:
        return  # an unwritable cache is not used
    try:
        tokenizer.save_pretrained(staging)
        os.rename(staging, directory)
    except OSError:  # another process stored it first
        shutil.rmtree(staging, ignore_errors=True)
