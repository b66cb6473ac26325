"""The generalist's training command: the fixed split, a resumable run, and the export to a shipped bundle."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nucleaizer import generalist, io, simulate
from nucleaizer.bundle import BUNDLE_FILE, read_bundle


def test_the_split_is_fixed_by_the_image_id():
    ids = [f"image_{i}" for i in range(3000)]
    parts = [generalist.dsb_split(i) for i in ids]
    assert parts == [generalist.dsb_split(i) for i in reversed(ids)][::-1]  # independent of order
    share = {part: parts.count(part) / len(ids) for part in ("test", "val", "train")}
    assert 0.18 < share["test"] < 0.22 and 0.02 < share["val"] < 0.045


@pytest.mark.data
def test_the_held_out_dsb_images_are_the_benchmarks_133():
    data = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
    if not (data / generalist.TRAINING_SET).is_dir():
        pytest.skip("../shared/data/dsb2018_train is absent")
    assert len(generalist.split_samples(data, "test")) == 133
    assert len(generalist.split_samples(data, "val")) == 20


def fake_training_set(root):
    """A dsb2018_train folder of simulated images, with training and validation images in the split."""
    names = [f"sim_{i}" for i in range(200)]
    chosen = [n for n in names if generalist.dsb_split(n) == "train"][:4]
    chosen += [n for n in names if generalist.dsb_split(n) == "val"][:1]
    for k, name in enumerate(chosen):
        image, labels = simulate.sample("fluorescence", 160, diameter_px=24, density=0.2, seed=k)
        io.write_image(root / generalist.TRAINING_SET / "images" / f"{name}.png", image)
        io.write_labels(root / generalist.TRAINING_SET / "labels" / f"{name}.png", labels)
    return root


def test_training_resumes_and_exports_a_checked_fp16_bundle(tmp_path):
    data = fake_training_set(tmp_path / "data")
    out = tmp_path / "run"
    generalist.train(data, out, max_minutes=0.1)
    first = generalist.training_record(out)
    # the same command with more time continues the run (the budget counts the time spent, which a loaded
    # machine may have pushed past the first budget)
    generalist.train(data, out, max_minutes=first["training_minutes"] + 0.2)
    second = generalist.training_record(out)
    assert second["steps"] > first["steps"] > 0
    assert second["training_minutes"] > first["training_minutes"]

    bundle_dir = generalist.export(out, tmp_path / "shipped", data)
    bundle = read_bundle(bundle_dir)
    stored = torch.load(bundle.segmenter, map_location="cpu", weights_only=True)
    assert {v.dtype for v in stored["state_dict"].values() if v.is_floating_point()} == {torch.float16}
    assert stored["arch"]["box_score_thresh"] in generalist.SCORE_THRESHOLDS
    assert json.loads((bundle_dir / BUNDLE_FILE).read_text())["size_estimation"] == "model"
    card = (bundle_dir / "MODEL.md").read_text()
    assert f"steps: {second['steps']:,}" in card and "score threshold" in card
    assert np.isfinite(second["best_val_dsb"])
    # the proposal counts at inference come from the config; the training's own are in the run's file
    kwargs, _, _ = generalist.training_config()
    assert {k: stored["arch"][k] for k in generalist.INFERENCE_KEYS} == {
        k: getattr(kwargs["arch"], k) for k in generalist.INFERENCE_KEYS
    }

    # exporting again (after the benchmark, with its scores) keeps the weights file byte for byte
    weights = bundle.segmenter.read_bytes()
    scores = tmp_path / "scores.md"
    scores.write_text("| set | DSB |\n| --- | --- |\n| held-out | 0.123 |\n")
    generalist.export(out, bundle_dir, data, scores=scores)
    assert bundle.segmenter.read_bytes() == weights
    assert "| held-out | 0.123 |" in (bundle_dir / "MODEL.md").read_text()
    read_bundle(bundle_dir)  # its checksum still holds
