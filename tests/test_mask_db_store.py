"""mask_db.store: the SQLite nucleus database, incremental builds and shape-space queries."""

import numpy as np
import pytest

from mask_db.features import SHAPE_SPACE, shape_features, whole_nuclei
from mask_db.store import MaskDatabase, pack_mask, unpack_mask
from nucleaizer.simulate import random_labels


def label_images(seed: int, count: int = 4) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [random_labels((96, 96), 15, 16, rng) for _ in range(count)]


@pytest.fixture
def database(tmp_path):
    with MaskDatabase(tmp_path / "nuclei.sqlite", create=True) as db:
        for i, labels in enumerate(label_images(0)):
            db.add_labels("set_a", f"img{i}", labels)
        for i, labels in enumerate(label_images(1, 2)):
            db.add_labels("set_b", f"img{i}", labels)
        yield db


def test_pack_unpack_round_trip():
    mask = np.random.default_rng(0).random((13, 7)) > 0.5
    np.testing.assert_array_equal(unpack_mask(pack_mask(mask), 13, 7), mask)


def test_rows_hold_whole_nuclei_with_their_crops(database):
    labels = label_images(0)[0]
    cleaned = whole_nuclei(labels)
    expected = shape_features(cleaned)
    rows = database._connection.execute(
        "SELECT id, label, area FROM nuclei WHERE dataset = 'set_a' AND image = 'img0' ORDER BY label"
    ).fetchall()
    assert [r[1] for r in rows] == expected["label"].tolist()
    np.testing.assert_allclose([r[2] for r in rows], expected["area"])
    crops = database.crops([r[0] for r in rows])
    for crop, label, (y0, x0, y1, x1) in zip(crops, expected["label"], expected["bbox"], strict=True):
        np.testing.assert_array_equal(crop, cleaned[y0:y1, x0:x1] == label)


def test_building_again_adds_nothing(database, tmp_path):
    before = len(database)
    counts = database.add_many(("set_a", f"img{i}", labels) for i, labels in enumerate(label_images(0)))
    assert counts == {"images_added": 0, "images_skipped": 4, "nuclei_added": 0}
    assert len(database) == before
    database.close()
    with MaskDatabase(tmp_path / "nuclei.sqlite") as reopened:  # persisted on disk
        assert len(reopened) == before
        assert reopened.info()["datasets"].keys() == {"set_a", "set_b"}


def test_query_finds_a_nucleus_itself_and_respects_filters(database):
    index = database.index
    ids, distances = database.query(index.shape[:10], k=3)
    assert ids.shape == (10, 3)
    np.testing.assert_array_equal(ids[:, 0], index.ids[:10])
    np.testing.assert_allclose(distances[:, 0], 0, atol=1e-9)
    assert (np.diff(distances, axis=1) >= 0).all()
    median = float(np.median(index.area))
    ids, _ = database.query(index.shape[:50], k=5, area_range=(median, np.inf), sources=["set_b"])
    features = database.features(ids.ravel())
    assert (features["area"] >= median).all()
    rows = database._rows(ids.ravel(), "dataset")
    assert {r[0] for r in rows} == {"set_b"}
    with pytest.raises(ValueError, match="filters"):
        database.query(index.shape[:1], area_range=(1e9, 2e9))
    with pytest.raises(ValueError, match="columns"):
        database.query(np.zeros((2, 3)))
    assert len(SHAPE_SPACE) == 4


def test_empty_missing_and_foreign_files_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="build it first"):
        MaskDatabase(tmp_path / "missing.sqlite")
    with MaskDatabase(tmp_path / "empty.sqlite", create=True) as empty:
        assert empty.info()["nuclei"] == 0
        with pytest.raises(ValueError, match="empty"):
            empty.query(np.zeros((1, 4)))
    (tmp_path / "text.sqlite").write_text("not a database at all " * 100)
    with pytest.raises(ValueError, match="not a mask database"):
        MaskDatabase(tmp_path / "text.sqlite")


def test_image_without_usable_nuclei_is_recorded_once(tmp_path):
    border_only = np.zeros((50, 50), dtype=np.int32)
    border_only[:10, :10] = 1
    with MaskDatabase(tmp_path / "db.sqlite", create=True) as db:
        assert db.add_labels("d", "border", border_only) == 0
        assert db.has_image("d", "border") and len(db) == 0
        assert db.add_many([("d", "border", border_only)])["images_skipped"] == 1
