"""Stage ``stylegen``: one pix2pix mask-to-image model per style, trained on the style's images and binary
masks at the working scale (the ``stylegen`` package).

AUTOstyle's pairs come from the pre-segmentation, which misses nuclei; in its masks they are background, so
the generator learns to paint nuclei where a mask says background. ``stylegen.missed_nuclei`` decides what
the pairs do with them, as the classical segmentation finds them (``unlabelled_nuclei``): ``background`` (the
paper: nothing), ``ignore`` (left out of pix2pix's losses) or ``nuclei`` (added to the masks). GTstyle's
labels are complete and are used as they are.

Its outputs: ``style_<k>.pt`` (found by ``model_file``) and ``style_<k>_samples.png`` (real | mask |
synthetic). A model already written is kept when an interrupted run resumes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nucleaizer import io
from nucleaizer.errors import UserError
from nucleaizer.pipeline import styles
from nucleaizer.pipeline.common import plain, trainer_settings
from nucleaizer.pipeline.context import Context, Stage
from nucleaizer.run_folder import RunFolder

NAME = "stylegen"
MISSED_NUCLEI = ("background", "ignore", "nuclei")


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


def training_masks(
    pairs: list[tuple], missed_nuclei: str
) -> tuple[list[np.ndarray], list[np.ndarray] | None, float | None]:
    """A style's pix2pix masks (bool (H, W) per (name, image, labels) pair), its ignore masks or None, and the
    share of pixels the missed nuclei cover (None with ``background``, where they are not looked for)."""
    masks = [labels > 0 for _, _, labels in pairs]
    if missed_nuclei == "background":
        return masks, None, None
    missed = [unlabelled_nuclei(image, labels) for _, image, labels in pairs]
    share = float(np.mean([m.mean() for m in missed]))
    if missed_nuclei == "ignore":
        return masks, missed, share
    return [mask | extra for mask, extra in zip(masks, missed, strict=True)], None, share


def run(ctx: Context, out: Path, summary: dict) -> None:
    from stylegen import render_masks, sample_grid, save_style, train_style

    cfg = ctx.cfg.stylegen
    missed_nuclei = "background" if ctx.cfg.style == "gt" else cfg.missed_nuclei
    if missed_nuclei not in MISSED_NUCLEI:
        raise UserError(f"stylegen.missed_nuclei={missed_nuclei!r} is not one of {list(MISSED_NUCLEI)}")
    for style, pairs in sorted(styles.pairs_by_style(ctx).items()):
        model_path = out / f"style_{style}.pt"
        if model_path.exists():  # finished before an interruption (written atomically)
            continue
        masks, ignore, missed_share = training_masks(pairs, missed_nuclei)
        model = train_style(
            [image for _, image, _ in pairs],
            masks,
            ignore=ignore,
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
        summary.setdefault("missed_share", {})[str(style)] = (
            None if missed_share is None else round(missed_share, 4)
        )
    summary.update(styles=len(list(out.glob("style_*.pt"))))


STAGE = Stage(
    NAME,
    "train one pix2pix mask-to-image model per style [3]",
    ("stylegen", "trainer"),
    run,
    uses_styles=True,
)
