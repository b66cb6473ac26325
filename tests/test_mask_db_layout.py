"""mask_db.layout and mask_db.stats: composed masks match the style they imitate, never overlap, are seeded;
bad inputs give clear errors."""

import numpy as np
import pytest

from mask_db.features import touching_labels
from mask_db.layout import LayoutComposer, compose_masks
from mask_db.stats import compare, nearest_neighbour_distances, style_statistics
from mask_db.store import MaskDatabase
from nucleaizer.simulate import random_labels


def procedural_style(
    seed: int, count: int, size: int = 256, objects=(30, 60), diameter=(14, 24)
) -> list[np.ndarray]:
    """Label images of one look: per image a nucleus count and diameter drawn from the given ranges."""
    rng = np.random.default_rng(seed)
    return [
        random_labels((size, size), int(rng.integers(*objects)), float(rng.uniform(*diameter)), rng)
        for _ in range(count)
    ]


@pytest.fixture(scope="module")
def database(tmp_path_factory):
    with MaskDatabase(tmp_path_factory.mktemp("db") / "nuclei.sqlite", create=True) as db:
        db.add_many(("procedural", f"img{i}", labels) for i, labels in enumerate(procedural_style(100, 16)))
        yield db


@pytest.fixture(scope="module")
def style():
    return style_statistics(procedural_style(7, 16))


@pytest.fixture(scope="module", params=[0.0, 0.5, 1.0], ids=["database", "half", "simulated"])
def composed(request, style, database):
    composer = LayoutComposer(style, database, simulated_share=request.param)
    masks = composer.compose(16, 256, seed=0)
    return masks, composer.report, request.param


def test_composed_masks_match_the_style(style, composed):
    masks, report, share = composed
    match = compare(style_statistics(masks), style)
    assert match["objects_generated"] >= 300  # "a few hundred objects"
    assert match["median_area_ratio"] == pytest.approx(1, abs=0.15)
    assert match["density_ratio"] == pytest.approx(1, abs=0.2)
    assert match["area_ks_pvalue"] > 0.01
    assert match["touching_fraction_generated"] == pytest.approx(match["touching_fraction_real"], abs=0.06)
    assert match["nn_distance_median_ratio"] == pytest.approx(1, abs=0.25)
    for name in ("shape_ratio", "eccentricity", "solidity", "circularity"):
        generated, real = match[f"{name}_median"]
        assert generated == pytest.approx(real, rel=0.1), name
    # the share simulated; a simulated shape never accepted is replaced by a database one
    asked_simulated = report["simulated"] + report["simulated_not_accepted"]
    assert asked_simulated == pytest.approx(share * report["asked"], abs=20)
    assert report["simulated"] >= 0.8 * share * report["asked"]
    assert report["from_database"] == report["asked"] - report["simulated"]


def test_masks_are_label_images_of_the_requested_size_and_never_overlap(composed):
    masks, report, _ = composed
    assert all(m.shape == (256, 256) and m.dtype == np.int32 for m in masks)
    # every placed object is still there: none was painted over, wholly or to a sliver
    assert sum(int(m.max()) for m in masks) == report["placed"] == report["asked"] - report["left_out"]
    for labels in masks:
        ids = np.unique(labels)
        np.testing.assert_array_equal(ids, np.arange(ids.size))  # ids 1..N, no gaps
        assert np.bincount(labels.ravel())[1:].min() >= 4


def test_no_touching_requested_means_one_free_pixel_between_all_objects(style, database):
    masks = LayoutComposer(style, database, touch_probability=0.0).compose(6, 256, seed=3)
    assert sum(touching_labels(m).size for m in masks) == 0
    heavy = LayoutComposer(style, database, touch_probability=0.5).compose(6, 256, seed=3)
    fraction = sum(touching_labels(m).size for m in heavy) / sum(int(m.max()) for m in heavy)
    assert fraction == pytest.approx(0.5, abs=0.1)


