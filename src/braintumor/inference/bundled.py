"""The default model shipped inside the package (used when no model is given)."""

from __future__ import annotations

from pathlib import Path

from braintumor.errors import BrainTumorError

BUNDLED_DIR = Path(__file__).resolve().parent / "default_model"


def bundled_model_dir() -> Path | None:
    """The bundled model folder, or None when this installation carries none."""
    if (BUNDLED_DIR / "ensemble.json").is_file() or (BUNDLED_DIR / "card.json").is_file():
        return BUNDLED_DIR
    return None


def resolve_model_dir(model_dir: str | Path | None) -> Path:
    """``model_dir`` if given, else the bundled model; a clear error when neither exists."""
    if model_dir is not None:
        return Path(model_dir)
    found = bundled_model_dir()
    if found is None:
        raise BrainTumorError(
            "no model given and no bundled default model in this installation: pass --model DIR "
            "(a folder made by 'braintumor export')"
        )
    return found
