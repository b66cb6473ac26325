"""Weights & Biases glue: offline by default, nothing at all with ``logger=none``.

Offline runs are written to ``<run_dir>/wandb`` and can be uploaded later with ``wandb sync``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


class Tracker:
    """Logs the configuration, per-stage summaries and timings, and images of one pipeline run."""

    def __init__(
        self,
        run_dir: str | Path,
        name: str,
        mode: str = "offline",
        project: str = "nucleaizer",
        entity: str | None = None,
        config: dict | None = None,
    ):
        self.run = None
        if mode == "disabled":
            return
        import wandb

        os.environ.setdefault("WANDB_SILENT", "true")
        wandb_dir = Path(run_dir)
        wandb_dir.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=project,
            entity=entity,
            name=name,
            mode=mode,
            dir=str(wandb_dir),
            config=config,
            reinit="finish_previous",
        )
        log.info("tracking in Weights & Biases (%s): %s", mode, self.run.dir)

    @property
    def enabled(self) -> bool:
        return self.run is not None

    def log_stage(self, stage: str, summary: dict[str, Any], seconds: float) -> None:
        """Numbers of a stage's summary under ``<stage>/``, and its wall time."""
        if not self.enabled:
            return
        numbers = {f"{stage}/{k}": v for k, v in _flatten(summary).items() if isinstance(v, (int, float))}
        numbers[f"{stage}/seconds"] = seconds
        self.run.log(numbers)

    def log_images(self, key: str, images: dict[str, np.ndarray]) -> None:
        """Images (uint8 RGB arrays) under ``key``, captioned by their dictionary keys."""
        if not self.enabled or not images:
            return
        import wandb

        self.run.log({key: [wandb.Image(image, caption=caption) for caption, image in images.items()]})

    def log_table(self, key: str, rows: list[dict]) -> None:
        """A list of flat dictionaries (e.g. GA history) as a W&B table."""
        if not self.enabled or not rows:
            return
        import wandb

        columns = list(rows[0])
        self.run.log(
            {key: wandb.Table(columns=columns, data=[[row.get(c) for c in columns] for row in rows])}
        )

    def finish(self) -> None:
        if self.enabled:
            self.run.finish()
            self.run = None


def _flatten(data: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}/"))
        else:
            flat[name] = value
    return flat
