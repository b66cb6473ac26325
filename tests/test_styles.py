"""nucleaizer.styles and nucleaizer.style_features: features, the k rule, merging, the folder stage, the CLI."""

from __future__ import annotations

import inspect
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf
from skimage.feature import local_binary_pattern

from nucleaizer import simulate
from nucleaizer.errors import UserError
from nucleaizer.io import write_image
from nucleaizer.style_features import (
    BLOCKS,
    FeatureSettings,
    feature_blocks,
    feature_names,
    image_features,
    uniform_lbp,
)
from nucleaizer.style_outputs import montage
from nucleaizer.styles import (
    DEFAULT_CONFIG,
    ClusterSettings,
    choose_k,
    cluster_features,
    find_styles,
    main,
    merge_small_clusters,
    settings_from_mapping,
)

ROOT = Path(__file__).resolve().parent.parent


def _procedural_images(per_style: int = 7) -> tuple[list[str], list[np.ndarray], list[str]]:
    """Images of every simulated look with varied seed, size, nucleus diameter and density."""
    names, images, truth = [], [], []
    for style in simulate.STYLES:
        for i in range(per_style):
            image, _ = simulate.sample(
                style,
                size=(64 + 8 * i, 72 + 4 * i),
                diameter_px=6 + 2 * i,
                density=0.1 + 0.05 * (i % 4),
                seed=100 * i + len(style),
            )
            names.append(f"{style}_{i}")
            images.append(image)
            truth.append(style)
    return names, images, truth


@pytest.fixture(scope="module")
def procedural():
    names, images, truth = _procedural_images()
    features = np.stack([image_features(image) for image in images])
    return names, images, truth, features


def test_procedural_styles_are_never_mixed(procedural):
    names, _, truth, features = procedural
    result = cluster_features(features, names, ClusterSettings(), feature_blocks(FeatureSettings()), seed=0)
    table = pd.DataFrame({"style": result.labels, "truth": truth})
    looks_per_style = table.groupby("style")["truth"].nunique()
    assert (looks_per_style == 1).all(), table.groupby("style")["truth"].unique()
    assert result.k >= 3
    assert min(result.sizes) >= ClusterSettings().min_images_per_style
    assert sum(result.sizes) == len(names)


def test_same_seed_same_styles_and_forced_k(procedural):
    names, _, _, features = procedural
    blocks = feature_blocks(FeatureSettings())
    first = cluster_features(features, names, ClusterSettings(), blocks, seed=3)
    again = cluster_features(features, names, ClusterSettings(), blocks, seed=3)
    np.testing.assert_array_equal(first.labels, again.labels)
    assert first.silhouette == again.silhouette
    forced = cluster_features(features, names, ClusterSettings(k=3), blocks, seed=3)
    assert forced.k_chosen == 3 and forced.silhouette == {}


def test_feature_names_blocks_and_vector_agree():
    settings = FeatureSettings(
        percentiles=(10, 90), histogram_bins=8, glcm_distances=(1, 2, 4), lbp_points=16
    )
    image, _ = simulate.sample("he", size=48, seed=1)
    vector = image_features(image, settings)
    names = feature_names(settings)
    assert vector.shape == (len(names),) and vector.dtype == np.float64 and np.isfinite(vector).all()
    blocks = feature_blocks(settings)
    assert list(blocks) == list(BLOCKS)
    covered = np.concatenate([np.arange(len(names))[s] for s in blocks.values()])
    np.testing.assert_array_equal(covered, np.arange(len(names)))
    assert all(names[i].startswith("glcm") for i in range(len(names))[blocks["texture"]])
    assert all(names[i].startswith("lbp") for i in range(len(names))[blocks["lbp"]])
    assert [names[i] for i in range(len(names))[blocks["size"]]] == ["log2_height", "log2_width"]


