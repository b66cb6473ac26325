"""infer.py end to end in a subprocess: outputs, evaluation, and one-line errors for bad input."""

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import tifffile
from hydra import compose, initialize_config_dir

from nucleaizer import io, simulate
from nucleaizer.bundle import write_bundle
from nucleaizer.cli import check_config
from nucleaizer.config_files import CONF_DIR
from nucleaizer.infer.settings import validate_config
from tests.helpers.networks import TINY_MASKRCNN
from tests.helpers.scripts import run_script

ROOT = Path(__file__).resolve().parent.parent


def infer(*args):
    return run_script("infer.py", *args)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Three simulated images (one per look) with labels, one of them 16-bit grey, one RGBA."""
    folder = tmp_path_factory.mktemp("data")
    for index, style in enumerate(simulate.DSB_LOOKS):
        image, labels = simulate.sample(style, size=96, diameter_px=20, density=0.25, seed=index)
        (folder / "images").mkdir(exist_ok=True)
        if style == "fluorescence":
            tifffile.imwrite(folder / "images" / f"img{index}.tif", image[..., 0].astype(np.uint16) * 257)
        elif style == "he":
            rgba = np.concatenate([image, np.full((*image.shape[:2], 1), 255, np.uint8)], axis=2)
            cv2.imwrite(str(folder / "images" / f"img{index}.png"), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
        else:
            io.write_image(folder / "images" / f"img{index}.png", image)
        io.write_labels(folder / "labels" / f"img{index}.png", labels)
    return folder


def test_classical_model_end_to_end_with_evaluation(dataset, tmp_path):
    out = tmp_path / "out"
    result = infer(
        "model=classical",
        f"input={dataset}",
        f"output={out}",
        f"ground_truth={dataset / 'labels'}",
        "diameter=20",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for name in ("img0", "img1", "img2"):
        labels = io.read_labels(out / "labels" / f"{name}.png")
        assert labels.shape == (96, 96) and labels.max() > 0
        assert io.read_image(out / "overlays" / f"{name}.png").shape == (96, 96, 3)
    nuclei = pd.read_csv(out / "nuclei.csv")
    assert set(nuclei["image"]) == {"img0", "img1", "img2"}
    assert {"area_px", "centroid_y", "bbox_x1", "equivalent_diameter_px", "mean_intensity"} <= set(
        nuclei.columns
    )
    images = pd.read_csv(out / "images.csv")
    assert (images["diameter_source"] == "given").all() and np.allclose(images["scale"], 2.0)
    assert len(nuclei) == images["nuclei"].sum()
    summary = json.loads((out / "evaluation" / "summary.json").read_text())
    assert summary["images"] == 3 and summary["dsb"] > 0.2


def test_without_model_the_shipped_generalist_segments_at_its_own_size(dataset, tmp_path):
    """The quick start: ``infer.py input=DIR output=DIR`` and nothing else."""
    out = tmp_path / "out"
    result = infer(f"input={dataset}", f"output={out}", f"ground_truth={dataset / 'labels'}")
    assert result.returncode == 0, result.stderr[-2000:]
    images = pd.read_csv(out / "images.csv")
    assert (images["diameter_source"] == "estimated").all()
    # 20 px nuclei, measured by the model where the classical guess brought them
    assert np.allclose(images["diameter_px"], 20, rtol=0.3), images["diameter_px"].tolist()
    summary = json.loads((out / "evaluation" / "summary.json").read_text())
    assert summary["images"] == 3 and summary["dsb"] > 0.3


def test_an_image_without_nuclei_is_segmented_at_the_median_size_of_the_others(dataset, tmp_path):
    """Nothing to measure in a blank image: it comes last, at the folder's median estimate, and says so."""
    folder = tmp_path / "in"
    (folder / "images").mkdir(parents=True)
    io.write_image(folder / "images" / "blank.png", np.zeros((80, 80, 3), np.uint8))
    for path in (dataset / "images").iterdir():
        (folder / "images" / path.name).write_bytes(path.read_bytes())
    out = tmp_path / "out"
    result = infer("model=classical", f"input={folder}", f"output={out}")
    assert result.returncode == 0, result.stderr[-2000:]
    images = pd.read_csv(out / "images.csv").set_index("image")
    assert list(images.index) == ["blank", "img0", "img1", "img2"]  # the input's order, whatever came last
    assert (images.drop("blank")["diameter_source"] == "estimated").all()
    assert images.loc["blank", "diameter_source"] == "dataset_median"
    assert images.loc["blank", "diameter_px"] == pytest.approx(images.drop("blank")["diameter_px"].median())
    assert images.loc["blank", "nuclei"] == 0 and (out / "labels" / "blank.png").is_file()


