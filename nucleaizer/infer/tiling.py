"""Prediction of a large image in overlapping tiles, merged without seams (docs/method.md section 6).

Tiles of ``tile_size`` px overlap by at least ``overlap`` px and go to the predictor in batches. A predictor
with a ``grid_px`` attribute (a network whose coarsest feature map has that stride) gets tiles that start on
multiples of it, so every tile sees the image on the same feature grid as the whole image does (a tile
shifted off that grid changes the network's output everywhere, not only near the tile's edges); the last
tile of a row or column may then be shorter. An object is *cut* in a tile when its mask touches an edge of
that tile that lies inside the image. Merging:

1. Every tile *owns* a core: the part of the image closer to its centre than to its neighbours' (the tiles'
   overlaps split down the middle). An uncut object whose centre lies in another tile's core, and which
   that tile holds uncut too, is that tile's to report: it is dropped here. (Near its own edges a tile sees
   a truncated neighbourhood and finds objects, or misses them, where the whole image would not.)
2. Two detections from different tiles are the same object when they agree where both tiles see the image:
   with ``R`` the intersection of the two tiles, the IoU of (A within R) and (B within R) is at least
   ``match_iou``. (Plain IoU would not do: the piece of a cut object is much smaller than the whole.) When
   one of them is a cut piece, the intersection is measured against the smaller of the two parts instead:
   inside one tile a cut object can fall apart into several pieces (it may be connected only through pixels
   outside that tile), each of which lies inside the other tile's view of the object.
3. An object seen whole (not cut) in a tile is taken from that tile; among duplicates seen whole in several
   tiles the one farthest from its tile's internal edges wins (most context; then the highest score), and
   every cut piece of it is dropped.
4. An object larger than the overlap can be cut in every tile that holds it. Its pieces match each other in
   the shared strips; they are joined (union of the masks, highest score).

The pairwise overlaps are one sparse matrix product over the detections near tile borders; per-object work
uses bounding-box crops only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from nucleaizer.instances import Instances

# tiles (H, W, 3) uint8 -> per tile (masks bool (N, H, W), scores float32 (N,)), or per tile an Instances in
# tile coordinates (boxes + crops: no full-tile mask per object, which is what costs a Mask R-CNN most)
InstancePredictor = Callable[[list[np.ndarray]], list[tuple[np.ndarray, np.ndarray] | Instances]]


@dataclass(frozen=True)
class TileParams:
    """How an image is cut into tiles and how tile predictions are merged (config keys of conf/infer.yaml)."""

    tile_size: int = 512
    overlap: int = 64
    batch_size: int = 4
    match_iou: float = 0.5
    min_input_px: int = 64  # smaller images are padded up to this before prediction

    def __post_init__(self) -> None:
        # without overlap, the two pieces of a cut object share no pixel and could not be matched
        if self.tile_size < 2 or self.overlap < 1 or self.overlap >= self.tile_size:
            raise ValueError(
                f"need 1 <= tile_overlap < tile_size, got tile_size={self.tile_size}, tile_overlap={self.overlap}"
            )
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not 0.0 < self.match_iou <= 1.0:
            raise ValueError(f"match_iou must lie in (0, 1], got {self.match_iou}")


def tile_starts(length: int, tile_size: int, overlap: int, grid: int = 1) -> np.ndarray:
    """Start offsets (int64) of tiles covering ``[0, length)`` that overlap by at least ``overlap``.

    grid = 1: full-size tiles spread evenly. grid > 1: every start is a multiple of ``grid``; the tiles step
    by the largest multiple of ``grid`` that keeps the overlap, and the last tile (which may overhang the end
    of the image, and is then cut short) starts on the first multiple that lets it reach the end.
    """
    if length <= tile_size:
        return np.zeros(1, dtype=np.int64)
    if grid == 1:
        count = int(np.ceil((length - overlap) / (tile_size - overlap)))
        return np.round(np.linspace(0, length - tile_size, count)).astype(np.int64)
    step = (tile_size - overlap) // grid * grid
    if step < grid:
        raise ValueError(
            f"tile_size - tile_overlap must be at least the predictor's feature grid ({grid} px), got "
            f"tile_size={tile_size}, tile_overlap={overlap}"
        )
    last = -(-(length - tile_size) // grid) * grid
    return np.append(np.arange(0, last, step), last).astype(np.int64)


def tile_boxes(shape: tuple[int, int], tile_size: int, overlap: int, grid: int = 1) -> np.ndarray:
    """Tiles of an image of ``shape`` (H, W) as int64 (T, 4) boxes (y0, x0, y1, x1), row by row."""
    ys = tile_starts(shape[0], tile_size, overlap, grid)
    xs = tile_starts(shape[1], tile_size, overlap, grid)
    y0, x0 = np.meshgrid(ys, xs, indexing="ij")
    y0, x0 = y0.ravel(), x0.ravel()
    return np.stack(
        [y0, x0, np.minimum(y0 + tile_size, shape[0]), np.minimum(x0 + tile_size, shape[1])], axis=1
    )


def _core_edges(starts: np.ndarray, ends: np.ndarray, length: int) -> np.ndarray:
    """Edges (float, (n + 1,)) of the cores of tiles [starts, ends) along one axis: overlaps split in the middle."""
    return np.concatenate([[0.0], (starts[1:] + ends[:-1]) / 2, [float(length)]])


def _owner_tiles(instances: Instances, boxes: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """int64 (N,): the tile (row of ``boxes``) whose core holds each instance's box centre."""
    ys, first_y = np.unique(boxes[:, 0], return_index=True)
    xs, first_x = np.unique(boxes[:, 1], return_index=True)
    tile_at = np.empty((len(ys), len(xs)), np.int64)  # the tiles form a grid of rows and columns
    tile_at[np.searchsorted(ys, boxes[:, 0]), np.searchsorted(xs, boxes[:, 1])] = np.arange(len(boxes))
    y_edges = _core_edges(ys, boxes[first_y, 2], shape[0])
    x_edges = _core_edges(xs, boxes[first_x, 3], shape[1])
    centre = (instances.boxes[:, :2] + instances.boxes[:, 2:]) / 2
    row = np.clip(np.searchsorted(y_edges, centre[:, 0], side="right") - 1, 0, len(ys) - 1)
    col = np.clip(np.searchsorted(x_edges, centre[:, 1], side="right") - 1, 0, len(xs) - 1)
    return tile_at[row, col]


