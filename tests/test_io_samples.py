"""nucleaizer.io folder layouts: flat and DSB folders, labels matched by stem, bad files skipped and counted."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from nucleaizer import io
from nucleaizer.errors import UserError
from tests.helpers.io_files import H, W, rgb8, small_labels, valid_bytes, write_cv2


def _make_flat(root: Path, names: list[str], with_labels: list[str]) -> None:
    for name in names:
        io.write_image(root / "images" / f"{name}.png", rgb8())
    for name in with_labels:
        io.write_labels(root / "labels" / f"{name}.png", small_labels())


def test_flat_layout_matches_labels_by_stem(tmp_path):
    _make_flat(tmp_path, ["b", "a", "c"], ["a", "c"])
    io.write_image(tmp_path / "images" / "d.jpg", rgb8())
    io.write_labels(tmp_path / "labels" / "d.tif", small_labels())
    samples = io.list_samples(tmp_path)
    assert [s.name for s in samples] == ["a", "b", "c", "d"]
    assert [s.has_labels for s in samples] == [True, False, True, True]
    assert samples[3].labels_path.name == "d.tif"
    np.testing.assert_array_equal(samples[0].read_labels(), small_labels())
    assert samples[1].read_labels() is None
    with pytest.raises(UserError, match="1 of 4 images have no labels"):
        io.list_samples(tmp_path, require_labels=True)


def test_plain_folder_of_images_and_ignored_files(tmp_path, caplog):
    io.write_image(tmp_path / "x.png", rgb8())
    (tmp_path / "notes.txt").write_text("hello")
    with caplog.at_level(logging.WARNING, logger="nucleaizer.io"):
        samples = io.list_samples(tmp_path)
    assert [(s.name, s.has_labels) for s in samples] == [("x", False)]
    assert "notes.txt" in caplog.text


def test_dsb_layout_builds_one_id_per_mask(tmp_path):
    image = rgb8()
    for sample_id in ("id2", "id1"):
        io.write_image(tmp_path / sample_id / "images" / f"{sample_id}.png", image)
    masks = [np.zeros((H, W), np.uint8) for _ in range(3)]
    masks[0][1:5, 1:5] = 255
    masks[1][10:15, 10:20] = 255
    masks[2][12:20, 18:25] = 255  # overlaps mask 1: the later mask wins there
    for k, mask in enumerate(masks):
        write_cv2(tmp_path / "id1" / "masks" / f"m{k}.png", mask)
    samples = io.list_samples(tmp_path)
    assert [s.name for s in samples] == ["id1", "id2"]
    assert samples[1].mask_paths is None and samples[1].read_labels() is None
    labels = samples[0].read_labels()
    assert labels.dtype == np.int32 and labels.shape == (H, W)
    expected = np.zeros((H, W), np.int32)
    for k, mask in enumerate(masks):
        expected[mask > 0] = k + 1
    np.testing.assert_array_equal(labels, expected)
    with pytest.raises(UserError, match="id2"):
        io.list_samples(tmp_path, require_labels=True)


def test_dsb_masks_of_different_sizes_raise(tmp_path):
    io.write_image(tmp_path / "s" / "images" / "s.png", rgb8())
    write_cv2(tmp_path / "s" / "masks" / "a.png", np.full((H, W), 255, np.uint8))
    write_cv2(tmp_path / "s" / "masks" / "b.png", np.full((H, W + 1), 255, np.uint8))
    with pytest.raises(UserError, match=r"b\.png"):
        io.list_samples(tmp_path)[0].read_labels()


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(UserError, match="no such folder"):
        io.list_samples(tmp_path / "nope")
    with pytest.raises(UserError, match="no images found"):
        io.list_samples(tmp_path)
    (tmp_path / "images").mkdir()
    with pytest.raises(UserError, match="no images found"):
        io.list_samples(tmp_path)


def test_two_files_with_one_stem_raise(tmp_path):
    io.write_image(tmp_path / "a.png", rgb8())
    io.write_image(tmp_path / "a.tif", rgb8())
    with pytest.raises(UserError, match="two files named 'a'"):
        io.list_samples(tmp_path)


def test_iter_samples_skips_bad_files_and_counts_them(tmp_path, caplog):
    _make_flat(tmp_path, ["a", "b", "c"], ["a", "b", "c"])
    (tmp_path / "images" / "b.png").write_bytes(b"")  # zero-byte image
    (tmp_path / "labels" / "c.png").write_bytes(valid_bytes(".png")[:40])  # truncated labels
    samples = io.list_samples(tmp_path)
    with caplog.at_level(logging.WARNING, logger="nucleaizer.io"):
        read = list(io.iter_samples(samples))
    assert [s.name for s, _, _ in read] == ["a"]
    assert read[0][1].shape == (H, W, 3) and read[0][2].shape == (H, W)
    assert "skipped 2 of 3 samples" in caplog.text and "b.png" in caplog.text
    with pytest.raises(UserError, match=r"b\.png"):
        list(io.iter_samples(samples, on_bad_file="fail"))
    with pytest.raises(UserError, match="on_bad_file"):
        list(io.iter_samples(samples, on_bad_file="ignore"))


def test_labels_of_another_size_raise_even_when_skipping(tmp_path):
    io.write_image(tmp_path / "images" / "a.png", rgb8())
    io.write_labels(tmp_path / "labels" / "a.png", np.zeros((H + 2, W), np.int32))
    with pytest.raises(UserError, match=r"labels.a\.png.*differs from image"):
        list(io.iter_samples(io.list_samples(tmp_path)))


@pytest.mark.data
def test_real_dsb_folder_lists_and_reads(shared_data):
    samples = io.list_samples(shared_data / "dsb2018_train", require_labels=True)
    assert len(samples) == 664
    sample, image, labels = next(io.iter_samples(samples[:1], on_bad_file="fail"))
    assert image.dtype == np.uint8 and image.shape[2] == 3 and labels.shape == image.shape[:2]
    assert labels.max() > 0
