"""Configuration, data and timing shared by the speed measurements (benchmarks/speed.py)."""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any

import numpy as np

from nucleaizer.config_files import CONF_DIR

ROOT = Path(__file__).resolve().parent.parent

DATA = ROOT.parent / "shared" / "data" / "dsb2018_train"
DEMO_REPORT = Path("runs/demo/report.json")
FLUORESCENCE, TISSUE, BRIGHTFIELD = (
    "gray_darkbg_fluorescence",
    "colour_brightbg_HE_like",
    "gray_brightbg_brightfield",
)


# --- configuration and data ---------------------------------------------------------------------------------
def compose(profile: str, overrides: list[str] | tuple[str, ...] = ()):
    """The project's train configuration with ``profile=PROFILE`` and further Hydra overrides."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return hydra_compose(config_name="train", overrides=[f"profile={profile}", *overrides])


def container(node) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(node, resolve=True)


def size_rule(cfg):
    from nucleaizer.size import SizeRule

    return SizeRule.from_config(container(cfg.size), ignore=("diameter_px",))


def trainer_settings(cfg, device: str) -> dict:
    """Lightning settings of the profile, on one device, without progress bars (num_workers kept)."""
    settings = container(cfg.trainer)
    settings.update(
        accelerator="gpu" if device == "cuda" else "cpu",
        devices=1,
        num_nodes=1,
        strategy="auto",
        enable_progress_bar=False,
    )
    return settings


def pick_images(data: Path, per_group: dict[str, int]) -> dict:
    """Image spec: the first ``per_group[group]`` ids of each manifest group, in id order (deterministic)."""
    with open(data / "manifest.csv") as handle:
        rows = sorted(csv.DictReader(handle), key=lambda row: row["id"])
    names = [
        name
        for group, count in per_group.items()
        for name in [row["id"] for row in rows if row["group"] == group][:count]
    ]
    return {"data": str(data), "names": names}


def procedural_images(styles: list[str], size: int, diameter_px: float = 20) -> dict:
    """Image spec: procedural images of ``nucleaizer.simulate`` (one per style, seeds 0, 1, ...)."""
    return {"procedural": {"styles": list(styles), "size": int(size), "diameter_px": float(diameter_px)}}


def load_images(spec: dict) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, image uint8 (H, W, 3), labels int (H, W)) of an image spec (pick_images / procedural_images)."""
    from nucleaizer import io, simulate

    if "procedural" in spec:
        p = spec["procedural"]
        return [
            (f"{style}_{i}", *simulate.sample(style, p["size"], p["diameter_px"], seed=i))
            for i, style in enumerate(p["styles"])
        ]
    data = Path(spec["data"])
    return [
        (
            name,
            io.read_image(data / "images" / f"{name}.png"),
            io.read_labels(data / "labels" / f"{name}.png"),
        )
        for name in spec["names"]
    ]


def describe_images(spec: dict, images: list[tuple[str, np.ndarray, np.ndarray]]) -> str:
    pixels = sum(image.shape[0] * image.shape[1] for _, image, _ in images) / 1e6
    if "procedural" in spec:
        p = spec["procedural"]
        return (
            f"{len(images)} procedural image(s) ({', '.join(p['styles'])}; {p['size']} px, "
            f"nuclei {p['diameter_px']:g} px), {pixels:.2f} MP"
        )
    return f"{len(images)} dsb2018_train image(s), {pixels:.2f} MP"


def synchronize(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def step_timer(device: str):
    """A Lightning callback that records the time at the start of training and at the end of every batch."""
    from pytorch_lightning.callbacks import Callback

    class StepTimer(Callback):
        def __init__(self) -> None:
            self.marks: list[float] = []

        def _mark(self) -> None:
            synchronize(device)
            self.marks.append(time.perf_counter())

        def on_train_start(self, trainer, pl_module) -> None:
            self._mark()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self._mark()

        def rate(self, warmup: int) -> dict:
            """Steps per second over the steps after the first ``warmup`` ones (data loading included)."""
            seconds = np.diff(self.marks)
            timed = seconds[warmup:]
            if timed.size == 0:
                raise RuntimeError(
                    f"only {seconds.size} training steps ran; need more than {warmup} warm-up steps"
                )
            return {
                "steps_per_s": float(timed.size / timed.sum()),
                "timed_steps": int(timed.size),
                "timed_seconds": round(float(timed.sum()), 3),
                "median_step_s": round(float(np.median(timed)), 3),
                "step_seconds": [round(float(s), 3) for s in seconds],
            }

    return StepTimer()
