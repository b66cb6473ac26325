"""The project's scripts (infer.py, train.py, benchmarks/...) run in a fresh process, as a user runs them."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def run_script(script: str, *args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    """``python ROOT/script args...`` in the checkout, W&B off; stdout and stderr captured as text."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "disabled", **env}
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=environment,
        timeout=timeout,
    )
