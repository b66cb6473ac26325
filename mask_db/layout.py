"""Synthetic mask layouts that imitate a style: label images composed of database and simulated nuclei.

For every mask a real image of the style is drawn as its reference (in a shuffled cycle, so all are used
before any repeats): its density sets the object count, its whole nuclei are the objects to imitate (area
with a little jitter, shape features), its nearest-neighbour distances the gaps and its touching fraction
how many objects touch. Each object is a database nucleus near the reference in standardised shape space,
rotated and scaled to the reference's area (square root of the area ratio), or a SIMCEP shape accepted
within a tolerance of the reference (a database shape replaces one that was never accepted).

Placement, largest object first, never overlaps: an object that must not touch keeps one free pixel to
every other (8-neighbourhood); one that must touch is slid out from a neighbour until it just no longer
overlaps. Most objects are placed at a gap drawn from the reference's nearest-neighbour distances from an
object already placed (so clustered styles give clustered layouts); a share start anywhere; an object that
finds no place by random tries gets an exact search of all free positions (cv2.matchTemplate), and is left
out only when none exists. Everything is vectorised on bounding-box windows; the same seed gives the same
masks.
"""

from __future__ import annotations

import logging
from collections import Counter

import cv2
import numpy as np
from tqdm import tqdm

from mask_db.canvas import Canvas, Shape
from mask_db.features import SHAPE_SPACE, touching_labels
from mask_db.shapes import linear_scale, simulate_shapes, transform_mask
from mask_db.stats import StyleStats
from mask_db.store import MaskDatabase

log = logging.getLogger(__name__)


