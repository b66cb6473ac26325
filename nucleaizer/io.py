"""Every file format in and out: images to 8-bit RGB, label images, dataset folders, atomic writes.

Images of any common format (PNG, TIFF, JPEG, BMP; grey, RGB or RGBA; 8/16/32-bit or float) become
`np.uint8 (H, W, 3)` RGB. Data deeper than 8 bits is stretched between two percentiles, never cast, so a
12-bit camera image does not come out black. Label images are integer `(H, W)` arrays, 0 = background.
Every problem with a file raises `UserError` naming the file; folder readers skip bad files with a warning
and count them at the end, or fail on the first one (`on_bad_file="fail"`).
"""

from __future__ import annotations

import csv
import logging
import os
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import tifffile

from nucleaizer.errors import UserError

log = logging.getLogger(__name__)

TIFF_SUFFIXES = frozenset({".tif", ".tiff"})
OME_SUFFIX = ".ome.tif"
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp"}) | TIFF_SUFFIXES
LABEL_SUFFIXES = frozenset({".png"}) | TIFF_SUFFIXES
# Default percentiles of the intensity stretch for >8-bit and float images (docs/method.md section 0).
STRETCH_PERCENTILES = (0.5, 99.8)
MAX_UINT16_LABEL = np.iinfo(np.uint16).max
ON_BAD_FILE_CHOICES = ("skip", "fail")
MAX_CHANNELS = 4  # grey, grey + alpha, RGB, RGBA; an image with more channels is read as its first channel


# --------------------------------------------------------------------------------------------- arrays


def _channels_last(array: np.ndarray) -> np.ndarray:
    """(C, H, W) with C in 1..4 -> (H, W, C); TIFF stores planar RGB channel-first."""
    if array.ndim == 3 and array.shape[0] <= 4 < array.shape[-1]:
        return np.moveaxis(array, 0, -1)
    return array


STRETCH_SAMPLE = (
    4_000_000  # percentiles of larger images come from an evenly strided sample of this many values
)
STRETCH_CHUNK_ROWS = 256  # rows converted at a time: memory stays bounded for any image size


def _stretch_to_uint8(array: np.ndarray, percentiles: tuple[float, float]) -> np.ndarray:
    """Map the low..high percentile range of all finite values (all channels together) onto 0..255.

    Works row block by row block, so a 10,000 px 16-bit image needs no full-size float copy.
    """
    flat = array.reshape(-1)
    sample = flat[:: max(1, flat.size // STRETCH_SAMPLE)].astype(np.float64)
    sample = sample[np.isfinite(sample)]
    if not sample.size:
        return np.zeros(array.shape, dtype=np.uint8)
    low, high = np.percentile(sample, percentiles)
    if high <= low:  # nearly constant image: fall back to the full range so objects are not lost
        low, high = sample.min(), sample.max()
    if high <= low:
        return np.zeros(array.shape, dtype=np.uint8)
    result = np.empty(array.shape, dtype=np.uint8)
    for start in range(0, array.shape[0], STRETCH_CHUNK_ROWS):
        block = array[start : start + STRETCH_CHUNK_ROWS].astype(np.float64)
        block[~np.isfinite(block)] = low
        block -= low
        block *= 255.0 / (high - low)
        result[start : start + STRETCH_CHUNK_ROWS] = np.clip(np.rint(block), 0, 255)
    return result


def to_rgb8(array: np.ndarray, percentiles: tuple[float, float] = STRETCH_PERCENTILES) -> np.ndarray:
    """Convert an image array in memory to `np.uint8 (H, W, 3)` RGB.

    Accepts `(H, W)` grey, `(H, W, 1|2|3|4)` (grey, grey+alpha, RGB, RGBA; channels in RGB order) or
    channel-first `(C, H, W)`; dtype bool, any integer or float. uint8 is kept as is; every other dtype is
    stretched linearly between the `percentiles` of its values. Alpha is dropped.
    Raises `ValueError` for shapes that are not an image.
    """
    array = _channels_last(np.asarray(array))
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 3 and array.shape[-1] == 2:  # grey + alpha
        array = array[..., 0]
    if array.ndim == 3 and array.shape[-1] == 4:
        array = array[..., :3]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] == 3)) or min(array.shape[:2]) == 0:
        raise ValueError(f"not an image: array of shape {array.shape}")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif array.dtype != np.uint8:
        if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
            raise ValueError(f"not an image: dtype {array.dtype}")
        array = _stretch_to_uint8(array, percentiles)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    return np.ascontiguousarray(array)


