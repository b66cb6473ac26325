"""Stage ``styles``: cluster the target images into visual styles (features, automatic k, small clusters
merged; nucleaizer.styles).

Its outputs: ``clusters.csv`` (image, style; read by ``read_styles``), features and a montage per style.
``pairs_by_style`` gives each style's images with the masks that teach it (the pre-segmentation, or the
target labels for GTstyle) at the working scale: what stylegen, masks and synthetic learn from.
"""

from __future__ import annotations

from pathlib import Path

from nucleaizer import io
from nucleaizer.pipeline import preseg, sizes
from nucleaizer.pipeline.common import plain, read_csv, target_samples
from nucleaizer.pipeline.context import Context, Stage
from nucleaizer.run_folder import RunFolder

NAME = "styles"
TABLE = "clusters.csv"


def read_styles(run: RunFolder) -> dict[str, int]:
    """image stem -> style number."""
    return {row["image"]: int(row["style"]) for row in read_csv(run.path(NAME) / TABLE)}


def label_source(ctx: Context) -> Path:
    """Where the masks that teach the styles come from: target labels (GTstyle) or the pre-segmentation."""
    return Path(ctx.cfg.target.labels) if ctx.cfg.style == "gt" else preseg.labels_folder(ctx.run)


def pairs_by_style(ctx: Context) -> dict[int, list[tuple]]:
    """style -> [(name, image, labels)] at the working scale."""
    styles = read_styles(ctx.run)
    grouped: dict[int, list[tuple]] = {}
    for name, image, labels in sizes.working_scale_pairs(ctx, target_samples(ctx.cfg), label_source(ctx)):
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
