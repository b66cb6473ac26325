"""ImageJ ROI sets and QuPath GeoJSON: read back with roifile and json, they rasterise to the labels."""

import json

import numpy as np
import pandas as pd
import pytest
from roifile import roiread
from skimage.draw import polygon2mask

from nucleaizer import io, simulate
from nucleaizer.infer.exports import outlines, rasterise, write_geojson, write_imagej_rois
from tests.helpers.scripts import run_script


def rows_for(labels):
    ids = np.unique(labels)[1:]
    return [
        {
            "id": int(i),
            "score": 0.5 + i / 1000,
            "tta_agreement": 1.0,
            "area_px": int((labels == i).sum()),
            "equivalent_diameter_px": 10.0,
        }
        for i in ids
    ]


def labels_with_a_hole_and_two_pieces():
    _, labels = simulate.sample("fluorescence", size=160, diameter_px=24, density=0.3, seed=2)
    labels = labels.copy()
    labels[120:150, 5:35] = labels.max() + 1
    labels[128:140, 14:26] = 0  # a hole
    labels[145:150, 40:45] = labels.max()  # a second piece of that nucleus
    return labels


def iou(a, b):
    return (a & b).sum() / (a | b).sum()


def check_round_trip(labels, tmp_path) -> None:
    shapes = outlines(labels)
    rows = rows_for(labels)
    write_geojson(tmp_path / "a.geojson", shapes, rows)
    write_imagej_rois(tmp_path / "a.zip", shapes, rows)
    features = json.loads((tmp_path / "a.geojson").read_text())["features"]
    rois = roiread(tmp_path / "a.zip")
    assert len(features) == len(rois) == len(rows)
    for feature, roi, row in zip(features, rois, rows, strict=True):
        truth = labels == row["id"]
        geometry = feature["geometry"]
        polygons = [geometry["coordinates"]] if geometry["type"] == "Polygon" else geometry["coordinates"]
        mask = np.zeros(labels.shape, bool)
        for outer, *holes in polygons:
            mask |= polygon2mask(labels.shape, np.asarray(outer)[:, ::-1] - 0.5)
            for hole in holes:
                mask &= ~polygon2mask(labels.shape, np.asarray(hole)[:, ::-1] - 0.5)
        assert iou(mask, truth) >= 0.95, row["id"]
        assert feature["properties"]["objectType"] == "detection"
        assert feature["properties"]["measurements"]["Score"] == pytest.approx(row["score"])
        assert roi.name.startswith(f"{row['id']:05d}") and f"score {row['score']:.2f}" in roi.name
        largest = polygon2mask(labels.shape, roi.coordinates()[:, ::-1] - 0.5)
        pieces = [polygon2mask(labels.shape, np.asarray(outer)[:, ::-1] - 0.5) for outer, *_ in polygons]
        assert iou(largest, pieces[0]) >= 0.95  # the ROI is the largest piece (holes are GeoJSON's)


def test_outlines_rasterise_back_exactly_with_holes_and_pieces():
    labels = labels_with_a_hole_and_two_pieces()
    for shape in outlines(labels):
        assert iou(rasterise(shape, labels.shape), labels == shape.id) == 1.0
    special = outlines(labels)[-1]  # the holed square and its small second piece, largest first
    assert len(special.pieces) == 2 and len(special.pieces[0][1]) == 1 and not special.pieces[1][1]


def test_rois_and_geojson_read_back_to_the_labels(tmp_path):
    check_round_trip(labels_with_a_hole_and_two_pieces(), tmp_path)


@pytest.mark.data
def test_round_trip_on_real_annotations(shared_data, tmp_path):
    for name in ("00071198d059ba7f5914a526d124d28e6d010c92466da21d4a04cd5413362552",):
        labels = io.read_labels(shared_data / "dsb2018_train" / "labels" / f"{name}.png")
        check_round_trip(labels, tmp_path)
    check_round_trip(io.read_labels(shared_data / "cpm15_he" / "labels" / "image01.png"), tmp_path)


def infer_classical(images, out, *extra):
    return run_script(
        "infer.py", "model=classical", f"input={images}", f"output={out}", "diameter=20", *extra
    )


def test_infer_writes_every_format_with_confidences(tmp_path):
    image, _ = simulate.sample("fluorescence", size=128, diameter_px=20, density=0.3, seed=3)
    io.write_image(tmp_path / "in" / "a.png", image)
    out = tmp_path / "out"
    result = infer_classical(tmp_path / "in", out, "formats=[labels,overlay,csv,rois,geojson]")
    assert result.returncode == 0, result.stderr[-2000:]
    nuclei = pd.read_csv(out / "nuclei.csv")
    assert len(nuclei) > 5 and (nuclei["score"] == 1).all() and (nuclei["tta_agreement"] == 1).all()
    images = pd.read_csv(out / "images.csv")
    assert images.loc[0, "mean_score"] == 1 and images.loc[0, "low_score_share"] == 0
    assert len(roiread(out / "rois" / "a.zip")) == len(nuclei)
    assert len(json.loads((out / "geojson" / "a.geojson").read_text())["features"]) == len(nuclei)


def test_ome_tiff_labels_keep_the_physical_pixel_size(tmp_path):
    import tifffile

    from nucleaizer.evaluate import evaluate_folders

    image, labels = simulate.sample("fluorescence", size=96, diameter_px=20, density=0.3, seed=4)
    (tmp_path / "in").mkdir()
    tifffile.imwrite(
        tmp_path / "in" / "a.ome.tif",
        image[..., 0],
        ome=True,
        metadata={"axes": "YX", "PhysicalSizeX": 0.325, "PhysicalSizeY": 0.5},
    )
    tifffile.imwrite(
        tmp_path / "in" / "b.tif", image[..., 0], imagej=True, resolution=(2.0, 2.0), metadata={"unit": "um"}
    )
    io.write_labels(tmp_path / "gt" / "a.png", labels)
    assert io.pixel_size_um(tmp_path / "in" / "a.ome.tif") == pytest.approx((0.5, 0.325))
    assert io.pixel_size_um(tmp_path / "in" / "b.tif") == pytest.approx((0.5, 0.5))
    out = tmp_path / "out"
    result = infer_classical(tmp_path / "in", out, "label_format=ome", f"ground_truth={tmp_path / 'gt'}")
    assert result.returncode == 0, result.stderr[-2000:]
    written = out / "labels" / "a.ome.tif"
    with tifffile.TiffFile(written) as tif:
        assert tif.is_ome and 'PhysicalSizeX="0.325"' in tif.ome_metadata
    assert io.pixel_size_um(written) == pytest.approx((0.5, 0.325))
    np.testing.assert_array_equal(
        io.read_labels(written) > 0, io.read_labels(out / "labels" / "b.ome.tif") > 0
    )
    summary = evaluate_folders(out / "labels", tmp_path / "gt", names=["a"])
    assert summary["images"] == 1 and summary["missing_predictions"] == 0  # a.ome.tif matched by its stem "a"
