"""The stylegen stage's masks: the nuclei a pre-segmentation missed, found by the classical segmentation, and
touching nuclei parted for the generator."""

import shutil

import numpy as np
import pytest

from nucleaizer import io, pipeline, simulate
from nucleaizer.errors import UserError
from nucleaizer.pipeline import preseg
from nucleaizer.pipeline.stylegen import generator_mask, training_masks, unlabelled_nuclei
from nucleaizer.run_folder import RunFolder
from tests.helpers.configs import compose_demo_train
from tests.helpers.threads import one_thread  # noqa: F401 (autouse fixture)


def test_unlabelled_nuclei_are_the_missed_ones_and_never_a_labelled_pixel():
    image, labels = simulate.sample("fluorescence", size=160, diameter_px=14, density=0.3, seed=3)
    ids = np.unique(labels)[1:]
    missed_ids = ids[::2]
    kept = np.where(np.isin(labels, missed_ids), 0, labels)
    missed = np.isin(labels, missed_ids)

    found = unlabelled_nuclei(image, kept) > 0
    assert not (found & (kept > 0)).any()
    # most pixels of the missed nuclei, little else
    assert (found & missed).sum() > 0.7 * missed.sum()
    assert (found & (labels == 0)).sum() < 0.3 * found.sum()
    # complete labels leave (almost) nothing to ignore
    assert (unlabelled_nuclei(image, labels) > 0).sum() < 0.05 * missed.sum()


def test_missed_nuclei_are_background_ignored_or_added_to_the_masks():
    image, labels = simulate.sample("fluorescence", size=160, diameter_px=14, density=0.3, seed=3)
    kept = np.where(np.isin(labels, np.unique(labels)[1::2]), 0, labels)  # every second nucleus missed
    pairs = [("a", image, kept)]
    missed = unlabelled_nuclei(image, kept) > 0

    masks, ignore, share = training_masks(pairs, "background")
    np.testing.assert_array_equal(masks[0], kept > 0)
    assert ignore is None and share is None
    masks, ignore, share = training_masks(pairs, "ignore")
    np.testing.assert_array_equal(masks[0], kept > 0)
    np.testing.assert_array_equal(ignore[0], missed)
    assert share == missed.mean() > 0.05
    masks, ignore, share = training_masks(pairs, "nuclei")
    np.testing.assert_array_equal(masks[0], (kept > 0) | missed)
    assert ignore is None and share == missed.mean()


def test_touching_nuclei_are_parted_in_the_generator_mask_and_nothing_else_changes():
    labels = np.zeros((12, 16), np.int32)
    labels[2:8, 2:8] = 1
    labels[2:8, 8:13] = 2  # touches nucleus 1 along column 7 | 8
    labels[9:11, 2:4] = 3  # alone
    np.testing.assert_array_equal(generator_mask(labels, separate=False), labels > 0)
    parted = generator_mask(labels, separate=True)
    assert not parted[2:8, 7:9].any()  # the line where 1 and 2 touch is background
    expected = labels > 0
    expected[2:8, 7:9] = False
    np.testing.assert_array_equal(parted, expected)  # edges against the background and lone nuclei are kept


def test_missed_nuclei_added_to_the_masks_are_parted_from_the_labelled_ones():
    image, labels = simulate.sample("fluorescence", size=160, diameter_px=14, density=0.5, seed=4)
    kept = np.where(np.isin(labels, np.unique(labels)[1::2]), 0, labels)
    (joined,), _, _ = training_masks([("a", image, kept)], "nuclei")
    (parted,), _, _ = training_masks([("a", image, kept)], "nuclei", separate=True)
    assert parted.sum() < joined.sum() and not (parted & ~joined).any()
    # a labelled nucleus and a missed one never share an edge in the parted mask
    missed = unlabelled_nuclei(image, kept) > 0
    labelled_edge = (kept > 0) & parted
    assert not (np.roll(labelled_edge, 1, axis=1) & missed & parted).any()


