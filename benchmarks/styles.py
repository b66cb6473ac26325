"""Style clustering benchmark: real images of three modalities, and procedural images of three looks.

Real: all 664 dsb2018_train images plus the 15 cpm15_he tissue images are clustered with the default
configuration (conf/styles/default.yaml). Reported: the chosen k, cluster sizes, purity against the
manifest's ``group`` (cpm15_he counts as tissue), the adjusted Rand index and homogeneity of the styles against
image size (height x width) within the fluorescence group (image size stands in for the acquisition set-up
there), feature time per 512x512 image, clustering time.

Baselines measured in the same run on the same features: the old code's rule (k = round(N / m) for m in 5..10
keeping the smallest within-cluster distance, which always means the largest k), and our rule with every
feature column weighted the same (no feature-family weights).

Procedural: ``--trials`` random sets of simulate.DSB_LOOKS images (random size, nucleus diameter, density), each
clustered with the default and with unweighted features; counted are the sets where a style mixes two looks.

Usage: python -m benchmarks.styles [--quick]. Writes benchmarks/results/styles.json and .md.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, homogeneity_score
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from benchmarks.common import RESULTS, git_commit, machine
from nucleaizer import io, simulate
from nucleaizer.style_features import FeatureSettings, feature_blocks, image_features
from nucleaizer.styles import (
    DEFAULT_CONFIG,
    ClusterSettings,
    cluster_features,
    settings_from_mapping,
    style_images,
)

ROOT = Path(__file__).resolve().parent.parent

DATA = ROOT.parent / "shared" / "data"
TISSUE = "colour_brightbg_HE_like"
FLUORESCENCE = "gray_darkbg_fluorescence"
log = logging.getLogger("benchmarks.styles")


def real_images(data: Path, step: int) -> tuple[list[tuple[str, np.ndarray]], pd.DataFrame]:
    """(name, image) of dsb2018_train and cpm15_he (every ``step``-th), and a table name -> group, size."""
    groups = pd.read_csv(data / "dsb2018_train" / "manifest.csv").set_index("id")["group"]
    named, rows = [], []
    for dataset in ("dsb2018_train", "cpm15_he"):
        samples = [replace(s, labels_path=None) for s in io.list_samples(data / dataset)][::step]
        for sample, image, _ in io.iter_samples(samples, on_bad_file="fail"):
            named.append((sample.name, image))
            group = groups[sample.name] if dataset == "dsb2018_train" else TISSUE
            rows.append({"image": sample.name, "dataset": dataset, "group": group,
                         "size": f"{image.shape[0]}x{image.shape[1]}"})  # fmt: skip
    return named, pd.DataFrame(rows).set_index("image")


def feature_time_512(named: list[tuple[str, np.ndarray]], settings: FeatureSettings, n: int) -> float:
    """Mean seconds of image_features on 512x512 crops of the first ``n`` images at least that large."""
    crops = [np.ascontiguousarray(image[:512, :512]) for _, image in named if min(image.shape[:2]) >= 512][:n]
    image_features(crops[0], settings)  # the first call pays for lazy imports inside scikit-image
    times = []
    for crop in crops:
        start = time.perf_counter()
        image_features(crop, settings)
        times.append(time.perf_counter() - start)
    return float(np.mean(times))


def scores(labels: np.ndarray, table: pd.DataFrame) -> dict:
    """Purity against group, mixed clusters, and agreement with image size inside the fluorescence group."""
    frame = table.assign(style=labels)
    crosstab = pd.crosstab(frame["style"], frame["group"])
    fluo = frame[frame["group"] == FLUORESCENCE]
    return {
        "k": int(crosstab.shape[0]),
        "purity": round(float(crosstab.max(axis=1).sum() / len(frame)), 4),
        "mixed_styles": int(((crosstab > 0).sum(axis=1) > 1).sum()),
        "fluorescence_size_ari": round(float(adjusted_rand_score(fluo["size"], fluo["style"])), 4),
        "fluorescence_size_homogeneity": round(float(homogeneity_score(fluo["size"], fluo["style"])), 4),
        "smallest_style": int(np.bincount(labels).min()),
    }


def old_rule(features: np.ndarray, seed: int) -> np.ndarray:
    """The 2018 code: k = round(N / m), m = 5..10, keep the smallest within-cluster distance (inertia)."""
    points = StandardScaler().fit_transform(features)
    fits = [KMeans(round(len(points) / m), n_init=10, random_state=seed).fit(points) for m in range(5, 11)]
    return min(fits, key=lambda fit: fit.inertia_).labels_


def variants(
    features: FeatureSettings, clustering: ClusterSettings
) -> dict[str, tuple[ClusterSettings, dict | None]]:
    """The weightings compared: the default, every feature family weighted 1, and every column weighted 1."""
    equal = {name: 1.0 for name in feature_blocks(features)}
    return {
        "default": (clustering, feature_blocks(features)),
        "equal family weights": (replace(clustering, block_weights=equal), feature_blocks(features)),
        "unweighted columns": (replace(clustering, block_weights={}), None),
    }


def procedural_trials(trials: int, features: FeatureSettings, clustering: ClusterSettings) -> dict:
    """Sets of simulated images of the three looks: how many sets end with a style mixing two looks."""
    compared = variants(features, clustering)
    mixed = dict.fromkeys(compared, 0)
    for trial in range(trials):
        rng = np.random.default_rng(trial)
        per_look = int(rng.integers(4, 12))
        vectors, looks = [], []
        for look in simulate.DSB_LOOKS:
            for _ in range(per_look):
                image, _ = simulate.sample(
                    look,
                    size=(int(rng.integers(48, 160)), int(rng.integers(48, 160))),
                    diameter_px=float(rng.uniform(5, 25)),
                    density=float(rng.uniform(0.05, 0.4)),
                    seed=int(rng.integers(1_000_000)),
                )
                vectors.append(image_features(image, features))
                looks.append(look)
        names = [f"{i}" for i in range(len(looks))]
        for variant, (settings, blocks) in compared.items():
            labels = cluster_features(np.stack(vectors), names, settings, blocks, seed=trial).labels
            crosstab = pd.crosstab(labels, np.array(looks))
            mixed[variant] += int(((crosstab > 0).sum(axis=1) > 1).any())
    return {"trials": trials, "sets_with_a_mixed_style": mixed}


def run(data: Path, quick: bool, trials: int, seed: int) -> dict:
    values = OmegaConf.to_container(OmegaConf.load(DEFAULT_CONFIG), resolve=False)
    features, clustering = settings_from_mapping(values)
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "commit": git_commit(),
        "machine": machine(), "config": {"quick": quick, "seed": seed, **{k: v for k, v in values.items() if k != "seed"}},
    }  # fmt: skip
    start = time.perf_counter()
    named, table = real_images(data, step=4 if quick else 1)
    result["read_s"] = round(time.perf_counter() - start, 2)
    result["images"] = {"total": len(table), **table["group"].value_counts().to_dict()}
    result["features_s_per_512x512"] = round(feature_time_512(named, features, n=20), 4)
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        styles = style_images(named, out, features, clustering, seed)
        result["style_images_s"] = round(time.perf_counter() - start, 2)
        vectors = pd.read_csv(Path(out) / "features.csv", index_col="image").loc[table.index].to_numpy()
    labels = pd.Series(styles.labels, index=styles.names).loc[table.index].to_numpy()
    result["default"] = {**scores(labels, table), "k_chosen": styles.k_chosen, "sizes": styles.sizes,
                         "merges": len(styles.merges), "silhouette": styles.summary()["silhouette"]}  # fmt: skip
    result["variants"] = {}
    for name, (settings, blocks) in list(variants(features, clustering).items())[1:]:
        start = time.perf_counter()
        other = cluster_features(vectors, list(table.index), settings, blocks, seed)
        result["variants"][name] = {**scores(other.labels, table), "k_chosen": other.k_chosen,
                                    "seconds": round(time.perf_counter() - start, 2)}  # fmt: skip
    start = time.perf_counter()
    with threadpool_limits(limits=1, user_api="openmp"):  # as in nucleaizer.styles: threads only contend here
        result["old_rule"] = {
            **scores(old_rule(vectors, seed), table),
            "seconds": round(time.perf_counter() - start, 2),
        }
    result["procedural"] = procedural_trials(trials, features, clustering)
    return result


def markdown(result: dict) -> str:
    m, d, c = result["machine"], result["default"], result["config"]
    compared = {"default (this code)": d, **{f"same rule, {k}": v for k, v in result["variants"].items()},
                "old rule (largest k by inertia), unweighted columns": result["old_rule"]}  # fmt: skip
    rows = "\n".join(
        f"| {name} | {r['k']} | {r['purity']:.4f} | {r['mixed_styles']} | {r['smallest_style']} | "
        f"{r['fluorescence_size_ari']:.3f} | {r['fluorescence_size_homogeneity']:.3f} |"
        for name, r in compared.items()
    )
    images = ", ".join(f"{group} {count}" for group, count in result["images"].items())
    procedural = result["procedural"]
    mixed = ", ".join(f"{k} {v}" for k, v in procedural["sets_with_a_mixed_style"].items())
    return f"""# Style clustering benchmark

