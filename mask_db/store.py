"""The nucleus mask database: one SQLite row per real nucleus with its source, shape features, bounding box
and its binary crop (bit-packed, zlib-compressed).

Built incrementally: an image already recorded for a dataset is skipped, so re-running a build over the same
folders adds nothing. Queries load every nucleus's features once into memory and answer nearest-neighbour
questions in standardised shape space (features.SHAPE_SPACE) with a KD-tree, filtered by area and source.
"""

from __future__ import annotations

import logging
import sqlite3
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from mask_db.features import FEATURE_COLUMNS, SHAPE_SPACE, shape_features, whole_nuclei

log = logging.getLogger(__name__)

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS images (
    dataset TEXT NOT NULL,
    image TEXT NOT NULL,
    height INTEGER NOT NULL,
    width INTEGER NOT NULL,
    n_nuclei INTEGER NOT NULL,
    PRIMARY KEY (dataset, image)
);
CREATE TABLE IF NOT EXISTS nuclei (
    id INTEGER PRIMARY KEY,
    dataset TEXT NOT NULL,
    image TEXT NOT NULL,
    label INTEGER NOT NULL,
    {", ".join(f"{c} REAL NOT NULL" for c in FEATURE_COLUMNS)},
    y0 INTEGER NOT NULL, x0 INTEGER NOT NULL, height INTEGER NOT NULL, width INTEGER NOT NULL,
    crop BLOB NOT NULL,
    UNIQUE (dataset, image, label)
);
"""


def pack_mask(mask: np.ndarray) -> bytes:
    """Bit-pack and zlib-compress a binary mask (bool (h, w)); its shape is stored beside it."""
    return zlib.compress(np.packbits(mask.astype(bool), axis=None).tobytes(), 6)


def unpack_mask(blob: bytes, height: int, width: int) -> np.ndarray:
    """Inverse of pack_mask: bool (height, width)."""
    bits = np.frombuffer(zlib.decompress(blob), dtype=np.uint8)
    return np.unpackbits(bits, count=height * width).astype(bool).reshape(height, width)


@dataclass(frozen=True)
class ShapeIndex:
    """Every nucleus's features in memory: ``ids`` (int64 (N,)), ``datasets`` (str (N,)), ``area`` (float64
    (N,)) and ``shape`` (float64 (N, 4), the SHAPE_SPACE columns), plus the mean and standard deviation that
    standardise shape space."""

    ids: np.ndarray
    datasets: np.ndarray
    area: np.ndarray
    shape: np.ndarray
    mean: np.ndarray
    std: np.ndarray

    def standardise(self, shape: np.ndarray) -> np.ndarray:
        """Shape-space features (M, 4) in units of the database's standard deviations."""
        return (np.asarray(shape, dtype=np.float64) - self.mean) / self.std


