"""Tiles merged without seams: any object, cut by any tile edge, comes out as exactly one object."""

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from nucleaizer import simulate
from nucleaizer.infer.tiling import TileParams, predict_image, tile_boxes, tile_starts
from nucleaizer.instances import Instances, paint_instances
from tests.helpers.predictors import (
    objects_image,
    same_partition,
    threshold_predictor,
    threshold_predictor_labels,
)


def tiled_labels(image, predictor=threshold_predictor, **params):
    instances = predict_image(image, predictor, TileParams(**params))
    return paint_instances(instances, image.shape[:2])[0]


def test_tiles_cover_the_image_with_at_least_the_overlap():
    for length, size, overlap in [
        (1000, 512, 64),
        (513, 512, 64),
        (2048, 512, 64),
        (100, 512, 64),
        (300, 64, 63),
    ]:
        starts = tile_starts(length, size, overlap)
        assert starts[0] == 0 and starts[-1] + min(size, length) == length
        assert (np.diff(starts) <= size - overlap).all()
    boxes = tile_boxes((700, 300), 256, 32)
    assert len(boxes) == 3 * 2 and (boxes[:, 2] - boxes[:, 0] == 256).all() and boxes[:, 3].max() == 300
    assert tile_boxes((50, 60), 512, 64).tolist() == [[0, 0, 50, 60]]


def test_tiles_start_on_the_predictors_feature_grid():
    for length, size, overlap, grid in [
        (1000, 512, 64, 64),
        (5776, 512, 64, 64),
        (513, 512, 64, 64),
        (2852, 512, 192, 64),
        (300, 100, 20, 16),
    ]:
        starts = tile_starts(length, size, overlap, grid)
        assert (starts % grid == 0).all() and starts[0] == 0
        assert starts[-1] + size >= length > starts[-1] and (np.diff(starts) <= size - overlap).all()
    boxes = tile_boxes((1000, 700), 512, 64, 64)
    assert (
        boxes[:, 2].max() == 1000 and boxes[:, 3].max() == 700 and (boxes[:, 2:] - boxes[:, :2] <= 512).all()
    )
    with pytest.raises(ValueError, match="feature grid"):
        tile_starts(1000, 100, 60, 64)


class GridThresholdPredictor:
    """The threshold predictor, announcing a 16 px feature grid like a network would."""

    grid_px = 16

    def __init__(self):
        self.shapes = []

    def __call__(self, tiles):
        self.shapes += [t.shape[:2] for t in tiles]
        return threshold_predictor(tiles)


def test_grid_aligned_tiles_still_merge_without_seams():
    predictor = GridThresholdPredictor()
    for seed, diameter in [(0, 12), (1, 30)]:
        image = objects_image(simulate.random_labels((230, 190), 60, diameter, np.random.default_rng(seed)))
        out = tiled_labels(image, predictor, tile_size=64, overlap=16)
        assert same_partition(out, threshold_predictor_labels(image))
    assert set(predictor.shapes) > {(64, 64)}  # the last row and column are cut short


def test_objects_a_tile_invents_near_its_own_edges_are_left_to_the_tile_that_owns_them():
    """A predictor that sees a false object 4-9 px from every tile's top-left corner (as a network may near
    the zero padding around a tile): the whole image shows it once, at the image corner; tiled prediction must
    not add one per tile, because each of those lies in the core of a neighbouring tile that sees no object."""

    def with_corner_artefact(tiles):
        artefact = Instances(np.array([[4, 4, 10, 10]]), [np.ones((6, 6), bool)], np.array([0.6], np.float32))
        return [
            Instances.concat([Instances.from_masks(masks, scores), artefact])
            for masks, scores in threshold_predictor(tiles)
        ]

    labels = simulate.random_labels((300, 260), 30, 14, np.random.default_rng(3))
    labels[:16, :16] = 0
    image = objects_image(labels)
    whole = paint_instances(with_corner_artefact([image])[0], image.shape[:2])[0]
    out = tiled_labels(image, with_corner_artefact, tile_size=100, overlap=24)
    assert len(tile_boxes(image.shape[:2], 100, 24)) > 4
    assert same_partition(out, whole)


