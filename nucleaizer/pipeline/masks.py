"""Stage ``masks``: synthetic label images per style that imitate its sizes, shapes and density, composed
from real nucleus shapes (the mask_db database) and simulated ones. The style's statistics come from its
pre-segmentation (the target's labels with style=gt or ``masks.layouts_from=labels``), and with ``masks.count_missed_nuclei`` also from the nuclei the
pre-segmentation missed (``stylegen.unlabelled_nuclei``), so that a pre-segmentation that finds half the nuclei
does not make the synthetic layouts half as dense.

Its outputs: ``style_<k>/NNN.png`` label images (listed by ``style_folders``), ``style_<k>_montage.png``
(real above, generated below) and, when masks.database is null, ``nuclei.sqlite`` built from train.datasets.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from nucleaizer import io
from nucleaizer.errors import UserError
from nucleaizer.pipeline import styles
from nucleaizer.pipeline.common import plain, source_samples
from nucleaizer.pipeline.context import Context, Stage
from nucleaizer.pipeline.stylegen import unlabelled_nuclei, with_nuclei
from nucleaizer.run_folder import RunFolder

log = logging.getLogger(__name__)

NAME = "masks"
# masks config keys that are not LayoutComposer arguments
PIPELINE_KEYS = (
    "database",
    "n_per_style",
    "n_per_style_large",
    "large_diameter_px",
    "size",
    "min_area",
    "count_missed_nuclei",
    "layouts_from",
    "seed",
)


def style_folders(run: RunFolder) -> dict[int, Path]:
    """style -> the folder of its synthetic label images."""
    folders = sorted(p for p in run.path(NAME).glob("style_*") if p.is_dir())
    return {int(p.name.removeprefix("style_")): p for p in folders}


def mask_database(ctx: Context, out: Path):
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


def run(ctx: Context, out: Path, summary: dict) -> None:
    from mask_db import LayoutComposer, montage, style_statistics

    cfg = ctx.cfg.masks
    composer_options = {k: v for k, v in plain(cfg).items() if k not in PIPELINE_KEYS}
    from_labels = styles.teaches_from_labels(ctx, cfg.layouts_from, "masks.layouts_from")
    counts = {}
    with mask_database(ctx, out) as database:
        for style, pairs in sorted(styles.pairs_by_style(ctx, from_labels).items()):
            real = [labels for _, _, labels in pairs]
            if cfg.count_missed_nuclei and not from_labels:
                real = [with_nuclei(labels, unlabelled_nuclei(image, labels)) for _, image, labels in pairs]
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


STAGE = Stage(
    NAME,
    "compose synthetic label images per style from real and simulated nucleus shapes [4]",
    ("masks",),
    run,
    uses_styles=True,
)
