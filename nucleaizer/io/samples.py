"""Dataset folders: images/ (+ labels/) or the DSB layout as ``Sample`` records, and iterating them with the
skip-or-fail rule for unreadable files."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nucleaizer.errors import UserError
from nucleaizer.io.arrays import IMAGE_SUFFIXES, LABEL_SUFFIXES, ON_BAD_FILE_CHOICES, TIFF_SUFFIXES
from nucleaizer.io.read import labels_from_masks, read_image, read_labels

log = logging.getLogger(__name__)


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