def rng_image(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_intensity_statistics_match_numpy():
    image = rng_image((40, 50, 3))
    named = dict(zip(feature_names(FeatureSettings()), image_features(image), strict=True))
    for i, channel in enumerate("RGB"):
        values = image[..., i].ravel()
        assert named[f"{channel}_mean"] == pytest.approx(values.mean())
        assert named[f"{channel}_std"] == pytest.approx(values.std())
        for p in FeatureSettings().percentiles:
            assert named[f"{channel}_p{p:g}"] == np.percentile(values, p, method="inverted_cdf")
        hist = [named[f"{channel}_hist{b:02d}"] for b in range(16)]
        np.testing.assert_allclose(hist, np.histogram(values, bins=16, range=(0, 256))[0] / values.size)
    assert named["log2_height"] == pytest.approx(np.log2(40)) and named["log2_width"] == pytest.approx(
        np.log2(50)
    )


def test_grey_image_has_neutral_colour_and_flat_image_has_finite_features():
    grey = np.repeat(rng_image((32, 32, 1), seed=1), 3, axis=2)
    named = dict(zip(feature_names(FeatureSettings()), image_features(grey), strict=True))
    assert named["a_std"] == 0 and named["b_std"] == 0 and named["a_mean"] == 128 and named["b_mean"] == 128
    assert named["R_mean"] == named["G_mean"] == named["B_mean"]
    flat = np.full((20, 20, 3), 7, dtype=np.uint8)
    assert np.isfinite(image_features(flat)).all()
    for shape in ((1, 1, 3), (2, 3, 3)):  # smaller than the co-occurrence distances
        assert np.isfinite(image_features(rng_image(shape))).all()


def test_uniform_lbp_gives_skimage_codes():
    noise = rng_image((40, 60), seed=3)
    tissue = simulate.sample("he", size=64, seed=3)[0][..., 1]
    for grey, radius in ((noise, 1), (noise, 2.5), (tissue, 1)):
        expected = local_binary_pattern(grey, 8, radius, method="uniform")
        codes = uniform_lbp(grey, 8, radius)
        assert codes.shape == grey.shape
        # identical up to the rare exact tie between interpolated values that rounds the other way
        assert np.mean(codes != expected) < 1e-3


def test_large_image_is_downscaled_and_fast():
    small, _ = simulate.sample("fluorescence", size=500, diameter_px=12, seed=2)
    large = cv2.resize(small, (5000, 5000), interpolation=cv2.INTER_NEAREST)
    start = time.perf_counter()
    large_features = image_features(large)
    assert time.perf_counter() - start < 3.0
    names = feature_names(FeatureSettings())
    # at most 512 px are looked at: the intensity distribution is the one of the small copy it came from
    mean = names.index("L_mean")
    assert large_features[mean] == pytest.approx(image_features(small)[mean], abs=1.0)
    assert large_features[names.index("log2_height")] == pytest.approx(np.log2(5000))


def test_choose_k_keeps_the_largest_k_within_tolerance():
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [20, 0], [0, 20], [20, 20], [40, 0], [40, 20]], dtype=float)
    points = np.concatenate([c + rng.normal(0, 0.5, (10, 2)) for c in centres])
    candidates = [2, 3, 4, 5, 6, 7, 8, 9]
    best_k, labels, scores = choose_k(points, candidates, tolerance=0.0, seed=0)
    assert best_k == 6 and scores[6] == max(scores.values())
    assert len(np.unique(labels)) == 6
    finest_k, _, _ = choose_k(points, candidates, tolerance=1.0, seed=0)
    assert finest_k == 9
    middle = sorted(scores.values())[-2]
    k_mid, _, _ = choose_k(points, candidates, tolerance=scores[6] - middle + 1e-9, seed=0)
    assert k_mid == max(k for k, s in scores.items() if s >= middle)


def test_choose_k_with_too_few_distinct_points_takes_what_they_allow():
    points = np.repeat(np.array([[0.0, 0.0], [5.0, 5.0]]), 6, axis=0)
    k, labels, scores = choose_k(points, [2, 3], tolerance=0.02)
    assert k == 2 and scores == {} and len(set(labels[:6])) == 1 and labels[0] != labels[-1]


def test_merge_small_clusters_moves_them_to_the_nearest_centroid():
    points = np.array([[0.0], [0.1], [0.2], [10.0], [10.1], [10.2], [10.3], [9.0], [0.5]])
    labels = np.array([0, 0, 0, 1, 1, 1, 1, 2, 3])
    merged, merges = merge_small_clusters(points, labels, min_size=2)
    # the singleton at 9.0 joins the cluster near 10, the one at 0.5 the cluster near 0; renumbered by size
    np.testing.assert_array_equal(merged, [1, 1, 1, 0, 0, 0, 0, 0, 1])
    assert len(merges) == 2 and all(m["images"] == 1 for m in merges)
    everything, _ = merge_small_clusters(points, labels, min_size=100)
    assert set(everything.tolist()) == {0}


def test_montage_grid():
    thumbs = [np.full((10, 20, 3), 50 * i, dtype=np.uint8) for i in range(5)]
    grid = montage(thumbs, tile_px=16, gap_px=2)
    assert grid.dtype == np.uint8 and grid.shape == (2 * 18 + 2, 3 * 18 + 2, 3)
    assert grid[-5, -5].tolist() == [255, 255, 255]  # the sixth place of the 2x3 grid stays empty


def test_config_keys_equal_the_settings_defaults():
    values = OmegaConf.to_container(OmegaConf.load(DEFAULT_CONFIG), resolve=False)
    values.pop("seed")
    features, clustering = settings_from_mapping(values)
    assert features == FeatureSettings()
    assert clustering == ClusterSettings()
    keys = {*inspect.signature(FeatureSettings).parameters, *inspect.signature(ClusterSettings).parameters}
    assert keys == set(values)
    with pytest.raises(UserError, match="nosuchkey"):
        settings_from_mapping({"nosuchkey": 1})
    with pytest.raises(UserError, match="histogram_bins"):
        settings_from_mapping({"histogram_bins": 10})
    with pytest.raises(UserError, match="images_per_style_range"):
        settings_from_mapping({"images_per_style_range": [10, 5]})


