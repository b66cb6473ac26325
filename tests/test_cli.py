"""The entry points: configuration composes for every target, and user mistakes end in one line."""

import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from nucleaizer.config_files import CONF_DIR

ROOT = Path(__file__).resolve().parent.parent
TARGETS = sorted(p.stem for p in (CONF_DIR / "target").glob("*.yaml"))


def run_script(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("profile", ["cpu", "gpu"])
def test_every_target_composes_with_every_profile(target, profile):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"+target={target}", f"profile={profile}", "target.images=/x"])
    assert cfg.target.name == target
    assert cfg.run_dir == f"runs/{target}"
    assert cfg.profile == profile
    # the profile switches the model sizes
    assert cfg.segmenter.name == {"cpu": "maskrcnn_small", "gpu": "maskrcnn_r50"}[profile]
    assert cfg.stylegen.name == {"cpu": "pix2pix_small", "gpu": "pix2pix"}[profile]


def test_command_line_group_choice_beats_profile():
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["+target=demo", "profile=cpu", "segmenter=maskrcnn_r50"])
    assert cfg.segmenter.name == "maskrcnn_r50"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], "no target experiment chosen"),
        (["+target=nosuchtarget"], "nosuchtarget"),
        (["+target=demo", "nosuchkey=1"], "unknown config key 'nosuchkey'"),
        (["+target=new_experiment"], "missing value for target.images"),
        (["+target=demo", "style=fancy"], "style=fancy is not one of"),
    ],
)
def test_train_mistakes_end_in_one_line(tmp_path, args, expected):
    result = run_script("train.py", *args, cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and expected in lines[0]


def test_full_disk_ends_in_one_line_that_says_what_to_do(tmp_path):
    script = (
        "import errno, sys\n"
        "from nucleaizer.cli import hydra_entry_point\n"
        "def task(cfg):\n"
        "    raise OSError(errno.ENOSPC, 'No space left on device', 'runs/x/.partial/masks/000.png')\n"
        f"sys.argv = ['train.py', '+target=demo', 'logger=none', 'run_dir={tmp_path}']\n"
        "hydra_entry_point('train', task)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: no space left on the device while writing runs/x/.partial/masks/000.png")
    assert "Traceback" not in result.stderr


def test_full_disk_during_infer_speaks_of_images_not_stages():
    from nucleaizer.cli import describe_disk_full

    message = describe_disk_full(OSError(28, "No space left on device", "out/labels/a.png"), "infer")
    assert "images already finished are kept" in message and "stage" not in message
