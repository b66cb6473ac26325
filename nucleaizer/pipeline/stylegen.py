"""Stage ``stylegen``: one pix2pix mask-to-image model per style, trained on the style's images and binary
masks at the working scale (the ``stylegen`` package).

With ``stylegen.ignore_unlabelled`` (AUTOstyle only: GTstyle's labels are complete), the nuclei the
pre-segmentation missed, as the classical segmentation sees them, are left out of pix2pix's losses, so that
the generator does not learn to paint unlabelled nuclei into the background.

Its outputs: ``style_<k>.pt`` (found by ``model_file``) and ``style_<k>_samples.png`` (real | mask |
synthetic). A model already written is kept when an interrupted run resumes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nucleaizer import io
from nucleaizer.pipeline import styles
from nucleaizer.pipeline.common import plain, trainer_settings
from nucleaizer.pipeline.context import Context, Stage
from nucleaizer.run_folder import RunFolder

NAME = "stylegen"


def model_file(run: RunFolder, style: int) -> Path:
    return run.path(NAME) / f"style_{style}.pt"


def unlabelled_nuclei(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Nuclei the labels miss, as the classical segmentation (Otsu + watershed) finds them: bool (H, W), the
    pixels of its objects that lie mostly (over half their area) outside the labelled nuclei, less those."""
    from nucleaizer.baseline import segment_classical

    found = segment_classical(image)
    labelled = labels > 0
    area = np.bincount(found.ravel())
    inside = np.bincount(found[labelled].ravel(), minlength=area.size)
    missed = inside <= area // 2
    missed[0] = False
    return missed[found] & ~labelled


def run(ctx: Context, out: Path, summary: dict) -> None:
    from stylegen import render_masks, sample_grid, save_style, train_style

    cfg = ctx.cfg.stylegen
    ignore_unlabelled = cfg.ignore_unlabelled and ctx.cfg.style != "gt"
    for style, pairs in sorted(styles.pairs_by_style(ctx).items()):
        model_path = out / f"style_{style}.pt"
        if model_path.exists():  # finished before an interruption (written atomically)
            continue
        model = train_style(
            [image for _, image, _ in pairs],
            [labels > 0 for _, _, labels in pairs],
            ignore=[unlabelled_nuclei(image, labels) for _, image, labels in pairs]
            if ignore_unlabelled
            else None,
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
        summary.setdefault("ignored_share", {})[str(style)] = model.train_record["ignored_share"]
    summary.update(styles=len(list(out.glob("style_*.pt"))))


STAGE = Stage(
    NAME,
    "train one pix2pix mask-to-image model per style [3]",
    ("stylegen", "trainer"),
    run,
    uses_styles=True,
)
