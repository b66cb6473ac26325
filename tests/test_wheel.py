"""The wheel alone runs nucleaizer: ``nucleaizer-infer`` and ``nucleaizer-train`` find their configuration and
the shipped model in the installed package, from a folder outside the checkout."""

import json
import os
import subprocess
import sys

import pytest

from nucleaizer import io, simulate
from tests.helpers.scripts import ROOT


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The wheel built from the checkout (as ``pip wheel`` builds it) installed into a folder of its own.

    Its dependencies come from the test environment; the environment's own (editable) nucleaizer is not on
    the path the console scripts run with, which the tests check.
    """
    work = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(work / "dist"), str(ROOT)],
        check=True,
        timeout=600,
    )
    (wheel,) = (work / "dist").glob("nucleaizer-*.whl")
    site = work / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
        check=True,
        timeout=600,
    )
    env = {**os.environ, "PYTHONPATH": str(site), "WANDB_MODE": "disabled"}
    elsewhere = work / "elsewhere"
    elsewhere.mkdir()
    return site, env, elsewhere


def run(installed, script: str, *args: str) -> subprocess.CompletedProcess:
    site, env, elsewhere = installed
    return subprocess.run(
        [sys.executable, str(site / "bin" / script), *args],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_the_installed_package_is_the_wheel_not_the_checkout(installed):
    site, env, elsewhere = installed
    where = subprocess.run(
        [sys.executable, "-c", "import nucleaizer.config_files as c; print(c.CONF_DIR)"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert where == str(site / "nucleaizer" / "conf")


def test_nucleaizer_infer_segments_with_the_shipped_model(installed, tmp_path):
    image, labels = simulate.sample("fluorescence", size=96, diameter_px=20, density=0.25, seed=0)
    io.write_image(tmp_path / "in" / "images" / "a.png", image)
    io.write_labels(tmp_path / "in" / "labels" / "a.png", labels)
    out = tmp_path / "out"
    result = run(
        installed,
        "nucleaizer-infer",
        f"input={tmp_path / 'in'}",
        f"output={out}",
        f"ground_truth={tmp_path / 'in' / 'labels'}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert io.read_labels(out / "labels" / "a.png").max() > 0
    assert json.loads((out / "evaluation" / "summary.json").read_text())["dsb"] > 0.3


def test_nucleaizer_train_composes_its_config_and_reports_mistakes_in_one_line(installed, tmp_path):
    composed = run(
        installed, "nucleaizer-train", "+target=new_experiment", f"target.images={tmp_path}", "--cfg", "job"
    )
    assert composed.returncode == 0, composed.stderr[-2000:]
    assert "checkpoint: generalist" in composed.stdout  # the CPU profile's preseg: the shipped model
    assert "name: maskrcnn_small" in composed.stdout
    mistake = run(installed, "nucleaizer-train", "+target=new_experiment", "segmenter.no_such_key=1")
    assert mistake.returncode == 2
    assert (
        mistake.stderr.strip().startswith("error: unknown config key")
        and "nucleaizer-train" in mistake.stderr
    )
