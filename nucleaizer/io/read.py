"""Reading images and label images (PNG, TIFF with its first plane, JPEG, BMP; masks folders) with an error
that names the file; the physical pixel size a TIFF records."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import tifffile

from nucleaizer.errors import UserError
from nucleaizer.io.arrays import (
    IMAGE_SUFFIXES,
    LABEL_SUFFIXES,
    MAX_CHANNELS,
    STRETCH_PERCENTILES,
    TIFF_SUFFIXES,
    as_label_array,
    to_rgb8,
)

log = logging.getLogger(__name__)


def _check_readable(path: Path, suffixes: frozenset[str], what: str) -> None:
    if not path.is_file():
        raise UserError(f"{path}: no such file; check the path")
    if path.suffix.lower() not in suffixes:
        raise UserError(
            f"{path}: unsupported {what} format '{path.suffix}'; use one of {', '.join(sorted(suffixes))}"
        )
    if path.stat().st_size == 0:
        raise UserError(f"{path}: the file is empty (0 bytes); re-export or remove it")


def _first_plane_pages(series) -> tuple[list[int], str, list[str]]:
    """Which pages of a TIFF series make its first plane, the axes of what they give, and what was left out.

    The series' axes (tifffile's reading of the file's own metadata: ImageJ, OME, shaped) decide: index 0
    along every axis that is not Y, X or a channel axis (T, Z, ...); a channel axis C spread over pages is
    kept when it holds at most 4 channels.
    """
    page_axes = series.keyframe.axes
    lead_axes = series.axes[: len(series.axes) - len(page_axes)]
    lead_shape = series.shape[: len(lead_axes)]
    keep = [axis == "C" and n <= MAX_CHANNELS for axis, n in zip(lead_axes, lead_shape, strict=True)]
    dropped = [
        f"{n} along {axis}"
        for axis, n, kept in zip(lead_axes, lead_shape, keep, strict=True)
        if n > 1 and not kept
    ]
    pages = np.arange(int(np.prod(lead_shape, dtype=np.int64))).reshape(lead_shape)
    pages = pages[tuple(slice(None) if kept else 0 for kept in keep)].ravel()
    return [int(p) for p in pages], ("C" if any(keep) else "") + page_axes, dropped


def _to_yx_channels(array: np.ndarray, axes: str, path: Path) -> np.ndarray:
    """(H, W) or (H, W, c <= 4) from an array with named axes: other axes at index 0, channels last."""
    for axis in [a for a in axes if a not in "YXSC"]:
        array, axes = np.take(array, 0, axis=axes.index(axis)), axes.replace(axis, "")
    if "S" in axes and "C" in axes:  # pages of multi-sample pixels: the first channel's samples
        array, axes = np.take(array, 0, axis=axes.index("C")), axes.replace("C", "")
    channel = next((a for a in axes if a in "SC"), None)
    if channel is not None:
        array = np.moveaxis(array, axes.index(channel), -1)
        if array.shape[-1] > MAX_CHANNELS:
            log.warning("%s has %d channels; using the first one", path, array.shape[-1])
            array = array[..., 0]
    return array


def _read_tiff_first_plane(path: Path) -> np.ndarray:
    """The first plane of a TIFF file as (H, W) or (H, W, channels <= 4), its axes taken from the file's metadata
    (see _first_plane_pages); warns when the file holds more than that plane."""
    with tifffile.TiffFile(path) as tif:
        if not tif.series or len(tif.pages) == 0:
            raise ValueError("no image in the file")
        series = tif.series[0]
        pages, axes, dropped = _first_plane_pages(series)
        if len(tif.series) > 1:
            dropped.append(f"{len(tif.series)} images")
        array = tif.asarray(key=pages, series=0)
        if len(pages) == 1 and axes.startswith("C"):
            array = array[None]
    if dropped:
        log.warning("%s holds more than one plane (%s); using the first one", path, ", ".join(dropped))
    return _to_yx_channels(array, axes, path)


@contextmanager
def _quiet_opencv() -> Iterator[None]:
    """Silence OpenCV's own log lines (libpng errors etc.): a failed decode becomes one UserError instead."""
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(level)


