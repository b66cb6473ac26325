"""Stage ``styles``: cluster the target images into visual styles (features, automatic k, small clusters
merged; nucleaizer.styles).

Its outputs: ``clusters.csv`` (image, style; read by ``read_styles``), features and a montage per style.
``pairs_by_style`` gives each style's images with the masks that teach it (the pre-segmentation, or the
target labels for GTstyle and where an AUTOstyle stage is told to learn from them: ``stylegen.masks_from``,
``masks.layouts_from``) at the working scale: what stylegen, masks and synthetic learn from.
"""

from __future__ import annotations

from pathlib import Path

from nucleaizer import io
from nucleaizer.errors import UserError
from nucleaizer.pipeline import preseg, sizes
from nucleaizer.pipeline.common import plain, read_csv, target_samples
from nucleaizer.pipeline.context import Context, Stage
from nucleaizer.run_folder import RunFolder

NAME = "styles"
TABLE = "clusters.csv"
# where a stage's masks come from with style=auto: the pre-segmentation, or the target's labels (an ablation
# that measures how much a better pre-segmentation would give; GTstyle takes the labels everywhere)
MASK_SOURCES = ("preseg", "labels")


def read_styles(run: RunFolder) -> dict[str, int]:
    """image stem -> style number."""
    return {row["image"]: int(row["style"]) for row in read_csv(run.path(NAME) / TABLE)}


def teaches_from_labels(ctx: Context, source: str, key: str) -> bool:
    """Whether a stage learns from the target's labels: always for GTstyle, otherwise where its config key
    ``key`` (value ``source``, one of MASK_SOURCES) says labels."""
    if source not in MASK_SOURCES:
        raise UserError(f"{key}={source!r} is not one of {list(MASK_SOURCES)}")
    if source == "labels" and not ctx.cfg.target.get("labels"):
        raise UserError(f"{key}=labels learns from the target's labels: set target.labels=DIR")
    return ctx.cfg.style == "gt" or source == "labels"


def pairs_by_style(ctx: Context, from_labels: bool | None = None) -> dict[int, list[tuple]]:
    """style -> [(name, image, labels)] at the working scale; the labels are the target's with
    ``from_labels`` (default: for GTstyle), the pre-segmentation's otherwise."""
    from_labels = ctx.cfg.style == "gt" if from_labels is None else from_labels
    source = Path(ctx.cfg.target.labels) if from_labels else preseg.labels_folder(ctx.run)
    styles = read_styles(ctx.run)
    grouped: dict[int, list[tuple]] = {}
    for name, image, labels in sizes.working_scale_pairs(ctx, target_samples(ctx.cfg), source):
        grouped.setdefault(styles[name], []).append((name, image, labels))
    return grouped


def run(ctx: Context, out: Path, summary: dict) -> None:
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


STAGE = Stage(
    NAME,
    "cluster the target images into visual styles [2]",
    ("styles", "style", "target.labels"),
    run,
    uses_styles=True,
)
