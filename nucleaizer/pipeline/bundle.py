"""Stage ``bundle``: the model folder infer.py loads (nucleaizer.bundle): the segmenter of the chosen style,
the preseg model (unless sizes are estimated classically), the size rule, the post-processing, the config.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from nucleaizer import io
from nucleaizer.pipeline import postprocess, preseg, segmenter
from nucleaizer.pipeline.common import size_rule
from nucleaizer.pipeline.context import Context, Stage

NAME = "bundle"


def run(ctx: Context, out: Path, summary: dict) -> None:
    from nucleaizer.bundle import write_bundle

    cfg = ctx.cfg
    section = postprocess.bundle_section(ctx.run)
    files = (
        {} if section is None else {section["ensemble"]: ctx.run.path(postprocess.NAME) / section["ensemble"]}
    )
    # a classical size estimation needs no preseg model in the bundle (infer.py would never load it)
    preseg_model = None if cfg.preseg.method == "classical" else preseg.checkpoint(ctx)
    write_bundle(
        out,
        segmenter=segmenter.checkpoint(ctx.run, cfg.style),
        preseg=preseg_model,
        size=size_rule(cfg),
        postprocess=section,
        files=files,
        size_estimation=cfg.preseg.method,
    )
    with io.atomic_write(out / "config.yaml") as tmp:
        tmp.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    summary.update(postprocess=section is not None)


STAGE = Stage(NAME, "write the model folder infer.py loads [6]", (), run)
