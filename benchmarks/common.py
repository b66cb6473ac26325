"""Helpers shared by the benchmark scripts: the machine record and the git commit of the checkout."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> dict:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": importlib.metadata.version("torch"),
        "load_average_1min_at_start": os.getloadavg()[0],
    }


SCORE_HEADER = "| images | DSB | mAP | mF1 | F1@0.5 | missed | extra | merges | splits |"
SCORE_RULE = "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"


def score_cells(summary: dict) -> str:
    """A nucleaizer.metrics summary as the cells under SCORE_HEADER."""
    s = summary
    return (f"| {s['images']} | {s['dsb']:.3f} | {s['map']:.3f} | {s['mf1']:.3f} | {s['f1_50']:.3f} | {s['missed']} | "
            f"{s['extra']} | {s['merges']} | {s['splits']} |")