class LayoutComposer:
    """Composes label images that imitate a style (see the module docstring).

    stats: the style's StyleStats. database: a MaskDatabase (may be None when ``simulated_share`` is 1).
    simulated_share: share of objects drawn as SIMCEP shapes (0..1). touch_probability: the share of
    objects that touch another; None takes each reference image's measured share (and
    ``default_touch_probability`` when a style has too few objects to tell). neighbours: a database
    nucleus is drawn from this many nearest in shape space. area_jitter: log-normal sigma on reference
    areas. new_cluster_probability: share of objects placed anywhere rather than at a nearest-neighbour gap
    from a placed one (lower: more clustered). area_range_factor: database nuclei whose area lies outside
    the style's area range widened by this factor are not used (scaling them far blurs or pixelates them).
    shape_tolerance, max_shape_tries, simcep_points, simcep_perturbation: simulated shapes
    (shapes.simulate_shapes). placement_tries: random tries per object before the exact search.
    """

    def __init__(
        self,
        stats: StyleStats,
        database: MaskDatabase | None = None,
        simulated_share: float = 0.5,
        touch_probability: float | None = None,
        default_touch_probability: float = 0.05,
        neighbours: int = 5,
        area_jitter: float = 0.05,
        new_cluster_probability: float = 0.2,
        area_range_factor: float = 4.0,
        shape_tolerance: float = 0.1,
        max_shape_tries: int = 50,
        simcep_points: int = 8,
        simcep_perturbation: float = 0.15,
        placement_tries: int = 30,
    ):
        for name, value in (
            ("simulated_share", simulated_share),
            ("new_cluster_probability", new_cluster_probability),
            ("default_touch_probability", default_touch_probability),
        ):
            if not 0 <= value <= 1:
                raise ValueError(f"{name} must lie in [0, 1], got {value}")
        if touch_probability is not None and not 0 <= touch_probability <= 1:
            raise ValueError(f"touch_probability must lie in [0, 1] or be None, got {touch_probability}")
        if stats.objects["area"].size == 0:
            raise ValueError(
                "the style statistics hold no whole nucleus (every label image is empty, or all its "
                "objects touch the image border or are tiny): nothing to imitate"
            )
        if simulated_share < 1:
            if database is None:
                raise ValueError(
                    "no mask database given: pass one, or set simulated_share=1 to simulate every shape"
                )
            database.index  # noqa: B018  (raises a clear ValueError when the database is empty)
        self.stats = stats
        self.database = database
        self.simulated_share = simulated_share
        self.touch_probability = touch_probability
        self.default_touch_probability = default_touch_probability
        self.neighbours = neighbours
        self.area_jitter = area_jitter
        self.new_cluster_probability = new_cluster_probability
        self.shape_options = dict(
            tolerance=shape_tolerance,
            max_tries=max_shape_tries,
            n_points=simcep_points,
            perturbation=simcep_perturbation,
        )
        self.placement_tries = placement_tries
        area = stats.objects["area"]
        self.area_range = (float(area.min()) / area_range_factor, float(area.max()) * area_range_factor)
        self.report: Counter = Counter()
        pooled = stats.touching_fraction
        self._style_touch = (
            pooled if stats.counts.sum() >= 2 and np.isfinite(pooled) else default_touch_probability
        )

    def compose(self, n: int, size: int | tuple[int, int] = 512, seed: int = 0) -> list[np.ndarray]:
        """``n`` label images (int32 (H, W), ids 1..N in placement order) of ``size`` pixels.

        Raises ValueError when the style's typical nucleus does not fit the canvas. Counts of what was
        asked, placed, left out and simulated are kept in ``self.report``.
        """
        shape = (size, size) if isinstance(size, int) else tuple(int(s) for s in size)
        if n < 0 or len(shape) != 2 or min(shape) < 1:
            raise ValueError(f"need n >= 0 masks of a positive size, got n={n}, size={size}")
        typical = float(np.median(self.stats.objects["major_axis"]))
        if typical >= min(shape):
            raise ValueError(
                f"nuclei of this style (median major axis {typical:.0f} px) do not fit a "
                f"{shape[0]}x{shape[1]} canvas; compose larger masks or rescale the style's images"
            )
        self.report = Counter()
        references = self._references(n, np.random.default_rng([seed, 2**31]))
        masks = []
        for index in tqdm(range(n), desc="composing masks", unit="mask", disable=n < 10, leave=False):
            rng = np.random.default_rng([seed, index])
            masks.append(self._compose_one(shape, int(references[index]), rng))
        if self.report["left_out"] or self.report["too_big"]:
            log.warning(
                "%d of %d objects could not be placed (no free position) and %d were bigger than the "
                "%dx%d canvas",
                self.report["left_out"],
                self.report["asked"],
                self.report["too_big"],
                *shape,
            )
        return masks

    def _references(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Reference image of each of ``n`` masks: systematic sampling with chances proportional to image
        size (a style is a population of fields of view; a big image holds more of it), in random order,
        so every image is used about n * its share of pixels times."""
        order = rng.permutation(self.stats.n_images)
        cumulative = np.cumsum(self.stats.pixels[order])
        points = (rng.random() + np.arange(n)) / max(n, 1) * cumulative[-1]
        return rng.permutation(
            order[np.minimum(np.searchsorted(cumulative, points, side="right"), order.size - 1)]
        )

    def _reference_objects(
        self, reference: int, count: int, rng: np.random.Generator
    ) -> dict[str, np.ndarray]:
        """``count`` objects drawn (with replacement, chances by border weight) from the reference image's
        whole nuclei, or from the whole style when that image has none; areas jittered."""
        objects = self.stats.objects
        pool = np.flatnonzero(objects["image"] == reference)
        if pool.size == 0:
            pool = np.arange(objects["area"].size)
        weight = objects["weight"][pool]
        chosen = rng.choice(pool, size=count, p=weight / weight.sum())
        drawn = {name: values[chosen] for name, values in objects.items()}
        drawn["area"] = drawn["area"] * rng.lognormal(0.0, self.area_jitter, count)
        return drawn

    def _shapes(self, wanted: dict[str, np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
        """One tight bool crop per wanted object: simulated for a ``simulated_share`` of them, from the
        database for the rest and for simulated ones never accepted."""
        count = wanted["area"].size
        simulated = np.zeros(count, dtype=bool)
        simulated[rng.permutation(count)[: int(round(count * self.simulated_share))]] = True
        shapes: list[np.ndarray | None] = [None] * count
        if simulated.any():
            subset = {name: values[simulated] for name, values in wanted.items()}
            drawn, accepted = simulate_shapes(subset, rng, **self.shape_options)
            self.report["simulated"] += int(accepted.sum())
            self.report["simulated_not_accepted"] += int((~accepted).sum())
            for i, shape, ok in zip(np.flatnonzero(simulated), drawn, accepted, strict=True):
                if ok or self.database is None:
                    shapes[i] = shape
        from_db = np.array([s is None for s in shapes])
        if from_db.any():
            shape_space = np.stack([wanted[name][from_db] for name in SHAPE_SPACE], axis=1)
            try:
                ids, _ = self.database.query(shape_space, k=self.neighbours, area_range=self.area_range)
            except ValueError:
                log.warning(
                    "no database nucleus within the area range %s; using the whole database", self.area_range
                )
                ids, _ = self.database.query(shape_space, k=self.neighbours)
            picked = ids[np.arange(len(ids)), rng.integers(0, ids.shape[1], len(ids))]
            index = self.database.index
            db_area = index.area[np.searchsorted(index.ids, picked)]
            scales = linear_scale(wanted["area"][from_db], db_area)
            angles = rng.uniform(0, 360, picked.size)
            crops = self.database.crops(picked)
            for i, crop, scale, angle in zip(np.flatnonzero(from_db), crops, scales, angles, strict=True):
                shapes[i] = transform_mask(crop, scale, angle)
            self.report["from_database"] += int(from_db.sum())
        return shapes

    def _compose_one(self, size: tuple[int, int], reference: int, rng: np.random.Generator) -> np.ndarray:
        expected = self.stats.densities[reference] * size[0] * size[1]
        # stochastic rounding keeps the mean count equal to the density's
        count = int(np.floor(expected) + (rng.random() < expected - np.floor(expected)))
        self.report["asked"] += count
        if count == 0:
            return np.zeros(size, dtype=np.int32)
        wanted = self._reference_objects(reference, count, rng)
        masks = [m for m in self._shapes(wanted, rng) if m.size]
        shapes = [Shape.of(m) for m in masks if m.shape[0] <= size[0] and m.shape[1] <= size[1]]
        self.report["too_big"] += len(masks) - len(shapes)
        if not shapes:
            return np.zeros(size, dtype=np.int32)
        shapes.sort(key=lambda s: -s.area)
        canvas = Canvas.empty(size, margin=max(max(s.mask.shape) for s in shapes) + 2)
        gaps = self.stats.nn_distances[self.stats.nn_image == reference]
        if gaps.size == 0:
            gaps = self.stats.nn_distances
        touch_target = self.touch_probability
        if touch_target is None:
            measured = self.stats.touching_fractions[reference]
            touch_target = measured if self.stats.counts[reference] >= 2 else self._style_touch
        for i, shape in enumerate(shapes):
            # feedback: ask for touching at the rate that brings the touching share to its target
            needed = touch_target * len(shapes) - sum(canvas.touching)
            want_touch = bool(canvas.centres) and rng.random() < needed / (2 * (len(shapes) - i))
            if self._place(canvas, shape, gaps, want_touch, rng):
                self.report["placed"] += 1
            else:
                self.report["left_out"] += 1
        labels = canvas.image
        self.report["touching"] += int(touching_labels(labels).size)
        return labels

    def _place(
        self, canvas: Canvas, shape: Shape, gaps: np.ndarray, want_touch: bool, rng: np.random.Generator
    ) -> bool:
        """Put one object on the canvas; False when no free position exists."""
        if want_touch and self._place_touching(canvas, shape, rng):
            return True
        can_go_near = bool(canvas.centres) and gaps.size > 0
        near_first = can_go_near and rng.random() >= self.new_cluster_probability
        modes = ("near", "anywhere") if near_first else ("anywhere", "near") if can_go_near else ("anywhere",)
        height, width = canvas.labels.shape
        tries = self.placement_tries
        for mode in modes:
            # all of this mode's candidate centres at once; checked in order, first free one wins
            if mode == "near":
                anchors = np.asarray(canvas.centres)[rng.integers(len(canvas.centres), size=tries)]
                angle = rng.uniform(0, 2 * np.pi, tries)
                centres = anchors + rng.choice(gaps, size=tries)[:, None] * np.stack(
                    [np.sin(angle), np.cos(angle)], 1
                )
            else:
                centres = rng.uniform(
                    (canvas.margin, canvas.margin),
                    (height - canvas.margin, width - canvas.margin),
                    size=(tries, 2),
                )
            for y, x in np.floor(centres - shape.centroid + 0.5).astype(int).tolist():
                if canvas.free(shape, y, x):
                    canvas.paint(shape, y, x)
                    return True
        # exact search: every top-left corner whose window misses all blocked pixels and puts the centre in
        # the image
        hits = cv2.matchTemplate(
            canvas.blocked.astype(np.float32), shape.mask.astype(np.float32), cv2.TM_CCORR
        )
        low = np.ceil(canvas.margin - shape.centroid).astype(int)
        high = np.ceil(np.array([height, width]) - canvas.margin - shape.centroid).astype(int)
        free = np.argwhere(hits[low[0] : high[0], low[1] : high[1]] < 0.5)
        if free.size == 0:
            return False
        y, x = free[rng.integers(len(free))] + low
        canvas.paint(shape, int(y), int(x))
        self.report["exact_search"] += 1
        return True

    def _place_touching(self, canvas: Canvas, shape: Shape, rng: np.random.Generator) -> bool:
        """Put the object where it touches but does not overlap, next to a placed one (preferably one that
        touches nothing yet): an exact search of the positions around that object."""
        lonely = [i for i, touching in enumerate(canvas.touching) if not touching]
        anchors = lonely or list(range(len(canvas.centres)))
        mask = shape.mask.astype(np.float32)
        h, w = shape.mask.shape
        height, width = canvas.labels.shape
        for _ in range(min(self.placement_tries, 5)):
            anchor = anchors[rng.integers(len(anchors))]
            (cy, cx), reach = canvas.centres[anchor], canvas.radii[anchor] + 1
            # top-left corners that keep the centre in the image and the crop near the anchor
            y0 = max(int(cy - reach) - h, int(np.ceil(canvas.margin - shape.centroid[0])), 0)
            x0 = max(int(cx - reach) - w, int(np.ceil(canvas.margin - shape.centroid[1])), 0)
            y1 = min(
                int(cy + reach) + 1, int(np.ceil(height - canvas.margin - shape.centroid[0])), height - h
            )
            x1 = min(int(cx + reach) + 1, int(np.ceil(width - canvas.margin - shape.centroid[1])), width - w)
            if y1 <= y0 or x1 <= x0:
                continue
            occupied = (canvas.labels[y0 : y1 + h - 1, x0 : x1 + w - 1] > 0).astype(np.float32)
            blocked = canvas.blocked[y0 : y1 + h - 1, x0 : x1 + w - 1].astype(np.float32)
            overlap = cv2.matchTemplate(occupied, mask, cv2.TM_CCORR)
            near = cv2.matchTemplate(blocked, mask, cv2.TM_CCORR)
            corners = np.argwhere((overlap < 0.5) & (near > 0.5))
            if corners.size:
                y, x = corners[rng.integers(len(corners))] + (y0, x0)
                canvas.paint(shape, int(y), int(x))
                return True
        return False


def compose_masks(
    stats: StyleStats,
    database: MaskDatabase | None,
    n: int = 20,
    size: int | tuple[int, int] = 512,
    seed: int = 0,
    **options,
) -> list[np.ndarray]:
    """``n`` label images (int32 (H, W)) that imitate a style: LayoutComposer(stats, database,
    **options).compose(n, size, seed)."""
    return LayoutComposer(stats, database, **options).compose(n, size, seed=seed)
