"""Tuning p1..p6 on cached cases: fitness, serial vs parallel evaluation, outputs."""

import csv
import json

import numpy as np
import pytest
from scipy import ndimage

from nucleaizer import simulate
from nucleaizer.metrics import dsb_score
from nucleaizer.postprocess.genetic import genes_from_config
from nucleaizer.postprocess.rules import IDENTITY_PARAMS, PostprocessParams
from nucleaizer.postprocess.tune import (
    CaseEvaluator,
    TuningCase,
    build_cases,
    load_cases,
    mean_score,
    save_cases,
    tune_parameters,
)

GENES = genes_from_config(
    {
        "p1_surround_fraction": {"low": 0.05, "high": 1.0, "type": "real"},
        "p2_min_area_px": {"low": 0, "high": 100, "type": "int"},
        "p3_threshold": {"low": 0.05, "high": 0.99, "type": "real"},
        "p4_erode_px": {"low": 0, "high": 3, "type": "int"},
        "p5_dilate_px": {"low": 0, "high": 3, "type": "int"},
        "p6_min_mean_prob": {"low": 0.0, "high": 0.95, "type": "real"},
    }
)


def make_case(seed: int, upscale: int = 1) -> TuningCase:
    """A segmentation whose contours are 2 px too wide, with specks; P is the true foreground, softened."""
    _, gt = simulate.sample("fluorescence", size=96, diameter_px=18, density=0.2, seed=seed)
    raw = ndimage.grey_dilation(gt, size=5)  # objects 2 px too large (touching ones grow into background)
    rng = np.random.default_rng(seed)
    specks = rng.integers(0, 96, size=(6, 2))
    for i, (y, x) in enumerate(specks):
        raw[y : y + 2, x : x + 2] = raw.max() + 1 + i
    prob = ndimage.gaussian_filter((gt > 0).astype(np.float32), 0.7)
    if upscale > 1:  # the working scale may differ from the original: the score is taken at the original
        raw = np.kron(raw, np.ones((upscale, upscale), raw.dtype))
        prob = np.kron(prob, np.ones((upscale, upscale), prob.dtype))
    return TuningCase(f"case{seed}", gt, raw, prob)


CASES = [make_case(0), make_case(1, upscale=2), make_case(2)]


def test_score_is_taken_at_the_original_size():
    case = CASES[1]
    assert case.labels.shape == (192, 192) and case.gt.shape == (96, 96)
    perfect = TuningCase("perfect", case.gt, np.kron(case.gt, np.ones((2, 2), int)), case.prob)
    assert mean_score([perfect], None) == 1.0
    assert mean_score([case], None) == pytest.approx(dsb_score(case.gt, case.labels[::2, ::2]))


def test_parallel_and_serial_evaluation_agree():
    population = [
        PostprocessParams().as_dict(),
        IDENTITY_PARAMS.as_dict(),
        {**PostprocessParams().as_dict(), "p3_threshold": 0.4, "p5_dilate_px": 2},
    ]
    with CaseEvaluator(CASES, workers=1) as serial, CaseEvaluator(CASES, workers=2) as parallel:
        assert serial(population) == parallel(population)


def test_cases_round_trip(tmp_path):
    loaded = load_cases(save_cases(tmp_path / "cases.npz", CASES))
    assert [c.name for c in loaded] == [c.name for c in CASES]
    for a, b in zip(loaded, CASES, strict=True):
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_array_equal(a.prob, b.prob)


def test_tuning_beats_raw_and_defaults_and_writes_outputs(tmp_path):
    raw = mean_score(CASES, None)
    paper = mean_score(CASES, PostprocessParams())
    result = tune_parameters(
        CASES,
        GENES,
        out_dir=tmp_path,
        initial=[PostprocessParams().as_dict(), IDENTITY_PARAMS.as_dict()],
        workers=2,
        progress=False,
        population=16,
        generations=6,
        patience=4,
        seed=0,
    )
    assert result.best_fitness >= max(raw, paper) and result.best_fitness > raw + 0.1
    assert mean_score(CASES, result.best) == pytest.approx(result.best_fitness)
    saved = json.loads((tmp_path / "best_params.json").read_text())
    assert PostprocessParams.from_dict(saved["params"]) == PostprocessParams.from_dict(result.best)
    with open(tmp_path / "ga_history.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(result.history) and float(rows[-1]["best_fitness"]) == pytest.approx(
        result.best_fitness
    )
    assert (tmp_path / "ga_history.png").stat().st_size > 1000


def test_build_cases_runs_segmenter_and_unet_once_per_image():
    calls = []

    def segment(image):
        calls.append("segment")
        return ndimage.label(image[..., 0] > 60)[0]

    items = [(f"im{s}", *simulate.sample("fluorescence", size=64, diameter_px=14, seed=s)) for s in range(2)]
    cases = build_cases(items, segment, lambda image: image[..., 0] / 255.0)
    assert calls == ["segment", "segment"] and [c.name for c in cases] == ["im0", "im1"]
    assert cases[0].labels.dtype == np.int32 and cases[0].prob.dtype == np.float32
    assert mean_score(cases[:1], None) == dsb_score(items[0][2], segment(items[0][1]))