BAD_COMMAND_LINES = [
    (["model={tmp}/no_such_model", "input={data}", "output={tmp}/o"], "does not exist"),
    (["model=classical", "input={tmp}/no_such_folder", "output={tmp}/o"], "input folder"),
    (["model=classical", "input={data}", "output={data}/images/out"], "lies inside the input folder"),
    (["model=classical", "input={data}", "output={tmp}/o", "diameter=-3"], "diameter"),
    (["model=classical", "input={data}", "output={tmp}/o", "tile_overlap=600"], "tile_overlap"),
    (["model=classical", "input={data}", "output={tmp}/o", "tta_transforms=[rot45]"], "rot45"),
    (["model=classical", "input={data}", "output={tmp}/o", "label_format=jpg"], "label_format"),
    (["model=classical", "input={data}"], "output"),
]


@pytest.mark.parametrize(
    ("args", "message"),
    BAD_COMMAND_LINES,
    ids=[
        "missing-model",
        "missing-input",
        "output-in-input",
        "bad-diameter",
        "bad-tiles",
        "bad-tta",
        "bad-format",
        "no-output",
    ],
)
def test_bad_command_line_gives_one_line_error(dataset, tmp_path, capsys, args, message):
    """The check infer.py runs before Hydra starts (so nothing is written), called in-process."""
    with pytest.raises(SystemExit) as exit_info:
        check_config("infer", [a.format(tmp=tmp_path, data=dataset) for a in args], validate_config)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0]
    assert not (dataset / "images" / "out").exists()  # nothing is ever written into the input


def test_folder_without_images_through_infer_py_gives_one_line_error(tmp_path):
    (tmp_path / "empty").mkdir()
    result = infer("model=classical", f"input={tmp_path / 'empty'}", f"output={tmp_path / 'o'}")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error:") and "empty" in lines[-1], result.stderr[-2000:]
    assert "Traceback" not in result.stderr


def test_incomplete_bundle_is_reported(dataset, tmp_path, capsys):
    (tmp_path / "seg.pt").write_bytes(b"x")
    write_bundle(tmp_path / "model", tmp_path / "seg.pt")
    (tmp_path / "model" / "segmenter.pt").unlink()
    with pytest.raises(SystemExit):
        check_config(
            "infer",
            [f"model={tmp_path / 'model'}", f"input={dataset}", f"output={tmp_path / 'o'}"],
            validate_config,
        )
    assert "incomplete model bundle" in capsys.readouterr().err


def test_mask_rcnn_bundle_end_to_end(dataset, tmp_path):
    segmenter = pytest.importorskip("nucleaizer.segmenter")
    arch = TINY_MASKRCNN
    checkpoint = segmenter.save_segmenter(tmp_path / "seg.pt", segmenter.build_maskrcnn(arch), arch)
    write_bundle(tmp_path / "model", checkpoint)
    out = tmp_path / "out"
    result = infer(
        f"model={tmp_path / 'model'}",
        f"input={dataset}",
        f"output={out}",
        "tta=true",
        "tta_transforms=[identity,rot90]",
        "device=cpu",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(p.name for p in (out / "labels").iterdir()) == ["img0.png", "img1.png", "img2.png"]
    assert pd.read_csv(out / "images.csv")["diameter_source"].isin(["estimated", "dataset_median"]).all()


def test_bundle_with_post_processing_is_refined_unless_switched_off(dataset, tmp_path):
    """A bundle with a post-processing section gets the U-Net refiner; postprocess=false leaves it out."""
    from omegaconf import OmegaConf

    from nucleaizer.infer.settings import build_segmenter
    from nucleaizer.postprocess.unet import UNet, UNetEnsemble, member_specs

    maskrcnn = pytest.importorskip("nucleaizer.segmenter")
    checkpoint = maskrcnn.save_segmenter(
        tmp_path / "seg.pt", maskrcnn.build_maskrcnn(TINY_MASKRCNN), TINY_MASKRCNN
    )
    specs = member_specs(1, [0.0], 2, 4)
    ensemble = UNetEnsemble([UNet(depth=2, base_filters=4)], specs).save(tmp_path / "unet.pt")
    write_bundle(
        tmp_path / "model",
        checkpoint,
        postprocess={"ensemble": "unet.pt", "params": {"p2_min_area_px": 5}},
        files={"unet.pt": ensemble},
    )
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "infer",
            [f"model={tmp_path / 'model'}", f"input={dataset}", f"output={tmp_path / 'o'}", "device=cpu"],
        )
    segmenter, bundle = build_segmenter(cfg)
    assert bundle.postprocess["ensemble"] == "unet.pt" and segmenter.refine is not None
    labels = np.zeros((64, 64), np.int32)
    labels[10:30, 10:30] = 1
    refined = segmenter.refine(labels, np.zeros((64, 64, 3), np.uint8))
    assert refined.shape == (64, 64) and refined.dtype == np.int32
    OmegaConf.update(cfg, "postprocess", False)
    assert build_segmenter(cfg)[0].refine is None
