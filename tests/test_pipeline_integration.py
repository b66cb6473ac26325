"""The real pipeline end to end on the tiny profile: every stage, the model bundle infer.py loads, and a run
killed in the middle of a training stage that resumes to exactly the result of an uninterrupted one."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nucleaizer import io

ROOT = Path(__file__).resolve().parent.parent
# One torch thread: with threads waiting on each other, a step can take 10x longer on a busy machine.
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
# GTstyle with a given diameter: every stage has work to do even though tiny models learn nothing
TINY = [
    "+target=demo",
    "profile=tiny",
    "style=gt",
    "compare=[none]",
    "size.diameter_px=30",
    "target.demo.n_source=6",
    "target.demo.n_target=4",
    "target.demo.image_size=96",
]


def train(run_dir: Path, *extra: str, logger: str = "none", **popen) -> subprocess.Popen:
    # W&B offline is real and local: the environment's WANDB_MODE (CI disables W&B) must not override it
    env = {**ENV, "WANDB_MODE": "offline"}
    return subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *TINY, f"logger={logger}", f"run_dir={run_dir}", *extra],
        cwd=run_dir.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        **popen,
    )


def finish(process: subprocess.Popen) -> str:
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-3000:]
    return output


def digest(path: Path) -> str:
    """Hash of a label image's bytes, or of the tensors in a model file (which also records wall times)."""
    if path.suffix != ".pt":
        return hashlib.sha256(path.read_bytes()).hexdigest()
    sha = hashlib.sha256()

    def walk(value, key=""):
        if isinstance(value, torch.Tensor):
            sha.update(key.encode() + value.detach().cpu().contiguous().numpy().tobytes())
        elif isinstance(value, dict):
            for name in sorted(value, key=str):
                walk(value[name], f"{key}/{name}")

    walk(torch.load(path, map_location="cpu", weights_only=False))
    return sha.hexdigest()


def results(run_dir: Path) -> dict[str, str]:
    """Hashes of what the run produced: model weights, style model, synthetic masks, target predictions."""
    files = [
        run_dir / "model" / "segmenter.pt",
        run_dir / "stylegen" / "style_0.pt",
        *sorted((run_dir / "masks" / "style_0").glob("*.png")),
        *sorted((run_dir / "segmenter").glob("*/labels/*.png")),
    ]
    return {str(f.relative_to(run_dir)): digest(f) for f in files}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    finish(train(run_dir, logger="wandb"))
    return run_dir


def test_every_stage_writes_its_results_and_the_report(finished_run):
    report = json.loads((finished_run / "report.json").read_text())
    assert list(report["stages"]) == [
        "preseg",
        "sizes",
        "styles",
        "stylegen",
        "masks",
        "synthetic",
        "segmenter",
        "postprocess",
        "bundle",
    ]
    assert set(report["scores"]) == {"gtstyle", "nostyle"}
    assert 0 <= report["scores"]["gtstyle"]["dsb"] <= 1
    assert 0 <= report["preseg_scores"]["dsb"] <= 1  # the start's own score on the target, before fine-tuning
    assert (finished_run / "report.md").read_text().startswith("# Run report: demo")
    assert "| pre-segmentation (before fine-tuning) |" in (finished_run / "report.md").read_text()
    n_synthetic = len(list((finished_run / "synthetic" / "images").glob("*.png")))
    assert n_synthetic == report["stages"]["synthetic"]["summary"]["pairs"] > 0
    bundle = json.loads((finished_run / "model" / "bundle.json").read_text())
    assert (finished_run / "model" / bundle["postprocess"]["ensemble"]).is_file()
    assert not (finished_run / ".partial").exists() or not any((finished_run / ".partial").iterdir())


def test_weights_and_biases_offline_run_has_montages_samples_overlays_and_ga_curve(finished_run):
    runs = list((finished_run / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    media = runs[0] / "files" / "media"
    logged = {str(p.relative_to(media)).rsplit("_", 2)[0] for p in media.rglob("*.*")}
    assert {
        "images/styles/montages",
        "images/stylegen/style_0",
        "images/masks/montages",
        "images/synthetic/style_0",
        "images/segmenter/gt_overlays",
        "images/segmenter/none_overlays",
        "images/postprocess/ga_curve",
        "table/postprocess/ga_history",
    } <= logged


def test_second_run_skips_everything(finished_run):
    output = finish(train(finished_run))
    assert output.count("done already") == 9
    assert "running:" not in output


def test_infer_segments_a_folder_with_the_bundle_from_a_new_process(finished_run, tmp_path):
    target = finished_run / "demo_data" / "target"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "infer.py"),
            f"model={finished_run / 'model'}",
            f"input={target}",
            f"output={tmp_path / 'out'}",
            "diameter=30",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env=ENV,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    names = sorted(s.name for s in io.list_samples(target))
    assert sorted(p.stem for p in (tmp_path / "out" / "labels").glob("*.png")) == names


def test_run_killed_during_training_resumes_to_the_same_result(finished_run, tmp_path):
    run_dir = tmp_path / "run"
    process = train(run_dir, start_new_session=True)
    partial = run_dir / ".partial" / "segmenter"
    deadline = time.time() + 600
    while not partial.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert partial.exists(), "the run ended before the segmenter stage started"
    time.sleep(3)  # inside the first fine-tuning
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (run_dir / "segmenter").exists()
    output = finish(train(run_dir))
    assert "segmenter    running" in output and "stylegen     done already" in output
    assert results(run_dir) == results(finished_run)
