"""nucleaizer.io: every format, every bad-input case, folder layouts, atomic writes; files made in tmp_path."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from nucleaizer import io
from nucleaizer.errors import UserError

H, W = 24, 32


def _gradient(dtype: np.dtype, low: float, high: float) -> np.ndarray:
    """(H, W) ramp from low to high: after a percentile stretch it must span most of 0..255."""
    return np.linspace(low, high, H * W).reshape(H, W).astype(dtype)


def _rgb8(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def _write_cv2(path: Path, array: np.ndarray) -> Path:
    """Write with OpenCV directly (channels in BGR order), independent of io.write_image."""
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)
    return path


# ------------------------------------------------------------------------------ reading every format


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif"])
def test_rgb8_lossless_formats_round_trip_exactly(tmp_path, suffix):
    rgb = _rgb8()
    if suffix == ".tif":
        tifffile.imwrite(tmp_path / "a.tif", rgb)
    else:
        _write_cv2(tmp_path / f"a{suffix}", rgb[..., ::-1])
    image = io.read_image(tmp_path / f"a{suffix}")
    assert image.dtype == np.uint8 and image.shape == (H, W, 3)
    np.testing.assert_array_equal(image, rgb)  # channel order RGB, values untouched


def test_jpeg_is_read_as_rgb(tmp_path):
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[..., 0] = 200  # pure red survives JPEG well enough to check the channel order
    _write_cv2(tmp_path / "a.jpg", rgb[..., ::-1])
    image = io.read_image(tmp_path / "a.jpg")
    assert image.shape == (H, W, 3) and image.dtype == np.uint8
    assert abs(int(image[..., 0].mean()) - 200) < 6 and image[..., 2].mean() < 6


@pytest.mark.parametrize("suffix", [".png", ".tif", ".jpeg", ".bmp"])
def test_grey8_becomes_three_equal_channels(tmp_path, suffix):
    grey = _gradient(np.uint8, 0, 255)
    if suffix == ".tif":
        tifffile.imwrite(tmp_path / "g.tif", grey)
    else:
        _write_cv2(tmp_path / f"g{suffix}", grey)
    image = io.read_image(tmp_path / f"g{suffix}")
    assert image.shape == (H, W, 3)
    assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()
    tolerance = 4 if suffix == ".jpeg" else 0
    assert np.abs(image[..., 0].astype(int) - grey).max() <= tolerance


def test_rgba_png_drops_alpha(tmp_path):
    rgb = _rgb8()
    alpha = np.full((H, W, 1), 7, np.uint8)  # a low alpha must not darken the pixels
    _write_cv2(tmp_path / "a.png", np.concatenate([rgb[..., ::-1], alpha], axis=2))
    np.testing.assert_array_equal(io.read_image(tmp_path / "a.png"), rgb)


def test_rgba_tiff_drops_alpha(tmp_path):
    rgb = _rgb8()
    tifffile.imwrite(tmp_path / "a.tif", np.concatenate([rgb, np.zeros((H, W, 1), np.uint8)], axis=2))
    np.testing.assert_array_equal(io.read_image(tmp_path / "a.tif"), rgb)


def _assert_stretched(image: np.ndarray, reference: np.ndarray) -> None:
    """Uses the full 0..255 range (a cast would not) and keeps the order of intensities."""
    assert image.dtype == np.uint8 and image.shape == (H, W, 3)
    assert image.min() == 0 and image.max() == 255
    flat_ref = reference.ravel()
    flat_img = image[..., 0].astype(int).ravel()
    order = np.argsort(flat_ref, kind="stable")
    assert (np.diff(flat_img[order]) >= 0).all()


@pytest.mark.parametrize(
    ("dtype", "low", "high"),
    [
        (np.uint16, 1000, 1400),
        (np.uint32, 5, 90_000),
        (np.int32, -50, 300),
        (np.float32, 0.001, 0.004),
        (np.float64, -3.0, 7.5),
    ],
)
def test_deep_tiff_is_stretched_not_cast(tmp_path, dtype, low, high):
    data = _gradient(dtype, low, high)
    tifffile.imwrite(tmp_path / "deep.tif", data)
    _assert_stretched(io.read_image(tmp_path / "deep.tif"), data)


def test_uint16_png_is_stretched_between_percentiles(tmp_path):
    data = _gradient(np.uint16, 2000, 3000)
    data[0, 0] = 65535  # one hot pixel above the 99.8th percentile must not squash the rest
    _write_cv2(tmp_path / "a.png", data)
    image = io.read_image(tmp_path / "a.png")
    assert image[0, 0, 0] == 255
    assert image[..., 0].astype(float).std() > 60  # the ramp keeps its contrast


def test_uint16_rgb_png_keeps_channel_order(tmp_path):
    rgb16 = np.zeros((H, W, 3), np.uint16)
    rgb16[..., 0] = _gradient(np.uint16, 0, 60000)
    _write_cv2(tmp_path / "a.png", rgb16[..., ::-1])
    image = io.read_image(tmp_path / "a.png")
    assert image[..., 0].max() == 255 and image[..., 2].max() == 0


def test_float_with_nan_is_finite_and_stretched(tmp_path):
    data = _gradient(np.float32, 0, 1)
    data[0, :4] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", data)
    image = io.read_image(tmp_path / "nan.tif")
    assert image.max() == 255 and (image[0, :4] == 0).all()


def test_constant_deep_image_is_black_not_an_error(tmp_path):
    tifffile.imwrite(tmp_path / "c.tif", np.full((H, W), 1234, np.uint16))
    assert (io.read_image(tmp_path / "c.tif") == 0).all()


def test_multipage_tiff_gives_first_plane_with_a_warning(tmp_path, caplog):
    stack = np.stack(
        [_gradient(np.uint8, 0, 255), np.zeros((H, W), np.uint8), np.full((H, W), 255, np.uint8)]
    )
    path = tmp_path / "stack.tif"
    with tifffile.TiffWriter(path) as writer:
        for plane in stack:
            writer.write(plane)
    with caplog.at_level(logging.WARNING, logger="nucleaizer.io"):
        image = io.read_image(path)
    np.testing.assert_array_equal(image[..., 0], stack[0])
    assert "3 images" in caplog.text and "stack.tif" in caplog.text


def test_single_page_stack_tiff_gives_first_plane_with_a_warning(tmp_path, caplog):
    stack = np.stack([_gradient(np.uint8, 0, 255), np.zeros((H, W), np.uint8)] * 3)  # (6, H, W)
    tifffile.imwrite(tmp_path / "zstack.tif", stack, photometric="minisblack", metadata=None, contiguous=True)
    with caplog.at_level(logging.WARNING, logger="nucleaizer.io"):
        image = io.read_image(tmp_path / "zstack.tif")
    np.testing.assert_array_equal(image[..., 0], stack[0])
    assert "zstack.tif" in caplog.text


RNG = np.random.default_rng(7)
# name -> (array written, tifffile.imwrite arguments, the (H, W[, c]) array read_image must start from)
TIFF_LAYOUTS = {
    "YX": (RNG.integers(0, 255, (H, W), np.uint8), {}, lambda a: a),
    "YXS-rgb": (RNG.integers(0, 255, (H, W, 3), np.uint8), {"photometric": "rgb"}, lambda a: a),
    "YXS-5-channels-last": (
        RNG.integers(0, 255, (H, W, 5), np.uint8),
        {"photometric": "minisblack", "planarconfig": "contig"},
        lambda a: a[..., 0],
    ),
    "SYX-planar-rgb": (
        RNG.integers(0, 255, (3, H, W), np.uint8),
        {"photometric": "rgb", "planarconfig": "separate"},
        lambda a: np.moveaxis(a, 0, -1),
    ),
    "ZYX": (RNG.integers(0, 255, (7, H, W), np.uint8), {"metadata": {"axes": "ZYX"}}, lambda a: a[0]),
    "CYX-3": (
        RNG.integers(0, 255, (3, H, W), np.uint8),
        {"metadata": {"axes": "CYX"}, "imagej": True},
        lambda a: np.moveaxis(a, 0, -1),
    ),
    "CYX-5": (
        RNG.integers(0, 255, (5, H, W), np.uint8),
        {"metadata": {"axes": "CYX"}, "imagej": True},
        lambda a: a[0],
    ),
    "TZCYX": (
        RNG.integers(0, 255, (2, 3, 4, H, W), np.uint8),
        {"metadata": {"axes": "TZCYX"}, "imagej": True},
        lambda a: np.moveaxis(a[0, 0], 0, -1),
    ),
}


@pytest.mark.parametrize("layout", TIFF_LAYOUTS)
def test_tiff_axes_come_from_the_file_metadata(tmp_path, layout):
    """The first plane of every layout, channels from the TIFF's own axes (a 256 x 256 x 5 file is not 256 x 5)."""
    data, arguments, expected = TIFF_LAYOUTS[layout]
    tifffile.imwrite(tmp_path / "a.tif", data, **arguments)
    np.testing.assert_array_equal(io.read_image(tmp_path / "a.tif"), io.to_rgb8(expected(data)))


