"""What a careless or unlucky user can do to infer.py, train.py and nucleaizer.evaluate: every case ends in one
clear line (exit 2) or a correct result, and no input file ever changes (checksums before and after)."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nucleaizer import io, simulate
from nucleaizer.bundle import write_bundle
from nucleaizer.cli import check_config
from nucleaizer.config_files import CONF_DIR
from nucleaizer.errors import UserError
from nucleaizer.evaluate import main as evaluate_main
from nucleaizer.output_folder import MARKER
from nucleaizer.pipeline import validate_config as validate_train
from tests.helpers.scripts import ROOT, run_script

UNWRITABLE = Path("/proc/nucleaizer-test/out")  # cannot be created, also for root


def checksums(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def one_line_error(result: subprocess.CompletedProcess, expected: str) -> None:
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and expected in last, result.stderr[-3000:]


@pytest.fixture
def experiment(tmp_path):
    """X/images + X/labels: two simulated images with their annotations."""
    folder = tmp_path / "X"
    for index in range(2):
        image, labels = simulate.sample("fluorescence", size=96, diameter_px=20, density=0.25, seed=index)
        io.write_image(folder / "images" / f"img{index}.png", image)
        io.write_labels(folder / "labels" / f"img{index}.png", labels)
    return folder


def test_output_holding_the_inputs_is_refused_and_ground_truth_kept(experiment):
    """The reported data loss: output=X with input=X/images and ground_truth=X/labels overwrote the labels."""
    before = checksums(experiment)
    for extra in ([f"ground_truth={experiment / 'labels'}"], []):
        result = run_script(
            "infer.py",
            "model=classical",
            f"input={experiment / 'images'}",
            f"output={experiment}",
            "diameter=20",
            *extra,
        )
        one_line_error(result, "contains the input folder")
    assert checksums(experiment) == before


def test_foreign_non_empty_output_folder_is_refused(experiment, tmp_path):
    foreign = tmp_path / "results"
    io.write_labels(foreign / "labels" / "img0.png", np.ones((4, 4), np.int32))
    before = checksums(foreign)
    result = run_script(
        "infer.py", "model=classical", f"input={experiment / 'images'}", f"output={foreign}", "diameter=20"
    )
    one_line_error(result, "already holds files that nucleaizer did not write")
    assert checksums(foreign) == before


def test_train_run_dir_may_not_be_an_input(experiment, capsys):
    with pytest.raises(SystemExit) as exit_info:
        check_config(
            "train",
            [
                "+target=new_experiment",
                f"target.images={experiment / 'images'}",
                f"run_dir={experiment / 'images'}",
                "logger=none",
            ],
            validate_train,
        )
    assert exit_info.value.code == 2
    assert "is the target.images" in capsys.readouterr().err


def test_train_datasets_as_a_plain_path_is_one_folder(experiment, tmp_path):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "train",
            [
                "+target=new_experiment",
                f"target.images={experiment / 'images'}",
                f"train.datasets={experiment}",
                f"run_dir={tmp_path / 'run'}",
            ],
        )
    validate_train(cfg)
    assert list(cfg.train.datasets) == [str(experiment)]


def test_train_without_source_data_is_refused_before_anything_runs(experiment, tmp_path):
    from hydra import compose, initialize_config_dir

    def config(*extra):
        overrides = ["+target=new_experiment", f"target.images={experiment / 'images'}"]
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose("train", [*overrides, f"run_dir={tmp_path / 'run'}", *extra])

    with pytest.raises(UserError, match=r"train.datasets=\[DIR"):
        validate_train(config())
    validate_train(config("stages=[preseg,sizes,styles,stylegen]"))  # the shipped preseg model is enough
    validate_train(config("stages=[masks]", f"masks.database={tmp_path / 'nuclei.sqlite'}"))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "case", ["existing-file", "unwritable", "nan-diameter", "inf-diameter", "bad-match-iou"]
)
def test_bad_output_and_values_end_in_one_line_and_write_nothing(experiment, tmp_path, case):
    (tmp_path / "a_file").write_text("keep me")
    output = {"existing-file": tmp_path / "a_file", "unwritable": UNWRITABLE}.get(case, tmp_path / "out")
    extra = {
        "nan-diameter": ["diameter=nan"],
        "inf-diameter": ["diameter=inf"],
        "bad-match-iou": ["match_iou=1.5"],
    }.get(case, [])
    expected = {
        "existing-file": "is an existing file",
        "unwritable": "cannot be written",
        "nan-diameter": "diameter",
        "inf-diameter": "diameter",
        "bad-match-iou": "match_iou",
    }[case]
    before = checksums(experiment)
    result = run_script(
        "infer.py", "model=classical", f"input={experiment / 'images'}", f"output={output}", *extra
    )
    one_line_error(result, expected)
    assert checksums(experiment) == before
    assert (tmp_path / "a_file").read_text() == "keep me"
    assert not (tmp_path / "out").exists()


def test_an_error_found_later_removes_the_output_folder_it_made(tmp_path):
    (tmp_path / "empty").mkdir()
    result = run_script(
        "infer.py", "model=classical", f"input={tmp_path / 'empty'}", f"output={tmp_path / 'o'}"
    )
    one_line_error(result, "no images found")
    assert not (tmp_path / "o").exists()


def test_non_numeric_bundle_value_is_one_line(experiment, tmp_path):
    (tmp_path / "seg.pt").write_bytes(b"x")
    bundle = write_bundle(tmp_path / "model", tmp_path / "seg.pt")
    content = json.loads(bundle.read_text())
    content["size"]["max_scale"] = "four"
    bundle.write_text(json.dumps(content))
    result = run_script(
        "infer.py",
        f"model={tmp_path / 'model'}",
        f"input={experiment / 'images'}",
        f"output={tmp_path / 'o'}",
    )
    one_line_error(result, "'size.max_scale' must be a number")


def test_evaluate_on_an_unwritable_out_is_one_line(experiment, capsys):
    code = evaluate_main([str(experiment / "labels"), str(experiment / "labels"), "--out", str(UNWRITABLE)])
    assert code == 2
    assert "cannot be written" in capsys.readouterr().err


def test_a_rerun_scores_exactly_the_images_of_this_run(experiment, tmp_path):
    """An output folder holding an earlier run's labels of other images: only this run's images are scored."""
    out = tmp_path / "out"
    first = run_script(
        "infer.py", "model=classical", f"input={experiment / 'images'}", f"output={out}", "diameter=20"
    )
    assert first.returncode == 0, first.stderr[-2000:]
    single = tmp_path / "single"
    io.write_image(single / "img0.png", io.read_image(experiment / "images" / "img0.png"))
    again = run_script(
        "infer.py",
        "model=classical",
        f"input={single}",
        f"output={out}",
        "diameter=20",
        f"ground_truth={experiment / 'labels'}",
    )
    assert again.returncode == 0, again.stderr[-2000:]
    summary = json.loads((out / "evaluation" / "summary.json").read_text())
    assert summary["images"] == 1 and summary["missing_predictions"] == 0
    assert list(pd.read_csv(out / "images.csv")["image"]) == ["img0"]
    assert set(pd.read_csv(out / "nuclei.csv")["image"]) == {"img0"}


def test_ground_truth_of_another_size_fails_before_segmenting(experiment, tmp_path):
    io.write_labels(tmp_path / "gt" / "img0.png", np.zeros((50, 50), np.int32))
    result = run_script(
        "infer.py",
        "model=classical",
        f"input={experiment / 'images'}",
        f"output={tmp_path / 'o'}",
        "diameter=20",
        f"ground_truth={tmp_path / 'gt'}",
    )
    one_line_error(result, "differs from its image")
    assert not (tmp_path / "o" / "labels").exists()


def test_killed_infer_resumes_without_losing_or_duplicating(tmp_path):
    """kill -9 in the middle of a folder, then the same command: every image complete, once."""
    images = tmp_path / "images"
    for index in range(12):
        image, _ = simulate.sample("fluorescence", size=256, diameter_px=20, density=0.3, seed=index)
        io.write_image(images / f"img{index:02d}.png", image)
    out = tmp_path / "out"
    args = [
        sys.executable,
        str(ROOT / "infer.py"),
        "model=classical",
        f"input={images}",
        f"output={out}",
        "diameter=20",
    ]
    process = subprocess.Popen(
        args,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 240
    while time.time() < deadline and len(list((out / ".parts").glob("*.json"))) < 3:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = len(list((out / ".parts").glob("*.json")))
    assert 3 <= finished < 12, "the kill should land in the middle of the folder"
    result = subprocess.run(
        args,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"{finished} of 12 images were finished by an earlier run" in result.stdout + result.stderr
    table = pd.read_csv(out / "images.csv")
    assert sorted(table["image"]) == [f"img{i:02d}" for i in range(12)]
    nuclei = pd.read_csv(out / "nuclei.csv")
    assert len(nuclei) == table["nuclei"].sum() and not nuclei.duplicated(["image", "id"]).any()
    assert len(list((out / "labels").iterdir())) == 12 and len(list((out / "overlays").iterdir())) == 12
    assert not list(out.rglob(".*.tmp*"))
    assert (out / MARKER).is_file()


def test_an_unreadable_image_is_reported_once(experiment, tmp_path):
    images = tmp_path / "images"
    io.write_image(images / "good.png", io.read_image(experiment / "images" / "img0.png"))
    (images / "broken.png").write_bytes(b"\x89PNG not really")
    result = run_script("infer.py", "model=classical", f"input={images}", f"output={tmp_path / 'o'}")
    assert result.returncode == 0, result.stderr[-2000:]
    output = result.stdout + result.stderr
    assert output.count("skipped sample broken") == 1
    assert list(pd.read_csv(tmp_path / "o" / "images.csv")["image"]) == ["good"]


def test_evaluate_leaves_no_empty_folder_when_scoring_fails(experiment, tmp_path, capsys):
    io.write_labels(tmp_path / "pred" / "img0.png", np.zeros((50, 50), np.int32))
    code = evaluate_main(
        [str(tmp_path / "pred"), str(experiment / "labels"), "--out", str(tmp_path / "eval")]
    )
    assert code == 2 and "differs from its ground truth" in capsys.readouterr().err
    assert not (tmp_path / "eval").exists()
