"""Composed masks imitate real label images: the fluorescence and the colour-tissue groups of dsb2018_train
(skips without ../shared/data)."""

import csv

import cv2
import numpy as np
import pytest

from mask_db.layout import LayoutComposer
from mask_db.stats import compare, style_statistics
from mask_db.store import MaskDatabase

GROUPS = ("gray_darkbg_fluorescence", "colour_brightbg_HE_like")


@pytest.fixture(scope="module")
def dsb(shared_data):
    folder = shared_data / "dsb2018_train"
    with open(folder / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    order = np.random.default_rng(0).permutation(len(rows))
    return folder, [rows[i] for i in order]


def read(folder, row) -> np.ndarray:
    return cv2.imread(str(folder / "labels" / f"{row['id']}.png"), cv2.IMREAD_UNCHANGED).astype(np.int32)


@pytest.fixture(scope="module")
def database(dsb, tmp_path_factory):
    """Nuclei of 60 images of every group, none of them used as a style below."""
    folder, rows = dsb
    with MaskDatabase(tmp_path_factory.mktemp("db") / "dsb.sqlite", create=True) as db:
        db.add_many(("dsb2018_train", row["id"], read(folder, row)) for row in rows[-60:])
        yield db


@pytest.mark.data
@pytest.mark.parametrize("group", GROUPS)
def test_masks_imitate_a_real_group(dsb, database, group):
    folder, rows = dsb
    chosen = [row for row in rows[:-60] if row["group"] == group][:30]
    style = style_statistics([read(folder, row) for row in chosen])
    composer = LayoutComposer(style, database)
    # as much field of view as the real images hold, so every one of them is imitated about in proportion
    masks = composer.compose(int(round(style.pixels.sum() / 256**2)), 256, seed=0)
    match = compare(style_statistics(masks), style)
    assert match["objects_generated"] >= 300
    assert match["median_area_ratio"] == pytest.approx(1, abs=0.15)
    assert match["density_ratio"] == pytest.approx(1, abs=0.2)
    assert match["area_ks_pvalue"] > 0.01
    assert match["touching_fraction_generated"] == pytest.approx(match["touching_fraction_real"], abs=0.08)
    assert composer.report["left_out"] <= 0.01 * composer.report["asked"]
