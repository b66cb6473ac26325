"""The generalist model shipped inside the package: found by name, checked at load, and segmenting nuclei."""

import json
import shutil

import pytest
import torch

from nucleaizer import metrics, simulate
from nucleaizer.bundle import BUNDLE_FILE, read_bundle
from nucleaizer.errors import UserError
from nucleaizer.models import DEFAULT_MODEL, SHIPPED_DIR, model_folder, segmenter_file, shipped_models


def test_the_default_model_is_shipped_as_a_small_fp16_bundle_with_its_card():
    assert DEFAULT_MODEL in shipped_models()
    bundle = read_bundle(model_folder(DEFAULT_MODEL))  # checks the sha256 of its weights
    assert bundle.folder == SHIPPED_DIR / DEFAULT_MODEL
    assert bundle.segmenter.stat().st_size < 20 * 2**20
    stored = torch.load(bundle.segmenter, map_location="cpu", weights_only=True)["state_dict"]
    assert {v.dtype for v in stored.values() if v.is_floating_point()} == {torch.float16}
    card = (bundle.folder / "MODEL.md").read_text()
    assert "python -m nucleaizer.generalist train" in card and "dsb2018_train" in card


def test_the_shipped_model_segments_nuclei_at_the_size_it_estimates():
    """Simulated fluorescence nuclei 20 px across (half the working size): the model estimates their size and
    finds them."""
    from omegaconf import OmegaConf

    from nucleaizer.config_files import CONF_DIR
    from nucleaizer.infer.settings import build_segmenter

    config = OmegaConf.load(CONF_DIR / "infer.yaml")  # infer.py's defaults: model=generalist
    config.device = "cpu"
    segmenter, _ = build_segmenter(config)
    image, truth = simulate.sample("fluorescence", 192, diameter_px=20, density=0.2, seed=3)
    assert segmenter.estimate_diameter(image) == pytest.approx(segmenter.size.diameter_of(truth), rel=0.25)
    found = segmenter.segment(image)
    assert metrics.dsb_score(truth, found) > 0.5


def test_a_damaged_shipped_model_fails_its_checksum(tmp_path):
    copy = shutil.copytree(model_folder(DEFAULT_MODEL), tmp_path / "copy")
    weights = copy / json.loads((copy / BUNDLE_FILE).read_text())["segmenter"]
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(UserError, match="checksum"):
        read_bundle(copy)


def test_model_names_and_paths(tmp_path):
    assert segmenter_file(DEFAULT_MODEL) == SHIPPED_DIR / DEFAULT_MODEL / "segmenter.pt"
    # an existing folder of that name wins over the shipped model
    local = tmp_path / DEFAULT_MODEL
    local.mkdir()
    assert model_folder(local) == local
    pt = tmp_path / "preseg.pt"
    pt.write_bytes(b"x")
    assert segmenter_file(pt) == pt
    with pytest.raises(UserError, match=f"does not exist.*{DEFAULT_MODEL}"):
        model_folder("no_such_model")


def test_fp16_storage_halves_the_file_and_loads_as_float32(tmp_path):
    from nucleaizer.maskrcnn import build_maskrcnn, load_segmenter, save_segmenter
    from tests.helpers.networks import TINY_MASKRCNN

    model = build_maskrcnn(TINY_MASKRCNN)
    full = save_segmenter(tmp_path / "full.pt", model, TINY_MASKRCNN)
    half = save_segmenter(tmp_path / "half.pt", model, TINY_MASKRCNN, dtype=torch.float16)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    loaded, _ = load_segmenter(half)
    for name, value in loaded.state_dict().items():
        original = model.state_dict()[name]
        assert value.dtype == original.dtype
        if original.is_floating_point():
            assert torch.equal(value, original.half().float()), name


def compose_train(tmp_path, *overrides):
    from tests.helpers.configs import compose_demo_train

    return compose_demo_train(
        tmp_path,
        "profile=tiny",
        "target.demo.n_target=3",
        "target.demo.image_size=128",
        *overrides,
    )


def test_train_py_pre_segments_with_the_shipped_model_by_default(tmp_path):
    """No preseg training: the shipped model segments the target and measures its nucleus sizes."""
    from nucleaizer import pipeline

    cfg = compose_train(
        tmp_path, "preseg.checkpoint=generalist", "preseg.method=model", "stages=[preseg,sizes]"
    )
    report = pipeline.run(cfg)
    assert report["stages"]["preseg"]["summary"]["trained"] is False
    assert not (tmp_path / "run" / "preseg" / "preseg.pt").exists()
    assert report["stages"]["preseg"]["summary"]["objects"] > 0
    sizes = (tmp_path / "run" / "sizes" / "sizes.csv").read_text().splitlines()
    assert len(sizes) == 1 + 3


def pre_segment_with_the_shipped_model(folder, *overrides) -> dict:
    """The preseg stage alone, with the shipped model, on the tiny demo target in ``folder``: its summary."""
    from nucleaizer import pipeline

    cfg = compose_train(
        folder, "preseg.checkpoint=generalist", "preseg.method=model", "stages=[preseg]", *overrides
    )
    return pipeline.run(cfg)["stages"]["preseg"]["summary"]


def test_the_pre_segmentation_detects_at_its_own_score_threshold(tmp_path):
    """preseg.score_thresh replaces the model's own (0.8) for the pre-segmentation: lower finds more objects."""
    objects = {
        threshold: pre_segment_with_the_shipped_model(
            tmp_path / threshold, f"preseg.score_thresh={threshold}"
        )["objects"]
        for threshold in ("null", "0.05")
    }
    assert 0 < objects["null"] < objects["0.05"]


def test_the_pre_segmentation_votes_over_flips_and_rotations_with_tta(tmp_path):
    """preseg.tta=true: the stage writes the eight views' vote (NucleusSegmenter with every TTA transform), not the
    single view's labels."""
    import numpy as np

    from nucleaizer import io
    from nucleaizer.baseline import ClassicalPredictor
    from nucleaizer.infer.nucleus_segmenter import NucleusSegmenter
    from nucleaizer.infer.tta import TRANSFORMS
    from nucleaizer.maskrcnn_predictor import MaskRCNNPredictor
    from nucleaizer.size import SizeRule

    written = {}
    for tta in ("false", "true"):
        pre_segment_with_the_shipped_model(tmp_path / tta, "preseg.score_thresh=0.3", f"preseg.tta={tta}")
        folder = tmp_path / tta / "run" / "preseg" / "labels"
        written[tta] = {f.name: io.read_labels(f) for f in sorted(folder.glob("*.png"))}
    predictor = MaskRCNNPredictor.from_file(segmenter_file("generalist"), score_threshold=0.3)
    voting = NucleusSegmenter(
        predictor, size=SizeRule(), tta_transforms=tuple(TRANSFORMS), size_guess=ClassicalPredictor()
    )
    images = sorted((tmp_path / "true" / "run" / "demo_data" / "target" / "images").glob("*.png"))
    assert [f.name for f in images] == list(written["true"])
    for image in images:
        assert np.array_equal(written["true"][image.name], voting.segment(io.read_image(image)))
    assert any(not np.array_equal(written["true"][n], written["false"][n]) for n in written["true"])


def test_a_preseg_model_of_another_network_is_refused_before_any_stage(tmp_path):
    from nucleaizer import pipeline

    cfg = compose_train(tmp_path, "preseg.checkpoint=generalist", "segmenter=maskrcnn_mobilenet")
    with pytest.raises(UserError, match="another network.*backbone"):
        pipeline.run(cfg)
    assert not (tmp_path / "run" / "preseg").exists()
