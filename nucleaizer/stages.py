"""The stage functions of the pipeline: each turns the run folder's earlier results into its own.

A stage function has the signature ``(ctx, out, summary)``: ``ctx`` holds the configuration, run folder and
tracker; ``out`` is the stage's (partial) folder; ``summary`` receives its headline figures. Files of
earlier stages are read from ``ctx.run.path(stage)``.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from nucleaizer import io, size
from nucleaizer.demo import make_demo
from nucleaizer.errors import UserError

log = logging.getLogger(__name__)


def prepare_inputs(cfg: DictConfig) -> None:
    """Simulate the demo experiment when the target asks for it; check that every input folder is usable."""
    demo = OmegaConf.select(cfg, "target.demo")
    if demo is not None:
        make_demo(Path(cfg.run_dir) / "demo_data", **OmegaConf.to_container(demo, resolve=True))
    io.list_samples(cfg.target.images)  # raises a UserError naming the folder when missing or empty
    labels = cfg.target.get("labels")
    if labels and not Path(labels).is_dir():
        raise UserError(f"target.labels: folder {labels} does not exist (it is optional: target.labels=null)")
    if not cfg.train.datasets and not cfg.preseg.checkpoint:
        raise UserError(
            "train.datasets is empty and preseg.checkpoint is not set: give annotated source data "
            "(train.datasets=[DIR,...]) or a pre-segmentation model (preseg.checkpoint=PATH)"
        )
    for folder in cfg.train.datasets:
        io.list_samples(folder, require_labels=True)
    if cfg.preseg.checkpoint:
        check_preseg_architecture(cfg)


def check_preseg_architecture(cfg: DictConfig) -> None:
    """The preseg model must be the segmenter config's network: the fine-tuning starts from its weights."""
    from nucleaizer.maskrcnn import arch_from_config, read_segmenter_file, weight_shape_differences
    from nucleaizer.models import segmenter_file

    path = segmenter_file(cfg.preseg.checkpoint)
    differences = weight_shape_differences(
        read_segmenter_file(path)["arch"], arch_from_config(plain(cfg.segmenter))
    )
    if differences:
        raise UserError(
            f"preseg.checkpoint={cfg.preseg.checkpoint} ({path}) is another network than segmenter="
            f"{cfg.segmenter.name} ({'; '.join(differences)}): choose the segmenter it was trained with, or "
            "train a preseg model from train.datasets with preseg.checkpoint=null"
        )


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def stage_sizes(ctx, out: Path, summary: dict) -> None:
    """Nucleus diameter per target image from the pre-segmentation (size.estimated_diameter), and its scale."""
    cfg = ctx.cfg.size
    label_files = sorted((ctx.run.path("preseg") / "labels").glob("*.png"))
    if cfg.diameter_px:
        diameters = [float(cfg.diameter_px)] * len(label_files)
        measured = [None] * len(label_files)
    else:
        measured = [size.estimated_diameter(io.read_labels(f), cfg.min_object_area_px) for f in label_files]
        if all(d is None for d in measured):
            raise UserError(
                "no nuclei were found in any target image by the pre-segmentation: set the nucleus "
                "diameter by hand (size.diameter_px=...) or give a better preseg.checkpoint"
            )
        diameters = size.fill_with_dataset_median(measured, cfg.target_diameter_px)
    rows = [
        {
            "image": f.stem,
            "measured_diameter_px": "" if m is None else round(m, 2),
            "diameter_px": round(d, 2),
            "scale": round(size.scale_factor(d, cfg.target_diameter_px, cfg.min_scale, cfg.max_scale), 4),
        }
        for f, m, d in zip(label_files, measured, diameters, strict=True)
    ]
    io.write_csv(out / "sizes.csv", rows)
    summary.update(
        images=len(rows),
        median_diameter_px=round(float(sorted(diameters)[len(diameters) // 2]), 1),
        no_detection_images=sum(m is None for m in measured) if not cfg.diameter_px else 0,
    )


# --- helpers shared by the stages ------------------------------------------------------------------------


def trainer_settings(cfg: DictConfig) -> dict:
    """The Lightning settings every trained model gets (conf/trainer/*.yaml) as a plain dict."""
    return OmegaConf.to_container(cfg.trainer, resolve=True)


def plain(node) -> dict:
    return OmegaConf.to_container(node, resolve=True)


def source_samples(cfg: DictConfig) -> list[io.Sample]:
    """Every annotated sample of train.datasets."""
    return [s for folder in cfg.train.datasets for s in io.list_samples(folder, require_labels=True)]


def target_samples(cfg: DictConfig) -> list[io.Sample]:
    return io.list_samples(cfg.target.images)


def target_scales(ctx) -> dict[str, float]:
    """image stem -> scale factor to the working scale (from the sizes stage)."""
    return {row["image"]: float(row["scale"]) for row in read_csv(ctx.run.path("sizes") / "sizes.csv")}


def working_scale_pairs(ctx, samples: list[io.Sample], labels_dir: Path | None) -> list[tuple]:
    """(image, labels) of target samples rescaled to the working scale; labels from ``labels_dir`` by stem."""
    scales = target_scales(ctx)
    pairs = []
    for sample, image, own_labels in io.iter_samples(samples, on_bad_file=ctx.cfg.train.on_bad_file):
        labels = io.read_labels(labels_dir / f"{sample.name}.png") if labels_dir is not None else own_labels
        scale = scales[sample.name]
        pairs.append((sample.name, size.rescale_image(image, scale), size.rescale_labels(labels, scale)))
    return pairs


def size_rule(cfg: DictConfig):
    from nucleaizer.size import SizeRule

    return SizeRule(
        target_diameter_px=cfg.size.target_diameter_px,
        min_scale=cfg.size.min_scale,
        max_scale=cfg.size.max_scale,
        min_object_area_px=cfg.size.min_object_area_px,
    )


def segment_folder(
    cfg: DictConfig,
    checkpoint: Path,
    samples: list[io.Sample],
    out: Path,
    diameters: dict[str, float] | None = None,
) -> dict[str, np.ndarray]:
    """Segment ``samples`` with a segmenter checkpoint; labels go to ``out/<stem>.png`` and are returned.

    diameters: nucleus diameter per image stem; None lets the model estimate it in a first pass.
    """
    from nucleaizer.baseline import ClassicalPredictor
    from nucleaizer.inference import NucleusSegmenter
    from nucleaizer.maskrcnn import MaskRCNNPredictor

    predictor = MaskRCNNPredictor.from_file(checkpoint, device=device_of(cfg))
    segmenter = NucleusSegmenter(predictor, size=size_rule(cfg), size_guess=ClassicalPredictor())
    return write_segmentations(
        cfg,
        samples,
        out,
        lambda name, image: segmenter.segment(image, diameter_px=(diameters or {}).get(name)),
        f"segmenting with {checkpoint.stem}",
    )


def write_segmentations(
    cfg: DictConfig,
    samples: list[io.Sample],
    out: Path,
    segment: Callable[[str, np.ndarray], np.ndarray],
    desc: str,
) -> dict[str, np.ndarray]:
    """``segment(name, image)`` of every sample, written to ``out/<stem>.png`` and returned by stem."""
    results = {}
    for sample, image, _ in tqdm(
        io.iter_samples(samples, on_bad_file=cfg.train.on_bad_file),
        total=len(samples),
        desc=desc,
        unit="image",
    ):
        results[sample.name] = segment(sample.name, image)
        io.write_labels(out / f"{sample.name}.png", results[sample.name])
    return results


def device_of(cfg: DictConfig) -> str:
    """Where a stage predicts: the GPU when the trainer may use one and one is visible, else the CPU."""
    from nucleaizer.devices import resolve_device

    return resolve_device("auto") if cfg.trainer.accelerator in ("gpu", "cuda", "auto") else "cpu"


def fit_kwargs(cfg: DictConfig, stages_key: str = "stages") -> dict:
    """fit_segmenter keyword arguments from the segmenter and size configuration."""
    from nucleaizer.segmenter import training_kwargs_from_config

    kwargs = training_kwargs_from_config(plain(cfg.segmenter))
    kwargs["stages"] = plain(cfg.segmenter[stages_key])
    kwargs["synthetic_share"] = 0.0  # the segmenter stage sets it for variants that have synthetic pairs
    trainer = trainer_settings(cfg)
    if cfg.segmenter.get("precision") is not None:  # the segmenter's own (e.g. auto: bf16 where native)
        trainer["precision"] = cfg.segmenter.precision
    kwargs.update(
        target_diameter_px=cfg.size.target_diameter_px,
        min_scale=cfg.size.min_scale,
        max_scale=cfg.size.max_scale,
        min_object_area_px=cfg.size.min_object_area_px,
        trainer=trainer,
        seed=cfg.seed,
    )
    return kwargs


def split_train_val(cfg: DictConfig, samples: list[io.Sample]) -> tuple[list[io.Sample], list[io.Sample]]:
    """The segmenter's fixed split by hash of the sample name (segmenter.val_fraction, max_val_images)."""
    from nucleaizer.segmenter import split_train_val as split

    return split(samples, cfg.segmenter.val_fraction, cfg.segmenter.max_val_images)


# --- the stages -------------------------------------------------------------------------------------------


def stage_preseg(ctx, out: Path, summary: dict) -> None:
    """Train (or take) the pre-segmentation model and segment every target image with it."""
    from nucleaizer.segmenter import fit_segmenter

    cfg = ctx.cfg
    if cfg.preseg.checkpoint:
        checkpoint = preseg_checkpoint(ctx)
        summary["trained"] = False
    else:
        train, val = split_train_val(cfg, source_samples(cfg))
        kwargs = fit_kwargs(cfg)
        kwargs["augment"] = {**kwargs.get("augment", {}), "rescale": cfg.preseg.rescale_jitter}
        checkpoint = fit_segmenter(train, val, out, checkpoint_name="preseg.pt", **kwargs)
        summary.update(trained=True, train_images=len(train), val_images=len(val))
    samples = target_samples(cfg)
    if cfg.preseg.method == "classical":
        from nucleaizer.baseline import segment_classical

        labels = write_segmentations(
            cfg, samples, out / "labels", lambda _, image: segment_classical(image), "segmenting classically"
        )
    else:
        labels = segment_folder(
            cfg,
            checkpoint,
            samples,
            out / "labels",
            diameters={s.name: cfg.size.diameter_px for s in samples} if cfg.size.diameter_px else None,
        )
    summary.update(
        method=cfg.preseg.method, images=len(labels), objects=int(sum(lab.max() for lab in labels.values()))
    )


def preseg_checkpoint(ctx) -> Path:
    """The preseg model's .pt: the one preseg.checkpoint names (shipped, bundle or file), else the one trained."""
    from nucleaizer.models import segmenter_file

    if ctx.cfg.preseg.checkpoint:
        return segmenter_file(ctx.cfg.preseg.checkpoint)
    return ctx.run.path("preseg") / "preseg.pt"


def stage_styles(ctx, out: Path, summary: dict) -> None:
    """Cluster the target images into styles (features, automatic k, small clusters merged)."""
    from nucleaizer.styles import find_styles, settings_from_mapping

    features, clustering = settings_from_mapping(plain(ctx.cfg.styles))
    result = find_styles(
        ctx.cfg.target.images,
        out,
        features,
        clustering,
        seed=ctx.cfg.seed,
        on_bad_file=ctx.cfg.train.on_bad_file,
    )
    montages = {p.stem: io.read_image(p) for p in sorted(out.glob("style_*.png"))}
    ctx.tracker.log_images("styles/montages", montages)
    summary.update(k_chosen=int(result.k_chosen), styles=int(result.k), sizes=[int(n) for n in result.sizes])


def style_of_images(ctx) -> dict[str, int]:
    """image stem -> style number (from the styles stage)."""
    return {row["image"]: int(row["style"]) for row in read_csv(ctx.run.path("styles") / "clusters.csv")}


def style_label_source(ctx) -> Path:
    """Where the masks that teach the styles come from: target labels (GTstyle) or the pre-segmentation."""
    return Path(ctx.cfg.target.labels) if ctx.cfg.style == "gt" else ctx.run.path("preseg") / "labels"


def pairs_by_style(ctx) -> dict[int, list[tuple]]:
    """style -> [(name, image, labels)] at the working scale."""
    styles = style_of_images(ctx)
    grouped: dict[int, list[tuple]] = {}
    for name, image, labels in working_scale_pairs(ctx, target_samples(ctx.cfg), style_label_source(ctx)):
        grouped.setdefault(styles[name], []).append((name, image, labels))
    return grouped


def stage_stylegen(ctx, out: Path, summary: dict) -> None:
    """One pix2pix model per style, trained on its images and binary masks at the working scale."""
    from stylegen import render_masks, sample_grid, save_style, train_style

    cfg = ctx.cfg.stylegen
    for style, pairs in sorted(pairs_by_style(ctx).items()):
        model_path = out / f"style_{style}.pt"
        if model_path.exists():  # finished before an interruption (written atomically)
            continue
        model = train_style(
            [image for _, image, _ in pairs],
            [labels > 0 for _, _, labels in pairs],
            seed=ctx.cfg.seed + style,
            trainer=trainer_settings(ctx.cfg),
            root_dir=str(out / "lightning"),
            **plain(cfg.train),
        )
        masks, images = model.sample_tiles
        grid = sample_grid(images, masks, np.stack(render_masks(model, masks, **plain(cfg.render))))
        io.write_image(out / f"style_{style}_samples.png", grid)
        ctx.tracker.log_images(f"stylegen/style_{style}", {"real | mask | synthetic": grid})
        save_style(model_path, model)
    summary.update(styles=len(list(out.glob("style_*.pt"))))


def mask_database(ctx, out: Path):
    """The nucleus shape database: the configured file, or one built from train.datasets in ``out``."""
    from mask_db import MaskDatabase

    cfg = ctx.cfg.masks
    if cfg.database:
        if not Path(cfg.database).is_file():
            raise UserError(
                f"masks.database: {cfg.database} does not exist; build one with "
                "python -m mask_db build DB.sqlite DATASET_DIR, or leave masks.database=null"
            )
        return MaskDatabase(cfg.database)
    database = MaskDatabase(out / "nuclei.sqlite", create=True)
    items = (
        (sample.labels_path.parent.parent.name, sample.name, labels)
        for sample, _, labels in io.iter_samples(
            source_samples(ctx.cfg), on_bad_file=ctx.cfg.train.on_bad_file
        )
    )
    database.add_many(items, min_area=cfg.min_area)
    return database


# masks config keys that are not LayoutComposer arguments
MASKS_PIPELINE_KEYS = (
    "database",
    "n_per_style",
    "n_per_style_large",
    "large_diameter_px",
    "size",
    "min_area",
    "seed",
)


def stage_masks(ctx, out: Path, summary: dict) -> None:
    """Synthetic label images per style that imitate its sizes, shapes and density (mask_db)."""
    from mask_db import LayoutComposer, montage, style_statistics

    cfg = ctx.cfg.masks
    composer_options = {k: v for k, v in plain(cfg).items() if k not in MASKS_PIPELINE_KEYS}
    counts = {}
    with mask_database(ctx, out) as database:
        for style, pairs in sorted(pairs_by_style(ctx).items()):
            real = [labels for _, _, labels in pairs]
            stats = style_statistics(real, min_area=cfg.min_area)
            if stats.objects["area"].size == 0:
                log.warning(
                    "style %d: no whole nucleus in its pre-segmentation; no synthetic masks for it", style
                )
                continue
            diameter = 2 * np.sqrt(np.median(stats.objects["area"]) / np.pi)
            n_masks = cfg.n_per_style_large if diameter >= cfg.large_diameter_px else cfg.n_per_style
            generated = LayoutComposer(stats, database, **composer_options).compose(
                n_masks, size=cfg.size, seed=ctx.cfg.seed + style
            )
            for index, labels in enumerate(generated):
                io.write_labels(out / f"style_{style}" / f"{index:03d}.png", labels)
            picture = montage(real, generated)
            io.write_image(out / f"style_{style}_montage.png", picture)
            ctx.tracker.log_images("masks/montages", {f"style {style}: real (top) and generated": picture})
            counts[style] = n_masks
    summary.update(styles=len(counts), masks=sum(counts.values()))


def stage_synthetic(ctx, out: Path, summary: dict) -> None:
    """Render every style's synthetic masks with its style model; measure how real the renders look."""
    from stylegen import load_style, realism_report, render_masks

    cfg = ctx.cfg.stylegen
    real_by_style = pairs_by_style(ctx)
    rows, realism = [], {}
    for style_dir in sorted(p for p in ctx.run.path("masks").glob("style_*") if p.is_dir()):
        style = int(style_dir.name.removeprefix("style_"))
        model = load_style(ctx.run.path("stylegen") / f"{style_dir.name}.pt", device=device_of(ctx.cfg))
        label_files = sorted(style_dir.glob("*.png"))
        label_images = [io.read_labels(f) for f in label_files]
        images = render_masks(model, [labels > 0 for labels in label_images], **plain(cfg.render))
        for label_file, labels, image in zip(label_files, label_images, images, strict=True):
            name = f"{style_dir.name}_{label_file.stem}"
            io.write_image(out / "images" / f"{name}.png", image)
            io.write_labels(out / "labels" / f"{name}.png", labels)
            rows.append({"image": name, "style": style})
        report = realism_report(
            [image for _, image, _ in real_by_style[style]], images, seed=ctx.cfg.seed, **plain(cfg.realism)
        )
        realism[style] = {
            "c2st_accuracy": round(report["c2st"]["accuracy"], 3),
            "wasserstein_mean": round(report["wasserstein_mean"], 2),
        }
        ctx.tracker.log_images(
            f"synthetic/{style_dir.name}",
            {f.stem: im for f, im in zip(label_files[:4], images[:4], strict=False)},
        )
    if not rows:
        raise UserError("no synthetic pairs were made (no style had usable nuclei): run with style=none")
    io.write_csv(out / "styles.csv", rows)
    summary.update(pairs=len(rows), realism=realism)


def variants(cfg: DictConfig) -> list[str]:
    """The style variant of the model to ship first, then those trained only for comparison."""
    return list(dict.fromkeys([cfg.style, *cfg.get("compare", [])]))


def score_target(ctx, predictions: dict[str, np.ndarray]) -> dict | None:
    """Summary scores of predicted target labels against target.labels (None when there are none)."""
    from nucleaizer.metrics import score_image, summarize

    labels_dir = ctx.cfg.target.get("labels")
    if not labels_dir:
        return None
    truth = io.files_by_stem(Path(labels_dir), io.LABEL_SUFFIXES)
    per_image = [
        score_image(io.read_labels(truth[name]), labels)
        for name, labels in predictions.items()
        if name in truth
    ]
    return {k: v for k, v in summarize(per_image).items() if not isinstance(v, dict)}


def stage_segmenter(ctx, out: Path, summary: dict) -> None:
    """Fine-tune Mask R-CNN from the pre-segmentation model, per variant, and score it on the target."""
    from nucleaizer.segmenter import fit_segmenter

    cfg = ctx.cfg
    train, val = split_train_val(cfg, source_samples(cfg))
    synthetic_dir = ctx.run.path("synthetic")
    diameters = {
        row["image"]: float(row["diameter_px"]) for row in read_csv(ctx.run.path("sizes") / "sizes.csv")
    }
    scores = {}
    for variant in variants(cfg):
        checkpoint = out / f"{variant}.pt"
        kwargs = fit_kwargs(cfg, stages_key="finetune_stages")
        if variant != "none":
            kwargs["synthetic_samples"] = io.list_samples(synthetic_dir, require_labels=True)
            kwargs["synthetic_share"] = cfg.segmenter.synthetic_share
        if not checkpoint.exists():  # finished before an interruption otherwise
            fit_segmenter(
                train,
                val,
                out / variant,
                init_checkpoint=preseg_checkpoint(ctx),
                checkpoint_name="model.pt",
                **kwargs,
            )
            (out / variant / "model.pt").replace(checkpoint)
        predictions = segment_folder(
            cfg, checkpoint, target_samples(cfg), out / variant / "labels", diameters
        )
        log_overlays(ctx, f"segmenter/{variant}_overlays", predictions)
        scored = score_target(ctx, predictions)
        if scored is not None:
            scores[STYLE_NAMES[variant]] = scored
    summary.update(variants=variants(cfg), scores=scores)


STYLE_NAMES = {"none": "nostyle", "auto": "autostyle", "gt": "gtstyle"}
OVERLAYS_LOGGED = 4  # target images whose segmentation overlay goes to W&B per variant


def log_overlays(ctx, key: str, predictions: dict[str, np.ndarray]) -> None:
    """Colour overlays of the first few segmented target images, to the tracker."""
    from nucleaizer.inference import as_rgb8
    from nucleaizer.overlay import overlay

    if not ctx.tracker.enabled:
        return
    images = io.files_by_stem(Path(ctx.cfg.target.images), io.IMAGE_SUFFIXES)
    ctx.tracker.log_images(
        key,
        {
            name: overlay(as_rgb8(io.read_image(images[name])), labels)
            for name, labels in list(predictions.items())[:OVERLAYS_LOGGED]
        },
    )


def working_scale_source(cfg: DictConfig, samples: list[io.Sample]):
    """(name, image, labels, scale) of annotated samples rescaled so their nuclei are at the working scale."""
    rule = size_rule(cfg)
    for sample, image, labels in io.iter_samples(samples, on_bad_file=cfg.train.on_bad_file):
        diameter = rule.diameter_of(labels)
        scale = rule.scale_for(diameter) if diameter else 1.0
        yield sample.name, size.rescale_image(image, scale), size.rescale_labels(labels, scale), labels


def stage_postprocess(ctx, out: Path, summary: dict) -> None:
    """Train the U-Net ensemble and tune p1..p6 by the genetic algorithm on held-out annotated images."""
    from nucleaizer.inference import NucleusSegmenter
    from nucleaizer.maskrcnn import MaskRCNNPredictor
    from nucleaizer.postprocess.stage import fit_postprocess

    cfg = ctx.cfg
    pp = cfg.postprocess
    if not pp.enabled:
        summary["enabled"] = False
        return
    train, val = split_train_val(cfg, source_samples(cfg))
    train_pairs = [(image, labels) for _, image, labels, _ in working_scale_source(cfg, train)]
    if cfg.style != "none":
        synthetic = io.list_samples(ctx.run.path("synthetic"), require_labels=True)
        train_pairs += [(image, labels) for _, image, labels in io.iter_samples(synthetic)]
    val_items = [(name, image, truth) for name, image, _, truth in working_scale_source(cfg, val)]
    predictor = MaskRCNNPredictor.from_file(
        ctx.run.path("segmenter") / f"{cfg.style}.pt", device=device_of(cfg)
    )
    segmenter = NucleusSegmenter(predictor, size=size_rule(cfg))

    def segment_working_scale(image: np.ndarray) -> np.ndarray:
        return segmenter.predict_working_scale(image)[0]

    section = fit_postprocess(
        train_pairs,
        val_items,
        segment_working_scale,
        out,
        unet=plain(pp.unet),
        ga=plain(pp.ga),
        params=plain(pp.params),
        trainer=trainer_settings(cfg),
        seed=cfg.seed,
    )
    history = [{k: float(v) for k, v in row.items()} for row in read_csv(out / "ga_history.csv")]
    ctx.tracker.log_table("postprocess/ga_history", history)
    ctx.tracker.log_images(
        "postprocess/ga_curve", {"DSB per generation": io.read_image(out / "ga_history.png")}
    )
    summary.update(enabled=True, bundle_section=section, ga_generations=len(history))


def stage_bundle(ctx, out: Path, summary: dict) -> None:
    """The model folder infer.py loads: segmenter, preseg model, size rule, post-processing, config."""
    from nucleaizer.bundle import write_bundle

    cfg = ctx.cfg
    record = ctx.run.record("postprocess") or {}
    section = record.get("summary", {}).get("bundle_section")
    files = (
        {} if section is None else {section["ensemble"]: ctx.run.path("postprocess") / section["ensemble"]}
    )
    # a classical size estimation needs no preseg model in the bundle (infer.py would never load it)
    preseg = None if cfg.preseg.method == "classical" else preseg_checkpoint(ctx)
    write_bundle(
        out,
        segmenter=ctx.run.path("segmenter") / f"{cfg.style}.pt",
        preseg=preseg,
        size=size_rule(cfg),
        postprocess=section,
        files=files,
        size_estimation=cfg.preseg.method,
    )
    with io.atomic_write(out / "config.yaml") as tmp:
        tmp.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    summary.update(postprocess=section is not None)


STAGE_FUNCTIONS = {
    "preseg": stage_preseg,
    "sizes": stage_sizes,
    "styles": stage_styles,
    "stylegen": stage_stylegen,
    "masks": stage_masks,
    "synthetic": stage_synthetic,
    "segmenter": stage_segmenter,
    "postprocess": stage_postprocess,
    "bundle": stage_bundle,
}