def test_the_stage_leaves_the_nuclei_the_preseg_missed_out_of_pix2pix(tmp_path):
    def config(*overrides):
        return compose_demo_train(
            tmp_path,
            "profile=tiny",
            "style=auto",
            "compare=[none]",
            "preseg.method=classical",
            "size.diameter_px=30",
            "target.demo.n_target=4",
            "target.demo.image_size=96",
            "stylegen.missed_nuclei=ignore",
            *overrides,
        )

    pipeline.run(config("stages=[preseg,sizes,styles]"))
    # a pre-segmentation that missed every second nucleus the classical segmentation finds
    labels_folder = preseg.labels_folder(RunFolder(tmp_path / "run"))
    for path in sorted(labels_folder.glob("*.png")):
        labels = io.read_labels(path)
        io.write_labels(path, np.where(labels % 2 == 0, 0, labels))
    report = pipeline.run(config("stages=[stylegen]"))
    shares = report["stages"]["stylegen"]["summary"]["missed_share"]
    assert shares and all(share > 0.01 for share in shares.values()), shares
    with pytest.raises(UserError, match="stylegen.missed_nuclei"):
        pipeline.run(config("stages=[stylegen]", "stylegen.missed_nuclei=labels"))
    # GTstyle's labels are complete: nothing is ignored
    given = shutil.copytree(labels_folder, tmp_path / "labels")
    report = pipeline.run(config("stages=[styles,stylegen]", "style=gt", f"target.labels={given}"))
    assert report["stages"]["stylegen"]["summary"]["missed_share"] == {"0": None}
    # nor in AUTOstyle's pairs taught by the target's labels (the ablation), which needs them
    with pytest.raises(UserError, match="target.labels"):
        pipeline.run(config("stages=[styles,stylegen]", "stylegen.masks_from=labels", "target.labels=null"))
    with pytest.raises(UserError, match="stylegen.masks_from"):
        pipeline.run(config("stages=[styles,stylegen]", "stylegen.masks_from=gt", f"target.labels={given}"))
    report = pipeline.run(
        config("stages=[styles,stylegen]", "stylegen.masks_from=labels", f"target.labels={given}")
    )
    assert report["stages"]["stylegen"]["summary"]["missed_share"] == {"0": None}


def test_synthetic_layouts_count_the_nuclei_the_preseg_missed_or_come_from_the_labels_when_asked(tmp_path):
    def config(*overrides):
        return compose_demo_train(
            tmp_path,
            "profile=tiny",
            "style=auto",
            "preseg.method=classical",
            "size.diameter_px=30",
            "target.demo.n_target=4",
            "target.demo.image_size=96",
            "masks.n_per_style=6",
            "masks.size=128",
            *overrides,
        )

    pipeline.run(config("stages=[preseg,sizes,styles]"))
    # a pre-segmentation that missed every second nucleus the classical segmentation finds
    run = RunFolder(tmp_path / "run")
    for path in sorted(preseg.labels_folder(run).glob("*.png")):
        labels = io.read_labels(path)
        io.write_labels(path, np.where(labels % 2 == 0, 0, labels))
    pipeline.run(config("stages=[stylegen]"))

    def nuclei_per_mask(*overrides: str) -> float:
        pipeline.run(config("stages=[masks]", *overrides))
        masks = sorted((run.path("masks") / "style_0").glob("*.png"))
        return float(np.mean([len(np.unique(io.read_labels(path))) - 1 for path in masks]))

    halved = nuclei_per_mask("masks.count_missed_nuclei=false")
    assert nuclei_per_mask("masks.count_missed_nuclei=true") > 1.4 * halved
    # the ablation that measures the layouts on the target's labels (the demo's, complete) instead
    assert nuclei_per_mask("masks.layouts_from=labels") > 1.4 * halved