def _held_uncut(boxes_of: np.ndarray, tiles: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """bool (N,): each box (y0, x0, y1, x1) lies in its tile (row of ``tiles``) without touching an edge of the
    tile that lies inside the image (an instance found in a tile is cut there when this is False)."""
    return (
        ((boxes_of[:, 0] > tiles[:, 0]) | (tiles[:, 0] == 0))
        & ((boxes_of[:, 1] > tiles[:, 1]) | (tiles[:, 1] == 0))
        & ((boxes_of[:, 2] < tiles[:, 2]) | (tiles[:, 2] == shape[0]))
        & ((boxes_of[:, 3] < tiles[:, 3]) | (tiles[:, 3] == shape[1]))
    )


def _pad_to_min_size(image: np.ndarray, min_px: int) -> np.ndarray:
    """Image padded at the bottom and right to at least ``min_px`` per side with its per-channel median."""
    pad_y, pad_x = max(0, min_px - image.shape[0]), max(0, min_px - image.shape[1])
    if not pad_y and not pad_x:
        return image
    padded = np.empty((image.shape[0] + pad_y, image.shape[1] + pad_x, *image.shape[2:]), image.dtype)
    padded[...] = np.median(image.reshape(-1, *image.shape[2:]), axis=0).astype(image.dtype)
    padded[: image.shape[0], : image.shape[1]] = image
    return padded


def predict_tiles(
    image: np.ndarray, predictor: InstancePredictor, boxes: np.ndarray, batch_size: int
) -> list[Instances]:
    """Run the predictor on the tiles ``boxes`` of ``image`` in batches; instances come back in image coordinates."""
    per_tile: list[Instances] = []
    for start in range(0, len(boxes), batch_size):
        batch = boxes[start : start + batch_size]
        tiles = [np.ascontiguousarray(image[y0:y1, x0:x1]) for y0, x0, y1, x1 in batch]
        outputs = predictor(tiles)
        if len(outputs) != len(tiles):
            raise ValueError(f"predictor returned {len(outputs)} results for {len(tiles)} tiles")
        for output, (y0, x0, _, _) in zip(outputs, batch, strict=True):
            if isinstance(output, Instances):
                per_tile.append(output.shifted((int(y0), int(x0))))
            else:
                masks, scores = output
                per_tile.append(Instances.from_masks(masks, scores, offset=(int(y0), int(x0))))
    return per_tile


def _context_margin(
    instances: Instances, tile_of: np.ndarray, boxes: np.ndarray, shape: tuple[int, int]
) -> np.ndarray:
    """int64 (N,): distance in px from each instance's box to the nearest edge of its tile inside the image."""
    tile = boxes[tile_of]
    b = instances.boxes
    far = np.iinfo(np.int64).max
    gaps = np.stack(
        [
            np.where(tile[:, 0] > 0, b[:, 0] - tile[:, 0], far),
            np.where(tile[:, 1] > 0, b[:, 1] - tile[:, 1], far),
            np.where(tile[:, 2] < shape[0], tile[:, 2] - b[:, 2], far),
            np.where(tile[:, 3] < shape[1], tile[:, 3] - b[:, 3], far),
        ]
    )
    return gaps.min(axis=0)


def _area_inside(crop: np.ndarray, box: np.ndarray, rect: np.ndarray) -> int:
    """Pixels of an instance (crop at ``box``) that lie inside the rectangle ``rect`` (y0, x0, y1, x1)."""
    y0, x0 = max(rect[0] - box[0], 0), max(rect[1] - box[1], 0)
    y1, x1 = max(rect[2] - box[0], 0), max(rect[3] - box[1], 0)
    return int(crop[y0:y1, x0:x1].sum())


def _matching_pairs(
    instances: Instances,
    tile_of: np.ndarray,
    cut: np.ndarray,
    boxes: np.ndarray,
    shape: tuple[int, int],
    match_iou: float,
) -> np.ndarray:
    """int64 (P, 2) pairs (i < j) of instances from different tiles that are the same object (see module doc)."""
    b = instances.boxes
    # only instances reaching into another tile can have a partner
    overlaps_tile = (
        (b[:, None, 0] < boxes[None, :, 2])
        & (b[:, None, 2] > boxes[None, :, 0])
        & (b[:, None, 1] < boxes[None, :, 3])
        & (b[:, None, 3] > boxes[None, :, 1])
    )
    overlaps_tile[np.arange(len(b)), tile_of] = False
    candidates = np.flatnonzero(overlaps_tile.any(axis=1))
    if len(candidates) < 2:
        return np.zeros((0, 2), np.int64)
    rows, cols = [], []
    for row, index in enumerate(candidates):
        yy, xx = np.nonzero(instances.crops[index])
        rows.append(np.full(len(yy), row, np.int64))
        cols.append((yy + b[index, 0]) * shape[1] + xx + b[index, 1])
    pixels = sparse.csr_matrix(
        (np.ones(sum(len(r) for r in rows), np.int32), (np.concatenate(rows), np.concatenate(cols))),
        shape=(len(candidates), shape[0] * shape[1]),
    )
    shared = sparse.triu(pixels @ pixels.T, k=1).tocoo()
    i, j, inter = candidates[shared.row], candidates[shared.col], shared.data.astype(np.int64)
    different_tiles = tile_of[i] != tile_of[j]
    i, j, inter = i[different_tiles], j[different_tiles], inter[different_tiles]
    area_i = np.array(
        [_area_inside(instances.crops[a], b[a], boxes[tile_of[c]]) for a, c in zip(i, j, strict=True)]
    )
    area_j = np.array(
        [_area_inside(instances.crops[c], b[c], boxes[tile_of[a]]) for a, c in zip(i, j, strict=True)]
    )
    iou = inter / np.maximum(area_i + area_j - inter, 1)
    over_smaller = inter / np.maximum(np.minimum(area_i, area_j), 1)
    keep = np.where(cut[i] | cut[j], over_smaller, iou) >= match_iou
    return np.stack([i[keep], j[keep]], axis=1)


def _components(n: int, pairs: np.ndarray) -> np.ndarray:
    """Connected-component id (int, (n,)) of each node of the graph with edges ``pairs``."""
    graph = sparse.coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def _union(instances: Instances, members: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Box, crop and score (the highest) of the union of several instances."""
    boxes = instances.boxes[members]
    box = np.concatenate([boxes[:, :2].min(axis=0), boxes[:, 2:].max(axis=0)])
    crop = np.zeros((box[2] - box[0], box[3] - box[1]), dtype=bool)
    for index in members:
        y0, x0, y1, x1 = instances.boxes[index] - np.tile(box[:2], 2)
        crop[y0:y1, x0:x1] |= instances.crops[index]
    return box, crop, float(instances.scores[members].max())


def merge_tiles(
    per_tile: list[Instances], boxes: np.ndarray, shape: tuple[int, int], match_iou: float
) -> Instances:
    """One set of instances for the whole image from the instances of each tile (image coordinates)."""
    instances = Instances.concat(per_tile)
    if len(boxes) == 1 or not len(instances):
        return instances
    tile_of = np.repeat(np.arange(len(per_tile)), [len(p) for p in per_tile])
    cut = ~_held_uncut(instances.boxes, boxes[tile_of], shape)  # touches an edge of its tile inside the image

    # uncut objects centred in another tile's core, which holds them uncut too, are that tile's to report
    owner = _owner_tiles(instances, boxes, shape)
    reported_elsewhere = ~cut & (owner != tile_of) & _held_uncut(instances.boxes, boxes[owner], shape)
    kept = np.flatnonzero(~reported_elsewhere)
    instances, tile_of, cut = instances.select(kept), tile_of[kept], cut[kept]
    pairs = _matching_pairs(instances, tile_of, cut, boxes, shape, match_iou)
    whole_pair = ~cut[pairs[:, 0]] & ~cut[pairs[:, 1]]
    cut_pair = cut[pairs[:, 0]] & cut[pairs[:, 1]]
    mixed_pair = ~whole_pair & ~cut_pair

    # whole objects: one per group of duplicates, the one with the most context around it (farthest from the
    # internal edges of its tile: a prediction near a tile edge sees a truncated neighbourhood), then by score
    group = _components(len(instances), pairs[whole_pair])
    margin = _context_margin(instances, tile_of, boxes, shape)
    order = np.lexsort((-instances.scores, -margin, group))
    first_of_group = np.r_[True, group[order][1:] != group[order][:-1]]
    keep_whole = order[first_of_group & ~cut[order]]

    # cut pieces of objects seen whole somewhere are dropped; the remaining pieces are joined
    explained = np.zeros(len(instances), dtype=bool)
    explained[pairs[mixed_pair].ravel()] = True
    pieces = np.flatnonzero(cut & ~explained)
    joined = []
    if len(pieces):
        piece_pairs = pairs[cut_pair]
        piece_pairs = piece_pairs[~explained[piece_pairs].any(axis=1)]
        position = np.full(len(instances), -1, np.int64)
        position[pieces] = np.arange(len(pieces))
        piece_group = _components(len(pieces), position[piece_pairs])
        for g in np.unique(piece_group):
            joined.append(_union(instances, pieces[piece_group == g]))
    joined_instances = Instances(
        np.array([j[0] for j in joined], np.int64), [j[1] for j in joined], np.array([j[2] for j in joined])
    )
    return Instances.concat([instances.select(keep_whole), joined_instances])


def predict_image(
    image: np.ndarray, predictor: InstancePredictor, params: TileParams = TileParams()
) -> Instances:
    """Instances of an image (uint8 (H, W, 3)) of any size, predicted in overlapping tiles and merged."""
    shape = image.shape[:2]
    padded = _pad_to_min_size(image, params.min_input_px)
    boxes = tile_boxes(
        padded.shape[:2], params.tile_size, params.overlap, int(getattr(predictor, "grid_px", 1))
    )
    per_tile = predict_tiles(padded, predictor, boxes, params.batch_size)
    merged = merge_tiles(per_tile, boxes, padded.shape[:2], params.match_iou)
    return merged if padded is image else merged.clipped(shape)
