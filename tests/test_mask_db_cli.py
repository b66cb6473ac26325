"""python -m mask_db: build, info and compose on dataset folders in tmp_path; montage; one-line errors."""

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from mask_db.cli import main
from mask_db.montage import colour_labels, montage
from nucleaizer.simulate import random_labels

ROOT = Path(__file__).resolve().parent.parent


def write_dataset(folder, seed: int, count: int = 4, size: int = 128):
    (folder / "labels").mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        cv2.imwrite(
            str(folder / "labels" / f"img{i}.png"), random_labels((size, size), 20, 16, rng).astype(np.uint16)
        )
    return folder


def last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def test_build_info_compose_through_the_command_line(tmp_path, capsys):
    first, second = write_dataset(tmp_path / "set_a", 0), write_dataset(tmp_path / "set_b", 1)
    db = tmp_path / "nuclei.sqlite"
    assert main(["build", str(db), str(first), str(second)]) == 0
    built = last_json(capsys.readouterr().out)
    assert built["nuclei"] == built["nuclei_added"] > 0 and built["images_added"] == 8
    assert main(["build", str(db), str(first)]) == 0  # again: nothing new
    again = last_json(capsys.readouterr().out)
    assert again["images_skipped"] == 4 and again["nuclei_added"] == 0 and again["nuclei"] == built["nuclei"]

    # the command a user types, in its own process
    run = subprocess.run(
        [sys.executable, "-m", "mask_db", "info", str(db)], cwd=ROOT, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    info = last_json(run.stdout)
    assert info["nuclei"] == built["nuclei"] and set(info["datasets"]) == {"set_a", "set_b"}

    out = tmp_path / "masks"
    assert (
        main(
            [
                "compose",
                str(db),
                "--like",
                str(first),
                "--n",
                "3",
                "--size",
                "96",
                "--seed",
                "0",
                str(out),
                "--montage",
                str(tmp_path / "montage.png"),
            ]
        )
        == 0
    )
    result = last_json(capsys.readouterr().out)
    written = sorted(out.glob("*.png"))
    assert result["written"] == len(written) == 3
    masks = [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in written]
    assert all(m.dtype == np.uint16 and m.shape == (96, 96) and m.max() > 0 for m in masks)
    assert cv2.imread(str(tmp_path / "montage.png")).shape[2] == 3
    # deterministic: the same command writes the same masks
    assert (
        main(
            [
                "compose",
                str(db),
                "--like",
                str(first),
                "--n",
                "3",
                "--size",
                "96",
                "--seed",
                "0",
                str(tmp_path / "again"),
            ]
        )
        == 0
    )
    for path in written:
        np.testing.assert_array_equal(
            cv2.imread(str(tmp_path / "again" / path.name), cv2.IMREAD_UNCHANGED),
            cv2.imread(str(path), cv2.IMREAD_UNCHANGED),
        )


@pytest.mark.parametrize(
    "case", ["missing_folder", "no_labels", "missing_db", "empty_db", "not_labels", "output_inside_input"]
)
def test_user_errors_are_one_line_and_exit_2(tmp_path, capsys, case):
    dataset = write_dataset(tmp_path / "data", 0, count=1)
    db = tmp_path / "db.sqlite"
    if case == "missing_folder":
        argv = ["build", str(db), str(tmp_path / "nowhere")]
    elif case == "no_labels":
        (tmp_path / "empty").mkdir()
        argv = ["build", str(db), str(tmp_path / "empty")]
    elif case == "missing_db":
        argv = ["info", str(tmp_path / "none.sqlite")]
    elif case == "empty_db":
        (tmp_path / "blank").mkdir()
        cv2.imwrite(str(tmp_path / "blank" / "x.png"), np.zeros((32, 32), dtype=np.uint16))
        (tmp_path / "blank_set" / "labels").mkdir(parents=True)
        cv2.imwrite(str(tmp_path / "blank_set" / "labels" / "x.png"), np.zeros((32, 32), dtype=np.uint16))
        assert main(["build", str(db), str(tmp_path / "blank_set")]) == 0
        capsys.readouterr()
        argv = ["compose", str(db), "--like", str(dataset), str(tmp_path / "out")]
    elif case == "not_labels":
        cv2.imwrite(str(dataset / "labels" / "colour.png"), np.full((16, 16, 3), 9, dtype=np.uint8))
        argv = ["build", str(db), str(dataset)]
    else:
        argv = ["compose", str(db), "--like", str(dataset), str(dataset / "labels" / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error:"), err


def test_a_bad_option_value_is_one_line_and_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["compose", "db.sqlite", "--like", str(tmp_path), "--n", "two", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert stopped.value.code == 2 and len(err.splitlines()) == 1 and "--n" in err, err


def test_montage_shows_real_above_generated():
    rng = np.random.default_rng(0)
    real = [random_labels((64, 80), 8, 12, rng) for _ in range(3)]
    generated = [random_labels((64, 64), 8, 12, rng) for _ in range(5)]
    image = montage(real, generated, n=4, tile=64)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert image.shape[0] == 2 * 64 + 12 and image.shape[1] == 96 + 4 * 68 + 4
    colours = colour_labels(real[0])
    assert (colours[real[0] == 0] == 0).all()
    assert len(np.unique(colours[real[0] > 0].reshape(-1, 3), axis=0)) >= real[0].max()
    with pytest.raises(ValueError, match="at least one"):
        montage([], generated)
