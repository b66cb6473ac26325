"""Model bundle folder: written, read back, and clear errors for missing or incomplete bundles."""

import json
import shutil

import numpy as np
import pytest

from nucleaizer.bundle import BUNDLE_FILE, load_predictors, read_bundle, write_bundle
from nucleaizer.errors import UserError
from nucleaizer.infer.settings import postprocess_refiner
from nucleaizer.instances import Instances
from nucleaizer.size import SizeRule
from tests.helpers.networks import TINY_MASKRCNN


@pytest.fixture
def weights(tmp_path):
    """Two stand-in weight files (the bundle only copies and checks files; loading is tested below)."""
    (tmp_path / "src").mkdir()
    seg, pre, unet = (tmp_path / "src" / name for name in ("best.pt", "pre.pt", "unets.pt"))
    seg.write_bytes(b"segmenter")
    pre.write_bytes(b"preseg")
    unet.write_bytes(b"unets")
    return seg, pre, unet


def test_written_bundle_reads_back(tmp_path, weights):
    seg, pre, unet = weights
    size = SizeRule(target_diameter_px=32, min_scale=0.5, max_scale=3.0, min_object_area_px=10)
    spec = {"ensemble": "unets.pt", "params": {"p2_min_area_px": 30}}
    path = write_bundle(
        tmp_path / "model", seg, preseg=pre, size=size, postprocess=spec, files={"unets.pt": unet}
    )
    assert path == tmp_path / "model" / BUNDLE_FILE
    content = json.loads(path.read_text())
    assert content["segmenter"] == "segmenter.pt" and content["preseg"] == "preseg.pt"
    assert content["target_diameter_px"] == 32
    bundle = read_bundle(tmp_path / "model")
    assert bundle.segmenter.read_bytes() == b"segmenter" and bundle.preseg.read_bytes() == b"preseg"
    assert bundle.size == size and bundle.postprocess == spec
    assert bundle.path("unets.pt").read_bytes() == b"unets"
    # the bundle can be moved: paths are relative to its folder
    (tmp_path / "model").rename(tmp_path / "moved")
    assert read_bundle(tmp_path / "moved").segmenter == tmp_path / "moved" / "segmenter.pt"


def test_minimal_bundle_has_defaults_and_no_postprocessing(tmp_path, weights):
    write_bundle(tmp_path / "m", weights[0])
    bundle = read_bundle(tmp_path / "m")
    assert bundle.preseg is None and bundle.postprocess is None and bundle.size == SizeRule()
    # no post-processing section: the hook is a no-op whatever the switch says
    assert postprocess_refiner(bundle, True, "cpu") is None


def test_training_size_section_is_accepted(tmp_path, weights):
    write_bundle(tmp_path / "m", weights[0])
    content = json.loads((tmp_path / "m" / BUNDLE_FILE).read_text())
    content["size"] = {
        "target_diameter_px": 40,
        "diameter_px": None,
        "min_scale": 0.25,
        "max_scale": 4.0,
        "min_object_area_px": 16,
    }
    (tmp_path / "m" / BUNDLE_FILE).write_text(json.dumps(content))
    assert read_bundle(tmp_path / "m").size == SizeRule()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda folder: (folder / "segmenter.pt").unlink(), "segmenter.pt, which is missing"),
        (lambda folder: (folder / BUNDLE_FILE).unlink(), "bundle.json is missing"),
        (lambda folder: (folder / BUNDLE_FILE).write_text("{not json"), "not readable JSON"),
        (
            lambda folder: (folder / BUNDLE_FILE).write_text('{"segmenter": "segmenter.pt"}'),
            "target_diameter_px",
        ),
        (
            lambda folder: (folder / BUNDLE_FILE).write_text(
                '{"segmenter": "segmenter.pt", "target_diameter_px": 40, "size": {"max_scal": 2}}'
            ),
            "max_scal",
        ),
        (
            lambda folder: (folder / BUNDLE_FILE).write_text(
                '{"segmenter": "segmenter.pt", "target_diameter_px": 40, "size": {"min_scale": 5}}'
            ),
            "min_scale",
        ),
    ],
    ids=["no-weights", "no-json", "bad-json", "missing-key", "unknown-size-key", "bad-clamps"],
)
def test_incomplete_bundles_raise_user_errors_naming_the_problem(tmp_path, weights, damage, message):
    write_bundle(tmp_path / "m", weights[0])
    damage(tmp_path / "m")
    with pytest.raises(UserError, match=message):
        read_bundle(tmp_path / "m")


