"""nucleaizer.io images and labels: every format, every bad-input case, atomic writes; files made in tmp_path.

Folder layouts are in test_io_samples.py."""

from __future__ import annotations

import logging
import os

import cv2
import numpy as np
import pytest
import tifffile

from nucleaizer import io
from nucleaizer.errors import UserError
from tests.helpers.io_files import H, W, rgb8, small_labels, valid_bytes, write_cv2


def _gradient(dtype: np.dtype, low: float, high: float) -> np.ndarray:
    """(H, W) ramp from low to high: after a percentile stretch it must span most of 0..255."""
    return np.linspace(low, high, H * W).reshape(H, W).astype(dtype)


# ------------------------------------------------------------------------------ reading every format


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif"])
def test_rgb8_lossless_formats_round_trip_exactly(tmp_path, suffix):
    rgb = rgb8()
    if suffix == ".tif":
        tifffile.imwrite(tmp_path / "a.tif", rgb)
    else:
        write_cv2(tmp_path / f"a{suffix}", rgb[..., ::-1])
    image = io.read_image(tmp_path / f"a{suffix}")
    assert image.dtype == np.uint8 and image.shape == (H, W, 3)
    np.testing.assert_array_equal(image, rgb)  # channel order RGB, values untouched


def test_jpeg_is_read_as_rgb(tmp_path):
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[..., 0] = 200  # pure red survives JPEG well enough to check the channel order
    write_cv2(tmp_path / "a.jpg", rgb[..., ::-1])
    image = io.read_image(tmp_path / "a.jpg")
    assert image.shape == (H, W, 3) and image.dtype == np.uint8
    assert abs(int(image[..., 0].mean()) - 200) < 6 and image[..., 2].mean() < 6


@pytest.mark.parametrize("suffix", [".png", ".tif", ".jpeg", ".bmp"])
def test_grey8_becomes_three_equal_channels(tmp_path, suffix):
    grey = _gradient(np.uint8, 0, 255)
    if suffix == ".tif":
        tifffile.imwrite(tmp_path / "g.tif", grey)
    else:
        write_cv2(tmp_path / f"g{suffix}", grey)
    image = io.read_image(tmp_path / f"g{suffix}")
    assert image.shape == (H, W, 3)
    assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()
    tolerance = 4 if suffix == ".jpeg" else 0
    assert np.abs(image[..., 0].astype(int) - grey).max() <= tolerance


def test_rgba_png_drops_alpha(tmp_path):
    rgb = rgb8()
    alpha = np.full((H, W, 1), 7, np.uint8)  # a low alpha must not darken the pixels
    write_cv2(tmp_path / "a.png", np.concatenate([rgb[..., ::-1], alpha], axis=2))
    np.testing.assert_array_equal(io.read_image(tmp_path / "a.png"), rgb)


def test_rgba_tiff_drops_alpha(tmp_path):
    rgb = rgb8()
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
    write_cv2(tmp_path / "a.png", data)
    image = io.read_image(tmp_path / "a.png")
    assert image[0, 0, 0] == 255
    assert image[..., 0].astype(float).std() > 60  # the ramp keeps its contrast


def test_uint16_rgb_png_keeps_channel_order(tmp_path):
    rgb16 = np.zeros((H, W, 3), np.uint16)
    rgb16[..., 0] = _gradient(np.uint16, 0, 60000)
    write_cv2(tmp_path / "a.png", rgb16[..., ::-1])
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
    rgb = rgb8()
    tifffile.imwrite(
        tmp_path / "planar.tif", np.moveaxis(rgb, -1, 0), photometric="rgb", planarconfig="separate"
    )
    np.testing.assert_array_equal(io.read_image(tmp_path / "planar.tif"), rgb)


def test_to_rgb8_in_memory():
    assert io.to_rgb8(np.ones((H, W), bool)).max() == 255
    np.testing.assert_array_equal(io.to_rgb8(rgb8()), rgb8())
    _assert_stretched(io.to_rgb8(_gradient(np.uint16, 100, 200)), _gradient(np.uint16, 100, 200))
    with pytest.raises(ValueError):
        io.to_rgb8(np.zeros((H, W, 5), np.uint8))
    with pytest.raises(ValueError):
        io.to_rgb8(np.zeros((H,), np.uint8))


# ------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".bmp", ".tif"])
@pytest.mark.parametrize("damage", ["zero_byte", "truncated", "corrupt"])
def test_bad_file_raises_user_error_naming_it(tmp_path, suffix, damage):
    data = valid_bytes(suffix)
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


@pytest.mark.parametrize("suffix", [".png", ".tif", ".tiff"])
def test_labels_round_trip_as_uint16(tmp_path, suffix):
    labels = small_labels()
    labels[0, 0] = 60_000
    written = io.write_labels(tmp_path / f"l{suffix}", labels)
    assert written == tmp_path / f"l{suffix}"
    read = io.read_labels(written)
    assert read.dtype == np.int32
    np.testing.assert_array_equal(read, labels)
    raw = cv2.imread(str(written), cv2.IMREAD_UNCHANGED) if suffix == ".png" else tifffile.imread(written)
    assert raw.dtype == np.uint16


def test_labels_above_uint16_go_to_32bit_tiff(tmp_path, caplog):
    labels = small_labels()
    labels[0, 0] = 70_000
    written = io.write_labels(tmp_path / "big.tif", labels)
    assert tifffile.imread(written).dtype == np.uint32
    np.testing.assert_array_equal(io.read_labels(written), labels)
    with caplog.at_level(logging.WARNING, logger="nucleaizer.io"):
        from_png = io.write_labels(tmp_path / "big.png", labels)
    assert from_png == tmp_path / "big.tif" and "TIFF" in caplog.text
    np.testing.assert_array_equal(io.read_labels(from_png), labels)


def test_read_labels_accepts_uint8_and_rejects_bad_arrays(tmp_path):
    write_cv2(tmp_path / "u8.png", small_labels(dtype=np.uint8))
    np.testing.assert_array_equal(io.read_labels(tmp_path / "u8.png"), small_labels())
    tifffile.imwrite(tmp_path / "frac.tif", small_labels().astype(np.float32) + 0.5)
    with pytest.raises(UserError, match="frac.tif"):
        io.read_labels(tmp_path / "frac.tif")
    tifffile.imwrite(tmp_path / "neg.tif", -small_labels())
    with pytest.raises(UserError, match="neg.tif"):
        io.read_labels(tmp_path / "neg.tif")
    write_cv2(tmp_path / "colour.png", rgb8())
    with pytest.raises(UserError, match="colour.png"):
        io.read_labels(tmp_path / "colour.png")


def test_write_image_round_trips_and_is_atomic(tmp_path):
    rgb = rgb8()
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
