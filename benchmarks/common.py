"""Helpers shared by the benchmark scripts: the machine record and the git commit of the checkout."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def git_commit() -> str:
    """Short hash of the checkout, with ``+dirty`` when tracked files differ from it; ``unknown`` outside git."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        commit, dirty = (
            git("rev-parse", "--short", "HEAD"),
            git("status", "--porcelain", "--untracked-files=no"),
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def machine() -> dict:
    """The machine a figure was measured on (call it after setting torch's thread count)."""
    import torch

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": importlib.metadata.version("torch"),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average_1min_at_start": os.getloadavg()[0],
    }


def describe_machine(record: dict) -> str:
    """ "PLATFORM, N CPUs, torch VERSION" of a ``machine()`` record, for a report's first lines."""
    return f"{record.get('platform')}, {record.get('cpu_count')} CPUs, torch {record.get('torch')}"


SCORE_HEADER = "| images | DSB | mAP | mF1 | F1@0.5 | missed | extra | merges | splits |"
SCORE_RULE = "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"


def score_cells(summary: dict) -> str:
    """A nucleaizer.metrics summary as the cells under SCORE_HEADER."""
    s = summary
    return (
        f"| {s['images']} | {s['dsb']:.3f} | {s['map']:.3f} | {s['mf1']:.3f} | {s['f1_50']:.3f} | {s['missed']} | "
        f"{s['extra']} | {s['merges']} | {s['splits']} |"
    )


def _plain(value):
    """JSON for numpy scalars and arrays, paths and anything else printable."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def write_report(name: str, report: dict, markdown: str) -> Path:
    """benchmarks/results/NAME.json (the figures) and NAME.md (their table); returns the markdown's path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2, default=_plain) + "\n")
    path = RESULTS / f"{name}.md"
    path.write_text(markdown if markdown.endswith("\n") else markdown + "\n")
    return path