def test_missing_bundle_paths(tmp_path, weights):
    with pytest.raises(UserError, match="does not exist"):
        read_bundle(tmp_path / "nowhere")
    with pytest.raises(UserError, match="is a file"):
        read_bundle(weights[0])
    with pytest.raises(UserError, match="does not exist"):
        write_bundle(tmp_path / "m", tmp_path / "missing.pt")


def test_postprocess_ensemble_must_travel_with_the_bundle(tmp_path, weights):
    with pytest.raises(UserError, match="unets.pt"):
        write_bundle(tmp_path / "m", weights[0], postprocess={"ensemble": "unets.pt", "params": {}})
    write_bundle(
        tmp_path / "m", weights[0], postprocess={"ensemble": "unets.pt"}, files={"unets.pt": weights[2]}
    )
    (tmp_path / "m" / "unets.pt").unlink()
    with pytest.raises(UserError, match="incomplete model bundle"):
        read_bundle(tmp_path / "m")


def test_postprocess_switch_and_incomplete_section(tmp_path, weights):
    write_bundle(tmp_path / "m", weights[0], postprocess={"params": {}})
    bundle = read_bundle(tmp_path / "m")
    assert postprocess_refiner(bundle, False, "cpu") is None  # postprocess=false
    with pytest.raises(UserError, match="ensemble"):
        postprocess_refiner(bundle, True, "cpu")


def test_mask_rcnn_bundle_loads_as_instance_predictors(tmp_path):
    segmenter = pytest.importorskip("nucleaizer.segmenter")
    arch = TINY_MASKRCNN
    model = segmenter.build_maskrcnn(arch)
    checkpoint = segmenter.save_segmenter(tmp_path / "seg.pt", model, arch)
    write_bundle(tmp_path / "m", checkpoint, preseg=checkpoint)
    predictor, preseg = load_predictors(read_bundle(tmp_path / "m"))
    assert preseg is not None
    (instances,) = predictor([np.zeros((64, 64, 3), np.uint8)])
    assert isinstance(instances, Instances) and instances.scores.dtype == np.float32
    assert (instances.boxes[:, 2:] <= 64).all()


def test_classical_size_estimation_travels_with_the_bundle(tmp_path):
    from nucleaizer import simulate
    from nucleaizer.baseline import ClassicalPredictor
    from nucleaizer.infer.nucleus_segmenter import NucleusSegmenter

    segmenter = pytest.importorskip("nucleaizer.segmenter")
    checkpoint = segmenter.save_segmenter(
        tmp_path / "seg.pt", segmenter.build_maskrcnn(TINY_MASKRCNN), TINY_MASKRCNN
    )
    write_bundle(tmp_path / "m", checkpoint, preseg=checkpoint, size_estimation="classical")
    bundle = read_bundle(tmp_path / "m")
    assert bundle.size_estimation == "classical"
    predictor, estimator = load_predictors(bundle)
    assert isinstance(estimator, ClassicalPredictor)
    # the diameter of H&E-like nuclei measured classically, as the training run's preseg stage measured it
    image, labels = simulate.sample("he", 256, diameter_px=30, density=0.2, seed=1)
    measured = NucleusSegmenter(predictor, preseg=estimator).estimate_diameter(image)
    assert measured == pytest.approx(SizeRule().diameter_of(labels), rel=0.25)
    content = json.loads((tmp_path / "m" / BUNDLE_FILE).read_text())
    content["size_estimation"] = "guess"
    (tmp_path / "m" / BUNDLE_FILE).write_text(json.dumps(content))
    with pytest.raises(UserError, match="size_estimation"):
        read_bundle(tmp_path / "m")


@pytest.mark.parametrize("method, has_preseg", [("model", True), ("classical", False)])
def test_bundle_stage_copies_the_preseg_model_only_when_it_estimates_sizes(
    tmp_path, weights, method, has_preseg
):
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from nucleaizer.pipeline.bundle import run as stage_bundle
    from nucleaizer.run_folder import RunFolder

    run = RunFolder(tmp_path / "run")
    run.path("segmenter").mkdir(parents=True)
    shutil.copy(weights[0], run.path("segmenter") / "auto.pt")
    cfg = OmegaConf.create(
        {
            "style": "auto",
            "preseg": {"method": method, "checkpoint": str(weights[1])},
            "size": {"target_diameter_px": 40, "min_scale": 0.25, "max_scale": 4.0, "min_object_area_px": 16},
        }
    )
    stage_bundle(SimpleNamespace(cfg=cfg, run=run), tmp_path / "model", {})
    bundle = read_bundle(tmp_path / "model")
    assert bundle.size_estimation == method
    assert (bundle.preseg is not None) == has_preseg == (tmp_path / "model" / "preseg.pt").exists()