def test_channel_first_rgb_tiff(tmp_path):
    rgb = _rgb8()
    tifffile.imwrite(
        tmp_path / "planar.tif", np.moveaxis(rgb, -1, 0), photometric="rgb", planarconfig="separate"
    )
    np.testing.assert_array_equal(io.read_image(tmp_path / "planar.tif"), rgb)


def test_to_rgb8_in_memory():
    assert io.to_rgb8(np.ones((H, W), bool)).max() == 255
    np.testing.assert_array_equal(io.to_rgb8(_rgb8()), _rgb8())
    _assert_stretched(io.to_rgb8(_gradient(np.uint16, 100, 200)), _gradient(np.uint16, 100, 200))
    with pytest.raises(ValueError):
        io.to_rgb8(np.zeros((H, W, 5), np.uint8))
    with pytest.raises(ValueError):
        io.to_rgb8(np.zeros((H,), np.uint8))


# ------------------------------------------------------------------------------------------ bad input


def _valid_bytes(suffix: str) -> bytes:
    if suffix == ".tif":
        from io import BytesIO

        buffer = BytesIO()
        tifffile.imwrite(buffer, _rgb8())
        return buffer.getvalue()
    ok, encoded = cv2.imencode(suffix, _rgb8())
    assert ok
    return encoded.tobytes()


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".bmp", ".tif"])
@pytest.mark.parametrize("damage", ["zero_byte", "truncated", "corrupt"])
def test_bad_file_raises_user_error_naming_it(tmp_path, suffix, damage):
    data = _valid_bytes(suffix)
    data = {"zero_byte": b"", "truncated": data[: len(data) // 2], "corrupt": b"not an image at all" * 20}[
        damage
    ]
    path = tmp_path / f"bad_{damage}{suffix}"
    path.write_bytes(data)
    with pytest.raises(UserError, match=f"bad_{damage}"):
        io.read_image(path)


def test_unsupported_suffix_and_missing_file(tmp_path):
    (tmp_path / "a.gif").write_bytes(b"GIF89a")
    with pytest.raises(UserError, match=r"a\.gif.*unsupported"):
        io.read_image(tmp_path / "a.gif")
    with pytest.raises(UserError, match="no such file"):
        io.read_image(tmp_path / "missing.png")
    with pytest.raises(UserError, match="unsupported"):
        io.read_labels(tmp_path / "a.jpg")


# ------------------------------------------------------------------------------------------ labels


def _labels(n: int = 3, dtype=np.int32) -> np.ndarray:
    labels = np.zeros((H, W), dtype)
    for k in range(n):
        labels[2 + 6 * k : 6 + 6 * k, 3 : 9 + k] = k + 1
    return labels


@pytest.mark.parametrize("suffix", [".png", ".tif", ".tiff"])
def test_labels_round_trip_as_uint16(tmp_path, suffix):
    labels = _labels()
    labels[0, 0] = 60_000
    written = io.write_labels(tmp_path / f"l{suffix}", labels)
    assert written == tmp_path / f"l{suffix}"
    read = io.read_labels(written)
    assert read.dtype == np.int32
    np.testing.assert_array_equal(read, labels)
    raw = cv2.imread(str(written), cv2.IMREAD_UNCHANGED) if suffix == ".png" else tifffile.imread(written)
    assert raw.dtype == np.uint16


def test_labels_above_uint16_go_to_32bit_tiff(tmp_path, caplog):
    labels = _labels()
    labels[0, 0] = 70_000
    written = io.write_labels(tmp_path / "big.tif", labels)
    assert tifffile.imread(written).dtype == np.uint32
    np.testing.assert_array_equal(io.read_labels(written), labels)
    with caplog.at_level(logging.WARNING, logger="nucleaizer.io"):
        from_png = io.write_labels(tmp_path / "big.png", labels)
    assert from_png == tmp_path / "big.tif" and "TIFF" in caplog.text
    np.testing.assert_array_equal(io.read_labels(from_png), labels)


def test_read_labels_accepts_uint8_and_rejects_bad_arrays(tmp_path):
    _write_cv2(tmp_path / "u8.png", _labels(dtype=np.uint8))
    np.testing.assert_array_equal(io.read_labels(tmp_path / "u8.png"), _labels())
    tifffile.imwrite(tmp_path / "frac.tif", _labels().astype(np.float32) + 0.5)
    with pytest.raises(UserError, match="frac.tif"):
        io.read_labels(tmp_path / "frac.tif")
    tifffile.imwrite(tmp_path / "neg.tif", -_labels())
    with pytest.raises(UserError, match="neg.tif"):
        io.read_labels(tmp_path / "neg.tif")
    _write_cv2(tmp_path / "colour.png", _rgb8())
    with pytest.raises(UserError, match="colour.png"):
        io.read_labels(tmp_path / "colour.png")


def test_write_image_round_trips_and_is_atomic(tmp_path):
    rgb = _rgb8()
    for suffix in (".png", ".tif", ".bmp"):
        written = io.write_image(tmp_path / "out" / f"img{suffix}", rgb)
        np.testing.assert_array_equal(io.read_image(written), rgb)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["img.bmp", "img.png", "img.tif"]
    with pytest.raises(ValueError):
        io.write_image(tmp_path / "x.png", rgb.astype(np.float32))


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "result.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), io.atomic_write(target) as temporary:
        temporary.write_text("half")
        raise RuntimeError("crash while writing")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["result.txt"]  # no temporary file left behind
    with io.atomic_write(target) as temporary:
        assert temporary.parent == tmp_path and temporary != target and temporary.suffix == ".txt"
        temporary.write_text("new")
        assert target.read_text() == "old"  # not visible before the block ends
    assert target.read_text() == "new"
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(target).st_mode & 0o777 == 0o666 & ~umask  # ordinary permissions, not mkstemp's 0600


# ------------------------------------------------------------------------------------------ folders


def _make_flat(root: Path, names: list[str], with_labels: list[str]) -> None:
    for name in names:
        io.write_image(root / "images" / f"{name}.png", _rgb8())
    for name in with_labels:
        io.write_labels(root / "labels" / f"{name}.png", _labels())


def test_flat_layout_matches_labels_by_stem(tmp_path):
    _make_flat(tmp_path, ["b", "a", "c"], ["a", "c"])
    io.write_image(tmp_path / "images" / "d.jpg", _rgb8())
    io.write_labels(tmp_path / "labels" / "d.tif", _labels())
    samples = io.list_samples(tmp_path)
    assert [s.name for s in samples] == ["a", "b", "c", "d"]
    assert [s.has_labels for s in samples] == [True, False, True, True]
    assert samples[3].labels_path.name == "d.tif"
    np.testing.assert_array_equal(samples[0].read_labels(), _labels())
    assert samples[1].read_labels() is None
    with pytest.raises(UserError, match="1 of 4 images have no labels"):
        io.list_samples(tmp_path, require_labels=True)


def test_plain_folder_of_images_and_ignored_files(tmp_path, caplog):
    io.write_image(tmp_path / "x.png", _rgb8())
    (tmp_path / "notes.txt").write_text("hello")
    with caplog.at_level(logging.WARNING, logger="nucleaizer.io"):
        samples = io.list_samples(tmp_path)
    assert [(s.name, s.has_labels) for s in samples] == [("x", False)]
    assert "notes.txt" in caplog.text


def test_dsb_layout_builds_one_id_per_mask(tmp_path):
    image = _rgb8()
    for sample_id in ("id2", "id1"):
        io.write_image(tmp_path / sample_id / "images" / f"{sample_id}.png", image)
    masks = [np.zeros((H, W), np.uint8) for _ in range(3)]
    masks[0][1:5, 1:5] = 255
    masks[1][10:15, 10:20] = 255
    masks[2][12:20, 18:25] = 255  # overlaps mask 1: the later mask wins there
    for k, mask in enumerate(masks):
        _write_cv2(tmp_path / "id1" / "masks" / f"m{k}.png", mask)
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
    io.write_image(tmp_path / "s" / "images" / "s.png", _rgb8())
    _write_cv2(tmp_path / "s" / "masks" / "a.png", np.full((H, W), 255, np.uint8))
    _write_cv2(tmp_path / "s" / "masks" / "b.png", np.full((H, W + 1), 255, np.uint8))
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
    io.write_image(tmp_path / "a.png", _rgb8())
    io.write_image(tmp_path / "a.tif", _rgb8())
    with pytest.raises(UserError, match="two files named 'a'"):
        io.list_samples(tmp_path)


def test_iter_samples_skips_bad_files_and_counts_them(tmp_path, caplog):
    _make_flat(tmp_path, ["a", "b", "c"], ["a", "b", "c"])
    (tmp_path / "images" / "b.png").write_bytes(b"")  # zero-byte image
    (tmp_path / "labels" / "c.png").write_bytes(_valid_bytes(".png")[:40])  # truncated labels
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
    io.write_image(tmp_path / "images" / "a.png", _rgb8())
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
