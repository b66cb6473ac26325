"""Stage ``stylegen``: one pix2pix mask-to-image model per style, trained on the style's images and binary
masks at the working scale (the ``stylegen`` package).

AUTOstyle's pairs come from the pre-segmentation, which misses nuclei; in its masks they are background, so
the generator learns to paint nuclei where a mask says background. ``stylegen.missed_nuclei`` decides what
the pairs do with them, as the classical segmentation finds them (``unlabelled_nuclei``): ``background`` (the
paper: nothing), ``ignore`` (left out of pix2pix's losses) or ``nuclei`` (added to the masks). GTstyle's
labels are complete and are used as they are; so are the target's labels in AUTOstyle's pairs with
``stylegen.masks_from=labels`` (an ablation: pix2pix taught by complete masks, the rest of AUTOstyle as it
is). A binary mask merges touching nuclei into one blob, which the
generator then paints without the boundaries between them; ``stylegen.separate_nuclei`` parts them by a
background line (``generator_mask``), here and where the ``synthetic`` stage renders its masks.

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
    """Nuclei the labels miss, as the classical segmentation (Otsu + watershed) finds them: a label image (H, W)
    of its objects that lie mostly (over half their area) outside the labelled nuclei, less those pixels."""
    from nucleaizer.baseline import segment_classical

    found = segment_classical(image)
    labelled = labels > 0
    area = np.bincount(found.ravel())
    inside = np.bincount(found[labelled].ravel(), minlength=area.size)
    missed = inside <= area // 2
    missed[0] = False
    return np.where(missed[found] & ~labelled, found, 0)


def with_nuclei(labels: np.ndarray, extra: np.ndarray) -> np.ndarray:
    """A label image (H, W) with the objects of ``extra`` (a label image outside ``labels``' nuclei) added after
    its own ids."""
    return np.where(extra > 0, extra.astype(np.int64) + int(labels.max()), labels)


def generator_mask(labels: np.ndarray, separate: bool) -> np.ndarray:
    """The binary mask pix2pix sees for a label image (H, W): its nuclei, and with ``separate`` the pixels where
    two nuclei touch (a 4-neighbour with another label) turned background, so that touching nuclei stay apart
    and the generator learns to draw the boundary between them."""
    mask = labels > 0
    if not separate:
        return mask
    padded = np.pad(labels, 1, mode="edge")
    centre = padded[1:-1, 1:-1]
    for neighbour in (padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:]):
        mask &= (neighbour == centre) | (neighbour == 0)
    return mask


def training_masks(
    pairs: list[tuple], missed_nuclei: str, separate: bool = False
) -> tuple[list[np.ndarray], list[np.ndarray] | None, float | None]:
    """A style's pix2pix masks (bool (H, W) per (name, image, labels) pair; ``generator_mask``), its ignore masks
    or None, and the share of pixels the missed nuclei cover (None with ``background``, where they are not
    looked for)."""
    if missed_nuclei == "background":
        return [generator_mask(labels, separate) for _, _, labels in pairs], None, None
    missed = [unlabelled_nuclei(image, labels) for _, image, labels in pairs]
    share = float(np.mean([(extra > 0).mean() for extra in missed]))
    if missed_nuclei == "ignore":
        return [generator_mask(labels, separate) for _, _, labels in pairs], [m > 0 for m in missed], share
    added = [with_nuclei(labels, extra) for (_, _, labels), extra in zip(pairs, missed, strict=True)]
    return [generator_mask(labels, separate) for labels in added], None, share


def run(ctx: Context, out: Path, summary: dict) -> None:
    from stylegen import render_masks, sample_grid, save_style, train_style

    cfg = ctx.cfg.stylegen
    from_labels = styles.teaches_from_labels(ctx, cfg.masks_from, "stylegen.masks_from")
    missed_nuclei = "background" if from_labels else cfg.missed_nuclei
    if missed_nuclei not in MISSED_NUCLEI:
        raise UserError(f"stylegen.missed_nuclei={missed_nuclei!r} is not one of {list(MISSED_NUCLEI)}")
    for style, pairs in sorted(styles.pairs_by_style(ctx, from_labels).items()):
        model_path = out / f"style_{style}.pt"
        if model_path.exists():  # finished before an interruption (written atomically)
            continue
        masks, ignore, missed_share = training_masks(pairs, missed_nuclei, cfg.separate_nuclei)
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