def _write(folder: Path, images: dict[str, np.ndarray]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, image in images.items():
        write_image(folder / f"{name}.png", image)
    return folder


def test_folder_stage_writes_every_output_deterministically(tmp_path, procedural):
    names, images, truth, _ = procedural
    # grey files (one channel) for the grey looks, RGB files for the tissue: a mix the reader must unify
    files = {
        name: image[..., 0] if look != "he" else image
        for name, image, look in zip(names, images, truth, strict=True)
    }
    folder = _write(tmp_path / "in", files)
    assert cv2.imread(str(folder / "fluorescence_0.png"), cv2.IMREAD_UNCHANGED).ndim == 2
    result = find_styles(folder, tmp_path / "out", seed=0)
    clusters = pd.read_csv(tmp_path / "out" / "clusters.csv")
    assert list(clusters.columns) == ["image", "style"] and sorted(clusters["image"]) == sorted(names)
    looks = clusters.assign(look=clusters["image"].str.split("_").str[0]).groupby("style")["look"].nunique()
    assert (looks == 1).all()
    features = pd.read_csv(tmp_path / "out" / "features.csv")
    assert list(features.columns) == ["image", *feature_names(FeatureSettings())] and len(features) == len(
        names
    )
    assert sorted(p.name for p in (tmp_path / "out").glob("style_*.png")) == [
        f"style_{k}.png" for k in range(result.k)
    ]
    # same seed, same result, and montages of an earlier run with more styles do not linger
    (tmp_path / "out" / "style_99.png").write_bytes(b"stale")
    again = find_styles(folder, tmp_path / "out", seed=0)
    np.testing.assert_array_equal(result.labels, again.labels)
    pd.testing.assert_frame_equal(clusters, pd.read_csv(tmp_path / "out" / "clusters.csv"))
    assert not (tmp_path / "out" / "style_99.png").exists()


def test_one_image_and_two_identical_images(tmp_path):
    image, _ = simulate.sample("brightfield", size=64, seed=0)
    one = find_styles(_write(tmp_path / "one", {"only": image}), tmp_path / "out1")
    assert one.k == 1 and one.names == ["only"]
    assert (tmp_path / "out1" / "style_0.png").is_file()
    two = find_styles(_write(tmp_path / "two", {"a": image, "b": image.copy()}), tmp_path / "out2")
    assert two.k == 1 and two.labels.tolist() == [0, 0]


def test_huge_image_in_a_folder(tmp_path):
    small, _ = simulate.sample("fluorescence", size=250, diameter_px=10, seed=4)
    folder = _write(
        tmp_path / "in", {f"f_{i}": simulate.sample("fluorescence", size=80, seed=i)[0] for i in range(3)}
    )
    # one grey channel, fast compression: the file is quick to write; reading and features are what is tested
    huge = cv2.resize(small[..., 0], (5000, 5000), interpolation=cv2.INTER_NEAREST)
    cv2.imwrite(str(folder / "huge.png"), huge, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    result = find_styles(folder, tmp_path / "out")
    features = pd.read_csv(tmp_path / "out" / "features.csv", index_col="image")
    assert features.loc["huge", "log2_width"] == pytest.approx(np.log2(5000))
    assert result.k == 1  # four images cannot make two styles of at least three


def test_command_line_writes_outputs(tmp_path):
    folder = _write(
        tmp_path / "in", {f"f{i}": simulate.sample("fluorescence", size=48, seed=i)[0] for i in range(4)}
    )
    done = subprocess.run(
        [sys.executable, "-m", "nucleaizer.styles", str(folder), str(tmp_path / "out"), "--k", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert len(pd.read_csv(tmp_path / "out" / "clusters.csv")) == 4
    assert (tmp_path / "out" / "style_0.png").is_file()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["{tmp}/missing", "{tmp}/o"], "no such folder"),
        (["{tmp}/in", "{tmp}/in/inside"], "lies inside the images folder"),
        (["{tmp}/in", "{tmp}/o", "--k", "0"], "k=0"),
        (["{tmp}/in", "{tmp}/o", "--config", "{tmp}/none.yaml"], "no such config file"),
    ],
)
def test_command_line_mistakes_end_in_one_line(tmp_path, capsys, args, expected):
    _write(tmp_path / "in", {"a": simulate.sample("he", size=32, seed=0)[0]})
    with pytest.raises(SystemExit) as exit_info:
        main([a.format(tmp=tmp_path) for a in args])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and expected in lines[0]
