"""Stage ``synthetic``: render every style's synthetic masks into images with the style's pix2pix model, and
measure how real the renders look (C2ST accuracy of a real-vs-synthetic classifier, per style).

Its outputs: ``images/`` and ``labels/`` (the synthetic pairs, listed by ``samples``) and ``styles.csv``.
"""

from __future__ import annotations

from pathlib import Path

from nucleaizer import io
from nucleaizer.errors import UserError
from nucleaizer.pipeline import masks, stylegen, styles
from nucleaizer.pipeline.common import device_of, plain
from nucleaizer.pipeline.context import Context, Stage
from nucleaizer.run_folder import RunFolder

NAME = "synthetic"


def samples(run: RunFolder) -> list[io.Sample]:
    """The synthetic (image, labels) pairs of every style."""
    return io.list_samples(run.path(NAME), require_labels=True)


def run(ctx: Context, out: Path, summary: dict) -> None:
    from stylegen import load_style, realism_report, render_masks

    cfg = ctx.cfg.stylegen
    real_by_style = styles.pairs_by_style(ctx)
    rows, realism = [], {}
    for style, style_dir in masks.style_folders(ctx.run).items():
        model = load_style(stylegen.model_file(ctx.run, style), device=device_of(ctx.cfg))
        label_files = sorted(style_dir.glob("*.png"))
        label_images = [io.read_labels(f) for f in label_files]
        generator_masks = [stylegen.generator_mask(labels, cfg.separate_nuclei) for labels in label_images]
        images = render_masks(model, generator_masks, **plain(cfg.render))
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


STAGE = Stage(
    NAME,
    "render the synthetic masks into images of each style [3, 4]",
    (),
    run,
    uses_styles=True,
)