def test_object_straddling_a_seam_is_one_object():
    labels = np.zeros((200, 200), np.int32)
    yy, xx = np.mgrid[:200, :200]
    labels[(yy - 100) ** 2 + (xx - 100) ** 2 <= 15**2] = 1  # on the vertical and horizontal seams
    labels[(yy - 40) ** 2 + (xx - 100) ** 2 <= 10**2] = 2  # on the vertical seam only
    image = objects_image(labels)
    boxes = tile_boxes(image.shape[:2], 128, 32)
    assert len(boxes) == 4  # the discs really lie across tile edges
    out = tiled_labels(image, tile_size=128, overlap=32)
    assert out.max() == 2 and same_partition(out, threshold_predictor_labels(image))


def test_objects_larger_than_the_overlap_and_than_a_tile_are_joined():
    labels = np.zeros((300, 300), np.int32)
    labels[20:40, 5:295] = 1  # a bar across every tile of its row
    labels[60:280, 140:170] = 2  # a tall bar across the horizontal seams
    yy, xx = np.mgrid[:300, :300]
    labels[((yy - 200) / 45) ** 2 + ((xx - 70) / 30) ** 2 <= 1] = 3  # bigger than the overlap
    image = objects_image(labels)
    whole = threshold_predictor_labels(image)
    assert whole.max() == 3
    for tile_size, overlap in [(100, 10), (128, 32), (64, 8)]:
        out = tiled_labels(image, tile_size=tile_size, overlap=overlap)
        assert same_partition(out, whole), (tile_size, overlap)


@settings(max_examples=12, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    tile_size=st.sampled_from([48, 64, 100, 128]),
    overlap=st.sampled_from([1, 8, 16, 32]),
    diameter=st.sampled_from([8, 16, 30]),
)
# an object that falls apart into several pieces inside one tile (connected only outside it)
@example(seed=2393, tile_size=48, overlap=1, diameter=30)
def test_tiled_prediction_equals_whole_image_prediction(seed, tile_size, overlap, diameter):
    rng = np.random.default_rng(seed)
    labels = simulate.random_labels((230, 190), 60, diameter, rng)
    image = objects_image(labels)
    whole = threshold_predictor_labels(image)
    out = tiled_labels(image, tile_size=tile_size, overlap=overlap, batch_size=3)
    assert same_partition(out, whole)


def test_tiles_go_to_the_predictor_in_batches_of_the_given_size():
    calls = []

    def counting(tiles):
        calls.append(len(tiles))
        assert all(t.shape == (64, 64, 3) for t in tiles)
        return threshold_predictor(tiles)

    image = objects_image(simulate.random_labels((200, 200), 20, 12, np.random.default_rng(0)))
    tiled_labels(image, counting, tile_size=64, overlap=16, batch_size=4)
    n_tiles = len(tile_boxes((200, 200), 64, 16))
    assert sum(calls) == n_tiles and max(calls) == 4 and len(calls) == -(-n_tiles // 4)


def test_small_images_are_padded_for_the_predictor_and_cut_back():
    seen = []

    def recording(tiles):
        seen.extend(t.shape for t in tiles)
        return threshold_predictor(tiles)

    labels = np.zeros((10, 20), np.int32)
    labels[3:8, 12:20] = 1  # touches the right border, where padding starts
    out = tiled_labels(objects_image(labels), recording, min_input_px=64)
    assert seen == [(64, 64, 3)]
    assert out.shape == (10, 20) and same_partition(out, threshold_predictor_labels(objects_image(labels)))


def test_bad_predictor_output_is_reported():
    image = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match="results for"):
        predict_image(image, lambda tiles: [], TileParams(min_input_px=1))
    with pytest.raises(ValueError, match="masks"):
        predict_image(
            image, lambda tiles: [(np.zeros((2, 32, 32), bool), np.zeros(3))], TileParams(min_input_px=1)
        )


def test_predictors_may_return_instances_instead_of_full_masks():
    def as_instances(tiles):
        return [Instances.from_masks(masks, scores) for masks, scores in threshold_predictor(tiles)]

    image = objects_image(simulate.random_labels((150, 170), 30, 24, np.random.default_rng(7)))
    full = tiled_labels(image, tile_size=64, overlap=16)
    compact = tiled_labels(image, as_instances, tile_size=64, overlap=16)
    np.testing.assert_array_equal(full, compact)
    assert same_partition(compact, threshold_predictor_labels(image))
