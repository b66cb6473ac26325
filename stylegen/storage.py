"""A style model is one file: both networks' weights, their architecture, the tile size and how it was trained.

The file is a ``torch.save`` dict of tensors and plain values only, so it loads with
``torch.load(weights_only=True)`` and needs nothing but this package to rebuild the model.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from stylegen.model import Pix2Pix

FORMAT = "stylegen.pix2pix"
VERSION = 1


def save_style(path: str | Path, model: Pix2Pix) -> Path:
    """Write ``model`` (weights, hyper-parameters, training record) to ``path`` atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "hparams": dict(model.hparams),
        "state_dict": {key: value.detach().cpu() for key, value in model.state_dict().items()},
        "train_record": dict(getattr(model, "train_record", {}) or {}),
    }
    # write beside the target and rename, so a crash never leaves a half-written model under the final name
    temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.save(payload, temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def load_style(path: str | Path, device: str | torch.device = "cpu") -> Pix2Pix:
    """Rebuild a style model saved by ``save_style``, in eval mode on ``device``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"style model {path} does not exist; train the style first (stage stylegen)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or foreign file: name it instead of a pickle traceback
        raise ValueError(
            f"style model {path} cannot be read ({error}); delete it and train the style again"
        ) from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(
            f"{path} is not a stylegen style model (no '{FORMAT}' marker); give a file from save_style"
        )
    if payload.get("version") != VERSION:
        raise ValueError(
            f"style model {path} has format version {payload.get('version')}, this code reads {VERSION}"
        )
    model = Pix2Pix(**payload["hparams"])
    model.load_state_dict(payload["state_dict"])
    model.train_record = payload.get("train_record", {})
    return model.to(device).eval()