# ------------------------------------------------------------------------------------------ reading


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


def _as_label_array(array: np.ndarray, source: str) -> np.ndarray:
    """Validate a label image and return it as `np.int32 (H, W)`."""
    if array.ndim == 3 and array.shape[-1] in (3, 4) and (array[..., :3] == array[..., :1]).all():
        array = array[..., 0]  # a label image saved as grey RGB
    if array.ndim != 2:
        raise UserError(f"{source}: a label image must be 2-D (H, W) integers, got shape {array.shape}")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        if not np.array_equal(array, np.round(array)):
            raise UserError(f"{source}: a label image must hold integer ids, got non-integer floats")
    elif not np.issubdtype(array.dtype, np.integer):
        raise UserError(f"{source}: a label image must hold integer ids, got dtype {array.dtype}")
    if array.size and (array.min() < 0 or array.max() > np.iinfo(np.int32).max):
        raise UserError(f"{source}: label ids must lie in 0..{np.iinfo(np.int32).max}")
    return array.astype(np.int32)


def read_labels(path: str | Path) -> np.ndarray:
    """Read a label image (PNG or TIFF; 0 = background, 1..N = objects) as `np.int32 (H, W)`."""
    path = Path(path)
    return _as_label_array(_read_array(path, LABEL_SUFFIXES, "label image"), str(path))


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


# ------------------------------------------------------------------------------------------ writing


@contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the folder of `path`; on success rename it onto `path`, else delete it.

    The temporary name keeps the suffix of `path`, so writers that pick a format from it still work.
    Readers never see a half-written file, and a crash leaves the old file (if any) in place.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A unique name rather than mkstemp: mkstemp creates mode 0600, which the rename would keep.
    temporary = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:12]}.tmp{path.suffix}")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _encode(path: Path, array: np.ndarray) -> None:
    """Write `array` (channels in OpenCV order) to `path` in the format its suffix names."""
    suffix = path.suffix.lower()
    if suffix in TIFF_SUFFIXES:
        tifffile.imwrite(path, array, compression="zlib")
        return
    ok, encoded = cv2.imencode(suffix, array)
    if not ok:
        raise UserError(f"{path}: cannot encode as {suffix}")
    path.write_bytes(encoded.tobytes())


def write_table(path: str | Path, table) -> Path:
    """Write a pandas DataFrame as CSV (no index), atomically."""
    path = Path(path)
    with atomic_write(path) as temporary:
        table.to_csv(temporary, index=False)
    return path


def write_csv(path: str | Path, rows: list[dict]) -> Path:
    """Write a list of flat dictionaries (one per row, same keys) as CSV, atomically."""
    path = Path(path)
    with atomic_write(path) as temporary, temporary.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_image(path: str | Path, image: np.ndarray) -> Path:
    """Write a `np.uint8 (H, W, 3)` RGB (or `(H, W)` grey) image atomically as PNG/TIFF/JPEG/BMP."""
    path = Path(path)
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise UserError(f"{path}: unsupported image format; use one of {', '.join(sorted(IMAGE_SUFFIXES))}")
    image = np.asarray(image)
    if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[-1] == 3)):
        raise ValueError(f"write_image expects uint8 (H, W, 3) or (H, W), got {image.dtype} {image.shape}")
    if path.suffix.lower() not in TIFF_SUFFIXES and image.ndim == 3:
        image = image[..., ::-1]  # RGB -> BGR for OpenCV
    with atomic_write(path) as temporary:
        _encode(temporary, np.ascontiguousarray(image))
    return path


