"""The prepared GPU check (benchmarks/gpu_check.py) runs on the CPU, so it is known to work before a GPU is lent."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from nucleaizer.maskrcnn import load_segmenter

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_check_runs_on_cpu_and_brings_back_fp16_weights(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.gpu_check",
            "--device",
            "cpu",
            "--quick",
            "--work",
            str(tmp_path / "work"),
            "--save",
            str(tmp_path / "back"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "2", "WANDB_MODE": "disabled"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["environment"]["device"] == "cpu"
    assert set(report["train_steps_per_s_bf16"]) == {"resnet50_fpn", "lite0_fpn256"}
    assert all(v > 0 for v in report["train_steps_per_s_bf16"].values())
    assert report["inference"]["mp_per_s"] > 0
    saved = Path(report["saved"])
    state = torch.load(saved, weights_only=True)["state_dict"]
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
    model, arch = load_segmenter(saved)
    assert arch.backbone == "efficientnet_lite0" and arch.pretrained is False
