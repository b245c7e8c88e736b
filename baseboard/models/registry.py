"""Architecture name -> model class, through the models the plugins registered."""

from __future__ import annotations

from ..core.errors import ModelError, did_you_mean
from ..core.registry import load_object


def model_class(architecture: str, catalog) -> type:
    """The class registered (hook ``baseboard_models``) for ``architecture``; a ModelError
    naming the supported architectures if none is."""
    entry = catalog.models.get(architecture)
    if entry is None:
        supported = ", ".join(sorted(catalog.models)) or "none (no plugin registers models)"
        hint = did_you_mean(architecture, catalog.models)
        raise ModelError(
            f"architecture {architecture!r} is not supported.{hint} Supported architectures: "
            f"{supported}. A plugin adds one through the baseboard_models hook.")
    loader, plugin = entry
    try:
        return load_object(loader)
    except (ImportError, AttributeError) as exc:
        raise ModelError(f"the model class {loader!r} that plugin {plugin!r} registers for "
                         f"{architecture!r} cannot be imported: {exc!r}") from exc