def write_labels(
    path: str | Path, labels: np.ndarray, pixel_size_um: tuple[float, float] | None = None
) -> Path:
    """Write an integer `(H, W)` label image atomically; returns the path written.

    uint16 PNG or TIFF. Ids above 65,535 need 32 bits: a TIFF is then written as uint32, and a PNG
    request becomes a `.tif` beside it (with a warning), since PNG holds at most 16 bits. A path ending in
    `.ome.tif` is written as OME-TIFF, with the physical pixel size (y, x) in micrometres when given.
    """
    path = Path(path)
    if path.suffix.lower() not in LABEL_SUFFIXES:
        raise UserError(f"{path}: unsupported label format; use one of {', '.join(sorted(LABEL_SUFFIXES))}")
    labels = _as_label_array(np.asarray(labels), str(path))
    if labels.size and labels.max() > MAX_UINT16_LABEL:
        if path.suffix.lower() not in TIFF_SUFFIXES:
            log.warning("%s: ids above %d do not fit a PNG; writing a 32-bit TIFF", path, MAX_UINT16_LABEL)
            path = path.with_suffix(".tif")
        array = labels.astype(np.uint32)
    else:
        array = labels.astype(np.uint16)
    if path.name.lower().endswith(OME_SUFFIX):
        metadata = {"axes": "YX"}
        if pixel_size_um is not None:
            metadata.update(
                PhysicalSizeY=float(pixel_size_um[0]),
                PhysicalSizeYUnit="µm",
                PhysicalSizeX=float(pixel_size_um[1]),
                PhysicalSizeXUnit="µm",
            )
        with atomic_write(path) as temporary:
            tifffile.imwrite(temporary, array, ome=True, metadata=metadata, compression="zlib")
        return path
    with atomic_write(path) as temporary:
        _encode(temporary, array)
    return path


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


# ------------------------------------------------------------------------------------------ folders


@dataclass(frozen=True)
class Sample:
    """One image of a dataset folder and where its labels come from (a label image, DSB masks, or none)."""

    name: str
    image_path: Path
    labels_path: Path | None = None
    mask_paths: tuple[Path, ...] | None = None

    @property
    def has_labels(self) -> bool:
        return self.labels_path is not None or self.mask_paths is not None

    def read_image(self) -> np.ndarray:
        """The image as `np.uint8 (H, W, 3)` RGB."""
        return read_image(self.image_path)

    def read_labels(self) -> np.ndarray | None:
        """The labels as `np.int32 (H, W)`, or None when the sample is unlabelled."""
        if self.labels_path is not None:
            return read_labels(self.labels_path)
        if self.mask_paths is not None:
            return labels_from_masks(self.mask_paths)
        return None


def file_stem(path: Path) -> str:
    """The name that matches an image with its labels: the file name without its suffix (and without ".ome")."""
    stem = path.stem
    return stem[:-4] if path.suffix.lower() in TIFF_SUFFIXES and stem.lower().endswith(".ome") else stem


def files_by_stem(folder: Path, suffixes: frozenset[str]) -> dict[str, Path]:
    """Files of `folder` with one of `suffixes` keyed by stem, sorted; hidden files are ignored.

    Logs a warning for other files, and raises `UserError` when two files share a stem (a.png, a.tif).
    """
    found: dict[str, Path] = {}
    ignored = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        if path.suffix.lower() not in suffixes:
            ignored.append(path.name)
            continue
        stem = file_stem(path)
        if stem in found:
            raise UserError(f"{folder}: two files named '{stem}' ({found[stem].name}, {path.name}); keep one")
        found[stem] = path
    if ignored:
        log.warning(
            "%s: ignored %d file(s) of unsupported format (%s); supported: %s",
            folder,
            len(ignored),
            ", ".join(ignored[:5]) + (", ..." if len(ignored) > 5 else ""),
            ", ".join(sorted(suffixes)),
        )
    return found


def _is_dsb_layout(folder: Path) -> bool:
    return any((sub / "images").is_dir() for sub in folder.iterdir() if sub.is_dir())


