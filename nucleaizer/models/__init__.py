"""Models shipped inside the package, one bundle folder each (bundle.json, fp16 weights, MODEL.md).

``model=NAME`` (infer.py) and ``preseg.checkpoint=NAME`` (train.py) name them; a path to a bundle folder (or,
for the preseg, to a segmenter ``.pt``) works the same everywhere. An existing path wins over a shipped name.
"""

from __future__ import annotations

from pathlib import Path

from nucleaizer.errors import UserError

SHIPPED_DIR = Path(__file__).resolve().parent
DEFAULT_MODEL = "generalist"


def shipped_models() -> list[str]:
    """Names of the model bundles installed with the package."""
    return sorted(p.parent.name for p in SHIPPED_DIR.glob("*/bundle.json"))


def model_folder(value: str | Path) -> Path:
    """The bundle folder ``value`` names: an existing path as given, else a shipped model's folder."""
    path = Path(value).expanduser()
    if path.exists():
        return path
    if str(value) in shipped_models():
        return SHIPPED_DIR / str(value)
    shipped = ", ".join(shipped_models()) or "none installed"
    raise UserError(
        f"model {value} does not exist: it is neither a folder nor the name of a shipped model ({shipped}); "
        "give the model/ folder of a train.py run (runs/<target>/model) or a shipped model's name"
    )


def segmenter_file(value: str | Path) -> Path:
    """The segmenter ``.pt`` that ``value`` names: a ``.pt`` file itself, or the segmenter of a bundle folder
    (shipped or not)."""
    from nucleaizer.bundle import read_bundle

    path = model_folder(value)
    return path if path.is_file() else read_bundle(path).segmenter
