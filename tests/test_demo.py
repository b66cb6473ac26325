"""The demo experiment: annotated source, differently stained target, written once."""

import numpy as np
import pytest

from nucleaizer import io
from nucleaizer.demo import make_demo
from nucleaizer.errors import UserError


def test_demo_has_two_domains_of_different_look(tmp_path):
    folder = make_demo(tmp_path / "demo", n_source=3, n_target=2, image_size=96, seed=0)
    source = io.list_samples(folder / "source", require_labels=True)
    target = io.list_samples(folder / "target", require_labels=True)
    assert len(source) == 3 and len(target) == 2
    src_image, tgt_image = source[0].read_image(), target[0].read_image()
    assert src_image.shape == tgt_image.shape == (96, 96, 3)
    assert source[0].read_labels().max() > 0 and target[0].read_labels().max() > 0
    # fluorescence source is dark and grey; H&E-like target is bright and coloured
    assert src_image.mean() < 100 < tgt_image.mean()
    assert np.ptp(tgt_image.reshape(-1, 3).mean(axis=0)) > 20


def test_demo_is_written_once(tmp_path):
    folder = make_demo(tmp_path / "demo", n_source=2, n_target=2, image_size=64, seed=0)
    stamp = (folder / "source" / "images").stat().st_mtime_ns
    make_demo(folder, n_source=2, n_target=2, image_size=64, seed=0)
    assert (folder / "source" / "images").stat().st_mtime_ns == stamp


def test_demo_target_look_is_chosen(tmp_path):
    folder = make_demo(
        tmp_path / "demo", n_source=1, n_target=1, image_size=64, seed=0, target_style="two_colour"
    )
    he = make_demo(tmp_path / "he", n_source=1, n_target=1, image_size=64, seed=0)
    image = io.list_samples(folder / "target")[0].read_image()
    he_image = io.list_samples(he / "target")[0].read_image()
    # the two-colour target is green-and-magenta, the H&E-like one pink-and-purple: different mean colours
    assert np.abs(image.reshape(-1, 3).mean(axis=0) - he_image.reshape(-1, 3).mean(axis=0)).max() > 10
    with pytest.raises(UserError, match="fluorescence"):
        make_demo(tmp_path / "bad", target_style="fluorescence")


def test_demo_folder_of_other_settings_is_refused(tmp_path):
    folder = make_demo(tmp_path / "demo", n_source=1, n_target=1, image_size=64, seed=0)
    with pytest.raises(UserError, match="other settings"):
        make_demo(folder, n_source=1, n_target=1, image_size=64, seed=0, target_style="dim")


def test_demo_folder_of_an_earlier_version_is_kept(tmp_path):
    folder = make_demo(tmp_path / "demo", n_source=1, n_target=1, image_size=64, seed=0)
    # the marker of a demo written before the target look and diameters were recorded
    (folder / ".complete").write_text("n_source=1 n_target=1 image_size=64 seed=0\n")
    assert make_demo(folder, n_source=1, n_target=1, image_size=64, seed=0) == folder
    with pytest.raises(UserError, match="other settings"):
        make_demo(folder, n_source=1, n_target=1, image_size=64, seed=0, target_style="dim")