def _dsb_samples(folder: Path) -> list[Sample]:
    """`<id>/images/<id>.png` + optional `<id>/masks/*.png`, one sample per id folder."""
    samples = []
    for sub in sorted(p for p in folder.iterdir() if (p / "images").is_dir()):
        images = files_by_stem(sub / "images", IMAGE_SUFFIXES)
        if not images:
            log.warning("%s: no image in images/; skipped", sub)
            continue
        image_path = images.get(sub.name, next(iter(images.values())))
        masks_dir = sub / "masks"
        mask_paths = tuple(files_by_stem(masks_dir, IMAGE_SUFFIXES).values()) if masks_dir.is_dir() else None
        samples.append(Sample(sub.name, image_path, mask_paths=mask_paths or None))
    return samples


def _flat_samples(images_dir: Path, labels_dir: Path | None) -> list[Sample]:
    images = files_by_stem(images_dir, IMAGE_SUFFIXES)
    labels = files_by_stem(labels_dir, LABEL_SUFFIXES) if labels_dir is not None else {}
    orphans = sorted(set(labels) - set(images))
    if orphans:
        log.warning(
            "%s: %d label file(s) have no image (%s)", labels_dir, len(orphans), ", ".join(orphans[:5])
        )
    return [Sample(stem, path, labels_path=labels.get(stem)) for stem, path in images.items()]


def list_samples(folder: str | Path, require_labels: bool = False) -> list[Sample]:
    """List the samples of a dataset folder, sorted by name.

    Layouts: `images/` with optional `labels/` matched by file stem; the DSB 2018 layout
    `<id>/images/<id>.png` + `<id>/masks/*.png`; or a plain folder of images. Raises `UserError` when the
    folder is missing or holds no image, or when `require_labels` and some image has no labels.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: no such folder; check the path")
    if (folder / "images").is_dir():
        labels_dir = folder / "labels"
        samples = _flat_samples(folder / "images", labels_dir if labels_dir.is_dir() else None)
    elif _is_dsb_layout(folder):
        samples = _dsb_samples(folder)
    else:
        samples = _flat_samples(folder, None)
    if not samples:
        raise UserError(
            f"{folder}: no images found (expected images/ [+ labels/], <id>/images/ + <id>/masks/, "
            f"or image files with suffix {', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    if require_labels:
        unlabelled = [s.name for s in samples if not s.has_labels]
        if unlabelled:
            raise UserError(
                f"{folder}: {len(unlabelled)} of {len(samples)} images have no labels "
                f"({', '.join(unlabelled[:5])}); add labels/<name>.png or remove those images"
            )
    return sorted(samples, key=lambda s: s.name)


def iter_samples(
    samples: Iterable[Sample], on_bad_file: str = "skip"
) -> Iterator[tuple[Sample, np.ndarray, np.ndarray | None]]:
    """Read samples one by one: yields `(sample, image uint8 (H, W, 3), labels int32 (H, W) | None)`.

    Unreadable files are skipped with a warning (counted in a final warning) when `on_bad_file="skip"`,
    or raise their `UserError` when `"fail"`. Labels whose size differs from their image always raise
    `UserError`: that is a wrong dataset, not one bad file.
    """
    if on_bad_file not in ON_BAD_FILE_CHOICES:
        raise UserError(f"on_bad_file={on_bad_file!r}: use one of {', '.join(ON_BAD_FILE_CHOICES)}")
    n_seen = n_skipped = 0
    for sample in samples:
        n_seen += 1
        try:
            image = sample.read_image()
            labels = sample.read_labels()
        except UserError as error:
            if on_bad_file == "fail":
                raise
            n_skipped += 1
            log.warning("skipped sample %s: %s", sample.name, error)
            continue
        if labels is not None and labels.shape != image.shape[:2]:
            source = sample.labels_path or (sample.mask_paths[0].parent if sample.mask_paths else sample.name)
            raise UserError(
                f"{source}: label size {labels.shape} differs from image {sample.image_path} "
                f"{image.shape[:2]}; labels must have the image's height and width"
            )
        yield sample, image, labels
    if n_skipped:
        log.warning("skipped %d of %d samples with unreadable files", n_skipped, n_seen)