def test_same_seed_same_masks(style, database):
    first = LayoutComposer(style, database).compose(3, 128, seed=11)
    second = LayoutComposer(style, database).compose(3, 128, seed=11)
    other = LayoutComposer(style, database).compose(3, 128, seed=12)
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    assert all(
        np.array_equal(a, b)
        for a, b in zip(first, compose_masks(style, database, 3, 128, seed=11), strict=True)
    )
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def clark_evans(masks) -> float:
    """Mean nearest-neighbour distance over its value for the same density placed at random (< 1: clustered)."""
    from mask_db.features import shape_features

    distances = np.concatenate([nearest_neighbour_distances(shape_features(m)["centroid"]) for m in masks])
    density = sum(int(m.max()) for m in masks) / sum(m.size for m in masks)
    return float(distances.mean() / (0.5 / np.sqrt(density)))


def test_clustered_and_dense_layouts_are_reachable(database):
    rng = np.random.default_rng(4)
    clustered = []
    for _ in range(6):  # nuclei packed into one corner quarter of each image
        labels = np.zeros((256, 256), dtype=np.int32)
        labels[:128, :128] = random_labels((128, 128), 40, 14, rng)
        clustered.append(labels)
    style = style_statistics(clustered)
    masks = LayoutComposer(style, database, simulated_share=1.0, new_cluster_probability=0.0).compose(
        6, 256, seed=0
    )
    assert clark_evans(clustered) < 0.8 and clark_evans(masks) < 0.8
    assert compare(style_statistics(masks), style)["nn_distance_median_ratio"] == pytest.approx(1, abs=0.25)

    dense = style_statistics(procedural_style(9, 6, size=128, objects=(120, 140), diameter=(12, 14)))
    composer = LayoutComposer(dense, database)
    masks = composer.compose(6, 128, seed=0)
    assert dense.density * 128 * 128 > 60
    assert compare(style_statistics(masks), dense)["density_ratio"] == pytest.approx(1, abs=0.1)


def test_simulated_only_needs_no_database(style):
    masks = LayoutComposer(style, None, simulated_share=1.0).compose(2, 128, seed=0)
    assert all(m.max() > 0 for m in masks)


def test_bad_inputs_give_clear_results_or_messages(database, tmp_path):
    empty = style_statistics([np.zeros((64, 64), dtype=np.uint16)] * 3)
    with pytest.raises(ValueError, match="no whole nucleus"):
        LayoutComposer(empty, database)
    with pytest.raises(ValueError, match="no label images"):
        style_statistics([])

    border_only = np.zeros((64, 64), dtype=np.int32)
    border_only[:10, :10], border_only[50:, 30:40] = 1, 2
    with pytest.raises(ValueError, match="border"):
        LayoutComposer(style_statistics([border_only]), database)

    single = np.zeros((64, 64), dtype=np.int32)
    single[20:30, 20:32] = 1
    one = style_statistics([single])
    assert one.nn_distances.size == 0 and one.touching_fraction == 0
    masks = LayoutComposer(one, database).compose(4, 128, seed=0)  # density 1 per 64x64: about 4 per mask
    assert sum(int(m.max()) for m in masks) == pytest.approx(16, abs=2)

    big = np.zeros((300, 300), dtype=np.int32)
    big[50:250, 40:260] = 1
    with pytest.raises(ValueError, match="do not fit"):
        LayoutComposer(style_statistics([big]), database).compose(1, 128)

    with (
        MaskDatabase(tmp_path / "empty.sqlite", create=True) as nothing,
        pytest.raises(ValueError, match="empty"),
    ):
        LayoutComposer(one, nothing)
    with pytest.raises(ValueError, match="no mask database"):
        LayoutComposer(one, None, simulated_share=0.5)
    with pytest.raises(ValueError, match="simulated_share"):
        LayoutComposer(one, database, simulated_share=1.5)