class MaskDatabase:
    """A nucleus mask database in one SQLite file.

    ``MaskDatabase(path, create=True)`` creates the file when missing; with ``create=False`` a missing file
    raises FileNotFoundError. Use as a context manager or call ``close()``.
    """

    def __init__(self, path: str | Path, create: bool = False):
        self.path = Path(path)
        if not self.path.is_file():
            if not create:
                raise FileNotFoundError(
                    f"mask database {self.path} does not exist; build it first "
                    f"(python -m mask_db build {self.path} DATASET_DIR)"
                )
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._connection = sqlite3.connect(self.path)
        try:
            # write-ahead log without a sync per commit: an interrupted build loses at most the last images,
            # never the consistency of what is there
            self._connection.execute("PRAGMA journal_mode=WAL")
            self._connection.execute("PRAGMA synchronous=NORMAL")
            self._connection.executescript(_SCHEMA)
        except sqlite3.DatabaseError as error:
            self._connection.close()
            raise ValueError(f"{self.path} is not a mask database ({error})") from error
        self._index: ShapeIndex | None = None
        self._trees: dict[tuple, tuple[np.ndarray, cKDTree]] = {}

    def __enter__(self) -> MaskDatabase:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._connection.close()

    def __len__(self) -> int:
        return self._connection.execute("SELECT COUNT(*) FROM nuclei").fetchone()[0]

    def has_image(self, dataset: str, image: str) -> bool:
        """Whether an image of a dataset was added already (with or without usable nuclei)."""
        query = "SELECT 1 FROM images WHERE dataset = ? AND image = ?"
        return self._connection.execute(query, (dataset, image)).fetchone() is not None

    def add_labels(self, dataset: str, image: str, labels: np.ndarray, min_area: int = 16) -> int:
        """Add the whole nuclei of one label image (integer (H, W)); returns how many were added.

        Objects touching the border or smaller than ``min_area`` px are skipped, holes filled, one
        connected component kept (features.whole_nuclei). An image already in the database adds nothing.
        The image's record and its nuclei are written in one transaction.
        """
        if self.has_image(dataset, image):
            return 0
        cleaned = whole_nuclei(labels, min_area=min_area)
        features = shape_features(cleaned)
        rows = []
        for i, label in enumerate(features["label"]):
            y0, x0, y1, x1 = (int(v) for v in features["bbox"][i])
            crop = cleaned[y0:y1, x0:x1] == label
            rows.append(
                (
                    dataset,
                    image,
                    int(label),
                    *(float(features[c][i]) for c in FEATURE_COLUMNS),
                    y0,
                    x0,
                    y1 - y0,
                    x1 - x0,
                    pack_mask(crop),
                )
            )
        columns = ", ".join(
            ("dataset", "image", "label", *FEATURE_COLUMNS, "y0", "x0", "height", "width", "crop")
        )
        with self._connection:
            self._connection.executemany(
                f"INSERT INTO nuclei ({columns}) VALUES ({', '.join('?' * (len(FEATURE_COLUMNS) + 8))})", rows
            )
            self._connection.execute(
                "INSERT INTO images VALUES (?, ?, ?, ?, ?)", (dataset, image, *cleaned.shape, len(rows))
            )
        self._index = None
        self._trees.clear()
        return len(rows)

    def add_many(self, items: Iterable[tuple[str, str, np.ndarray]], min_area: int = 16) -> dict:
        """Add (dataset, image, labels) items; returns counts ``images_added``, ``images_skipped`` (already
        present) and ``nuclei_added``."""
        added = skipped = nuclei = 0
        for dataset, image, labels in items:
            if self.has_image(dataset, image):
                skipped += 1
                continue
            nuclei += self.add_labels(dataset, image, labels, min_area=min_area)
            added += 1
        return {"images_added": added, "images_skipped": skipped, "nuclei_added": nuclei}

    def info(self) -> dict:
        """Counts per dataset, total nuclei and images, area percentiles and the file size in bytes."""
        per_dataset = dict(self._connection.execute("SELECT dataset, COUNT(*) FROM nuclei GROUP BY dataset"))
        images = self._connection.execute("SELECT COUNT(*) FROM images").fetchone()[0]
        areas = np.array(
            [r[0] for r in self._connection.execute("SELECT area FROM nuclei")], dtype=np.float64
        )
        percentiles = np.percentile(areas, [5, 50, 95]).round(1).tolist() if areas.size else [None] * 3
        return {
            "nuclei": int(areas.size),
            "images": int(images),
            "datasets": per_dataset,
            "area_p5_p50_p95": percentiles,
            "size_bytes": self.path.stat().st_size,
        }

    @property
    def index(self) -> ShapeIndex:
        """Features of every nucleus, read from the file once and kept in memory."""
        if self._index is None:
            columns = ", ".join(("id", "dataset", "area", *SHAPE_SPACE))
            rows = self._connection.execute(f"SELECT {columns} FROM nuclei ORDER BY id").fetchall()
            if not rows:
                raise ValueError(
                    f"mask database {self.path} is empty; build it from labelled dataset folders "
                    f"(python -m mask_db build {self.path} DATASET_DIR)"
                )
            ids, datasets, area, *shape = zip(*rows, strict=True)
            shape = np.stack([np.asarray(c, dtype=np.float64) for c in shape], axis=1)
            std = shape.std(axis=0)
            self._index = ShapeIndex(
                ids=np.asarray(ids, dtype=np.int64),
                datasets=np.asarray(datasets),
                area=np.asarray(area, dtype=np.float64),
                shape=shape,
                mean=shape.mean(axis=0),
                # a feature with no spread (one nucleus) must not divide by zero
                std=np.where(std > 0, std, 1.0),
            )
        return self._index

    def _tree(self, area_range: tuple[float, float] | None, sources: Sequence[str] | None):
        """Row numbers that pass the filters and a KD-tree over their standardised shapes (cached)."""
        key = (tuple(area_range) if area_range else None, tuple(sorted(sources)) if sources else None)
        if key not in self._trees:
            index = self.index
            keep = np.ones(index.ids.size, dtype=bool)
            if area_range is not None:
                keep &= (index.area >= area_range[0]) & (index.area <= area_range[1])
            if sources is not None:
                keep &= np.isin(index.datasets, list(sources))
            rows = np.flatnonzero(keep)
            if rows.size == 0:
                raise ValueError(
                    f"no nucleus in {self.path} passes the filters area_range={area_range}, "
                    f"sources={sources}; widen them"
                )
            self._trees[key] = (rows, cKDTree(index.standardise(index.shape[rows])))
        return self._trees[key]

    def query(
        self,
        shape: np.ndarray,
        k: int = 1,
        area_range: tuple[float, float] | None = None,
        sources: Sequence[str] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nuclei nearest to each query in standardised shape space.

        shape: float (M, 4) in SHAPE_SPACE order (shape_ratio, circularity, eccentricity, solidity).
        area_range: keep nuclei with min <= area <= max pixels; sources: keep these datasets.
        Returns (ids int64 (M, k), distances float64 (M, k)); k is cut to the number of nuclei that pass.
        """
        shape = np.atleast_2d(np.asarray(shape, dtype=np.float64))
        if shape.shape[1] != len(SHAPE_SPACE):
            raise ValueError(
                f"queries need {len(SHAPE_SPACE)} columns {SHAPE_SPACE}, got shape {shape.shape}"
            )
        rows, tree = self._tree(area_range, sources)
        k = max(1, min(k, rows.size))
        distances, found = tree.query(self.index.standardise(shape), k=k)
        distances, found = distances.reshape(len(shape), k), found.reshape(len(shape), k)
        return self.index.ids[rows[found]], distances

    def features(self, ids: Sequence[int]) -> dict[str, np.ndarray]:
        """FEATURE_COLUMNS of the given nuclei, in the order of ``ids`` (float64 arrays)."""
        rows = self._rows(ids, ", ".join(FEATURE_COLUMNS))
        return {c: np.array([r[i] for r in rows], dtype=np.float64) for i, c in enumerate(FEATURE_COLUMNS)}

    def crops(self, ids: Sequence[int]) -> list[np.ndarray]:
        """Binary crops (bool (h, w), tight bounding box) of the given nuclei, in the order of ``ids``."""
        return [unpack_mask(blob, h, w) for blob, h, w in self._rows(ids, "crop, height, width")]

    def _rows(self, ids: Sequence[int], columns: str) -> list[tuple]:
        ids = [int(i) for i in ids]
        found: dict[int, tuple] = {}
        unique = sorted(set(ids))
        # SQLite caps the number of bound variables per statement; ask in chunks.
        for start in range(0, len(unique), 500):
            chunk = unique[start : start + 500]
            sql = f"SELECT id, {columns} FROM nuclei WHERE id IN ({', '.join('?' * len(chunk))})"
            found.update((row[0], row[1:]) for row in self._connection.execute(sql, chunk))
        missing = [i for i in unique if i not in found]
        if missing:
            raise ValueError(f"nuclei {missing[:5]} are not in {self.path}")
        return [found[i] for i in ids]