`python -m benchmarks.styles{" --quick" if c["quick"] else ""}` on {result["date"]}, commit `{result["commit"]}`;
{m["platform"]}, {m["cpu_count"]} CPUs (shared; 1-min load average {m["load_average_1min_at_start"]:.1f} at
start), numpy {m["numpy"]}. Configuration: conf/styles/default.yaml, seed {c["seed"]}.

Images: {images} (cpm15_he counted as tissue, {TISSUE}).

- Features: **{result["features_s_per_512x512"]:.3f} s per 512x512 image** (mean over 20 crops of real images).
- Features, clustering and outputs (CSV, montages) of all images: {result["style_images_s"]:.1f} s; reading
  the files: {result["read_s"]:.1f} s.
- k chosen by the silhouette rule: **{d["k_chosen"]}**; after {d["merges"]} merges of clusters under
  {c["min_images_per_style"]} images: **{d["k"]} styles**.
- Purity against `group`: **{d["purity"]:.4f}**; adjusted Rand index of the styles against image size within
  the fluorescence group: **{d["fluorescence_size_ari"]:.3f}** (homogeneity {d["fluorescence_size_homogeneity"]:.3f}).
- Style sizes: {d["sizes"]}.

| clustering | styles | purity vs group | styles mixing groups | smallest style | ARI vs image size (fluorescence) | size homogeneity (fluorescence) |
| --- | --- | --- | --- | --- | --- | --- |
{rows}

The ARI is low by design: the rule over-clusters, so each image-size group is split over several styles,
which ARI counts against it. Homogeneity (1 = no style holds two image sizes) says whether styles follow the
acquisition set-up. The old rule reaches it by taking the largest k and keeping singleton styles.

Procedural sets of the three simulated looks (random image sizes, nucleus diameters and densities;
{procedural["trials"]} sets): sets in which some style mixes two looks: {mixed}.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--quick", action="store_true", help="every 4th image, 3 procedural sets")
    parser.add_argument("--trials", type=int, default=None, help="procedural sets (default 12, quick 3)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    trials = args.trials if args.trials is not None else (3 if args.quick else 12)
    result = run(args.data, args.quick, trials, args.seed)
    name = "styles_quick" if args.quick else "styles"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    text = markdown(result)
    (RESULTS / f"{name}.md").write_text(text)
    print(text)
    print(f"wrote {RESULTS / name}.json and .md")


if __name__ == "__main__":
    main()
