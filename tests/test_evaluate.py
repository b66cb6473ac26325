"""nucleaizer.evaluate: the command on folders written in tmp_path (subprocess), and its error handling."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from nucleaizer import io, metrics
from nucleaizer.evaluate import evaluate_folders, main
from tests.conftest import ROOT

REQUIRED_KEYS = {
    "dsb",
    "map",
    "mar",
    "mf1",
    "f1_50",
    "f1_70",
    "missed",
    "extra",
    "merges",
    "splits",
    "images",
}


def _labels(offset: int = 0) -> np.ndarray:
    labels = np.zeros((32, 40), np.int32)
    labels[2:12, 2 + offset : 12 + offset] = 1
    labels[16:30, 20:34] = 2
    return labels


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    """gt/labels/{a,b,c}.png; pred/{a (exact), b (shifted), d (no ground truth)}.png; c has no prediction."""
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    for name in "abc":
        io.write_labels(gt / "labels" / f"{name}.png", _labels())
    io.write_labels(pred / "a.png", _labels() * 3)  # other ids, same objects
    io.write_labels(pred / "b.tif", _labels(offset=2))
    io.write_labels(pred / "d.png", _labels())
    return pred, gt


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nucleaizer.evaluate", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_command_scores_writes_and_prints_summary(folders, tmp_path):
    pred, gt = folders
    result = _run(str(pred), str(gt), "--out", str(tmp_path / "eval"))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert REQUIRED_KEYS <= summary.keys()
    expected_b = metrics.score_image(_labels(), _labels(offset=2))
    assert summary["images"] == 3 and summary["missing_predictions"] == 1
    assert summary["dsb"] == pytest.approx((1.0 + expected_b["dsb"] + 0.0) / 3)
    assert summary["missed"] == expected_b["missed"] + 2  # both objects of c are missed
    assert "1 prediction(s) have no ground truth and are not scored: d" in result.stderr
    assert "1 ground-truth image(s) have no prediction and score as empty: c" in result.stderr
    assert json.loads((tmp_path / "eval" / "summary.json").read_text()) == summary
    with open(tmp_path / "eval" / "per_image.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["name"] for row in rows] == ["a", "b", "c"]
    assert [float(row["dsb"]) for row in rows] == pytest.approx([1.0, expected_b["dsb"], 0.0])
    assert [row["predicted"] for row in rows] == ["1", "1", "0"]


def test_command_bad_input_is_one_line_exit_2(tmp_path):
    result = _run(str(tmp_path), str(tmp_path / "missing_gt"))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and result.stderr.startswith("error:")
    assert "missing_gt does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def _main_error(capsys, *argv: str) -> str:
    assert main(list(argv)) == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_unreadable_prediction_names_the_file(folders, capsys):
    pred, gt = folders
    (pred / "a.png").write_bytes(b"")
    message = _main_error(capsys, str(pred), str(gt))
    assert message.startswith("error:") and "a.png" in message


def test_corrupt_prediction_gives_one_line_only(folders):
    pred, gt = folders
    (pred / "b.tif").unlink()
    (pred / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 50)
    result = _run(str(pred), str(gt))
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if not line.startswith("WARNING:")]
    assert len(lines) == 1 and lines[0].startswith("error:") and "b.png" in lines[0], result.stderr


def test_prediction_of_another_size_is_an_error(folders, capsys):
    pred, gt = folders
    io.write_labels(pred / "a.png", np.zeros((10, 10), np.int32))
    message = _main_error(capsys, str(pred), str(gt))
    assert "a.png" in message and "differs" in message


def test_output_inside_an_input_folder_is_refused(folders, capsys):
    pred, gt = folders
    message = _main_error(capsys, str(pred), str(gt), "--out", str(gt / "labels" / "eval"))
    assert "lies inside the ground-truth folder" in message
    assert not (gt / "labels" / "eval").exists()


def test_empty_ground_truth_folder_is_an_error(folders, tmp_path, capsys):
    pred, _ = folders
    (tmp_path / "empty").mkdir()
    assert "no images found" in _main_error(capsys, str(pred), str(tmp_path / "empty"))


def test_dsb_layout_ground_truth_and_size_bins(tmp_path):
    gt_labels = _labels()
    for object_id in (1, 2):
        mask_path = tmp_path / "gt" / "s1" / "masks" / f"m{object_id}.png"
        mask_path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(mask_path), ((gt_labels == object_id) * 255).astype(np.uint8))
    io.write_image(tmp_path / "gt" / "s1" / "images" / "s1.png", np.zeros((32, 40, 3), np.uint8))
    io.write_labels(tmp_path / "pred" / "labels" / "s1.png", _labels(offset=3))
    summary = evaluate_folders(tmp_path / "pred", tmp_path / "gt", size_bins_px=(12,))
    expected = metrics.score_image(gt_labels, _labels(offset=3), size_bins_px=(12,))
    assert summary["dsb"] == pytest.approx(expected["dsb"]) and summary["images"] == 1
    assert summary["missed_d0_12"] == expected["missed_d0_12"] and "missed_d12_inf" in summary


@pytest.mark.data
def test_real_labels_against_themselves_score_one(shared_data, tmp_path):
    sources = sorted((shared_data / "dsb2018_train" / "labels").iterdir())[:12]
    (tmp_path / "gt").mkdir()
    for path in sources:
        shutil.copy(path, tmp_path / "gt" / path.name)
    for path in sources[:3]:
        io.write_labels(tmp_path / "pred" / path.name, io.read_labels(path))
    summary = evaluate_folders(tmp_path / "pred", tmp_path / "gt")
    assert summary["images"] == 12 and summary["missing_predictions"] == 9
    assert summary["dsb"] == pytest.approx(3 / 12)