def _read_array(path: Path, suffixes: frozenset[str], what: str) -> np.ndarray:
    """The raw pixel array of an image file, channels in RGB order; `UserError` naming the file on failure."""
    _check_readable(path, suffixes, what)
    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            return _read_tiff_first_plane(path)
        # Decode from bytes: cv2.imread fails silently on some non-ASCII paths.
        with _quiet_opencv():
            array = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except UserError:
        raise
    except Exception as error:  # every decoder has its own exception types; all mean "unreadable"
        raise UserError(f"{path}: cannot read {what} ({error}); the file is corrupt or truncated") from error
    if array is None:
        raise UserError(f"{path}: cannot decode {what}; the file is corrupt or truncated")
    if array.ndim == 3 and array.shape[-1] == 3:
        array = array[..., ::-1]  # OpenCV decodes to BGR
    elif array.ndim == 3 and array.shape[-1] == 4:
        array = array[..., [2, 1, 0, 3]]  # BGRA -> RGBA
    return array


def read_image(path: str | Path, percentiles: tuple[float, float] = STRETCH_PERCENTILES) -> np.ndarray:
    """Read any PNG/TIFF/JPEG/BMP image as `np.uint8 (H, W, 3)` RGB (see `to_rgb8` for the conversion).

    Multi-page TIFF: the first page, with a warning. Raises `UserError` naming the file when it is
    missing, empty, truncated, corrupt or of an unsupported format.
    """
    path = Path(path)
    array = _read_array(path, IMAGE_SUFFIXES, "image")
    try:
        return to_rgb8(array, percentiles)
    except ValueError as error:
        raise UserError(f"{path}: {error}; expected a grey, RGB or RGBA image") from error


def read_labels(path: str | Path) -> np.ndarray:
    """Read a label image (PNG or TIFF; 0 = background, 1..N = objects) as `np.int32 (H, W)`."""
    path = Path(path)
    return as_label_array(_read_array(path, LABEL_SUFFIXES, "label image"), str(path))


def labels_from_masks(mask_paths: Iterable[str | Path]) -> np.ndarray:
    """Combine one binary mask file per object (DSB 2018 layout) into `np.int32 (H, W)` labels.

    Mask k (in the order given) gets id k + 1; where masks overlap the later one wins. Raises `UserError`
    when there is no mask or the masks differ in size.
    """
    mask_paths = [Path(p) for p in mask_paths]
    if not mask_paths:
        raise UserError("no mask files given; a DSB sample needs at least one file in masks/")
    labels: np.ndarray | None = None
    for object_id, mask_path in enumerate(mask_paths, start=1):
        mask = _read_array(mask_path, IMAGE_SUFFIXES, "mask")
        if mask.ndim == 3:
            mask = mask[..., :3].max(axis=-1)
        if labels is None:
            labels = np.zeros(mask.shape, dtype=np.int32)
        elif mask.shape != labels.shape:
            raise UserError(
                f"{mask_path}: mask size {mask.shape} differs from {mask_paths[0].name} {labels.shape}"
            )
        labels[mask > 0] = object_id
    assert labels is not None
    return labels


_UM_PER_UNIT = {"µm": 1.0, "um": 1.0, "micron": 1.0, "microns": 1.0, "nm": 1e-3, "mm": 1e3, "\\u00B5m": 1.0}


def pixel_size_um(path: str | Path) -> tuple[float, float] | None:
    """The physical pixel size (y, x) in micrometres a TIFF records (OME-XML, or ImageJ's resolution and
    unit, or a resolution per centimetre), else None (other formats, or no physical unit)."""
    path = Path(path)
    if path.suffix.lower() not in TIFF_SUFFIXES:
        return None
    try:
        with tifffile.TiffFile(path) as tif:
            if tif.is_ome:
                import xml.etree.ElementTree as ElementTree

                pixels = next(
                    e for e in ElementTree.fromstring(tif.ome_metadata).iter() if e.tag.endswith("Pixels")
                )
                sizes = [pixels.get(f"PhysicalSize{a}") for a in "YX"]
                factors = [_UM_PER_UNIT.get(pixels.get(f"PhysicalSize{a}Unit", "µm")) for a in "YX"]
                if None in sizes or None in factors:
                    return None
                return float(sizes[0]) * factors[0], float(sizes[1]) * factors[1]
            page = tif.pages[0]
            resolution = [page.tags.get(name) for name in ("YResolution", "XResolution")]
            if None in resolution:
                return None
            per_unit = [v.value[0] / v.value[1] for v in resolution]
            if tif.is_imagej:
                factor = _UM_PER_UNIT.get(str((tif.imagej_metadata or {}).get("unit", "")))
            else:
                factor = (
                    1e4
                    if page.tags.get("ResolutionUnit") and int(page.tags["ResolutionUnit"].value) == 3
                    else None
                )
            if factor is None or min(per_unit) <= 0:
                return None
            return factor / per_unit[0], factor / per_unit[1]
    except (OSError, ValueError, StopIteration, tifffile.TiffFileError):
        return None
