"""The whole post-processing stage in one call: train the U-Net ensemble, cache the validation inputs, tune
p1..p6 with the genetic algorithm, write everything into one folder and return the bundle's section."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from nucleaizer.errors import UserError
from nucleaizer.io import atomic_write
from nucleaizer.postprocess.genetic import GASearch
from nucleaizer.postprocess.rules import IDENTITY_PARAMS, PostprocessParams
from nucleaizer.postprocess.tune import build_cases, mean_score, tune_parameters
from nucleaizer.postprocess.unet import member_specs, train_ensemble

log = logging.getLogger(__name__)

ENSEMBLE_FILE = "unet.pt"


def fit_postprocess(
    train_pairs: Sequence[tuple[np.ndarray, np.ndarray]],
    val_items: Iterable[tuple[str, np.ndarray, np.ndarray]],
    segment: Callable[[np.ndarray], np.ndarray],
    out_dir: str | Path,
    unet: Mapping,
    ga: GASearch,
    params: Mapping[str, float],
    trainer: Mapping | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Train, tune and save post-processing; returns ``{"ensemble": "unet.pt", "params": {p1..p6}}``.

    train_pairs: (image np.uint8 (H, W, 3), labels int (H, W)) at the working scale (annotated and synthetic);
    val_items: (name, image at the working scale, ground truth int (H, W) at any scale); segment: working-scale
    image -> labels int (H, W) (the trained segmenter); unet, params: the ``postprocess`` config sections as
    plain mappings; ga: the search (``GASearch.from_config(postprocess.ga)``); trainer: Lightning settings. The GA tunes on a ``ga.val_fraction`` share of the
    validation images (drawn with ``seed``); the rest, if any, measure raw / paper / tuned scores, written to
    ``report.json`` with the ensemble, ``best_params.json`` and the GA history in ``out_dir``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    specs = member_specs(unet["members"], unet["target_blur_sigmas"], unet["depth"], unet["base_filters"])
    ensemble, losses = train_ensemble(
        train_pairs,
        specs,
        epochs=unet["epochs"],
        lr=unet["lr"],
        batch_size=unet["batch_size"],
        crop_size=unet["crop_size"],
        crops_per_image=unet["crops_per_image"],
        trainer=trainer,
        seed=seed,
    )
    ensemble.save(out / ENSEMBLE_FILE)

    cases = build_cases(val_items, segment, ensemble.predict_probability)
    if not cases:
        raise UserError("post-processing needs annotated validation images to tune on; none were given")
    order = np.random.default_rng(seed).permutation(len(cases))
    n_tune = min(max(1, round(ga.val_fraction * len(cases))), len(cases))
    tune_cases = [cases[i] for i in sorted(order[:n_tune])]
    held_out = [cases[i] for i in sorted(order[n_tune:])]
    paper = PostprocessParams.from_dict(params)
    result = tune_parameters(
        tune_cases,
        list(ga.genes),
        out_dir=out,
        initial=[paper.as_dict(), IDENTITY_PARAMS.as_dict()],
        workers=ga.workers,
        progress=progress,
        seed=seed,
        **ga.algorithm_settings(),
    )
    tuned = PostprocessParams.from_dict(result.best)

    report: dict = {
        "unet_epoch_losses": losses,
        "tuning_images": len(tune_cases),
        "held_out_images": len(held_out),
        "tuned_params": tuned.as_dict(),
        "ga_evaluations": result.evaluations,
        "ga_seconds": result.seconds,
    }
    for name, part in (("tuning", tune_cases), ("held_out", held_out)):
        if part:
            report[f"dsb_{name}"] = {
                variant: mean_score(part, p)
                for variant, p in (("raw", None), ("paper_defaults", paper), ("ga_tuned", tuned))
            }
    with atomic_write(out / "report.json") as tmp:
        Path(tmp).write_text(json.dumps(report, indent=2))
    log.info(
        "post-processing: tuned %s; DSB %s", tuned.as_dict(), report.get("dsb_held_out", report["dsb_tuning"])
    )
    return {"ensemble": ENSEMBLE_FILE, "params": tuned.as_dict()}
