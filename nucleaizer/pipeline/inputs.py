"""Before any stage runs: the demo's simulated experiment, and checks that every input a run reads is usable."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from nucleaizer import io
from nucleaizer.demo import make_demo
from nucleaizer.errors import UserError
from nucleaizer.pipeline.common import plain


def prepare_inputs(cfg: DictConfig) -> None:
    """Simulate the demo experiment when the target asks for it; check that every input folder is usable."""
    demo = OmegaConf.select(cfg, "target.demo")
    if demo is not None:
        make_demo(Path(cfg.run_dir) / "demo_data", **plain(demo))
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
    from nucleaizer.maskrcnn import read_segmenter_file
    from nucleaizer.maskrcnn_arch import MaskRCNNArch
    from nucleaizer.models import segmenter_file

    path = segmenter_file(cfg.preseg.checkpoint)
    differences = read_segmenter_file(path)["arch"].weight_shape_differences(
        MaskRCNNArch.from_config(plain(cfg.segmenter.arch))
    )
    if differences:
        raise UserError(
            f"preseg.checkpoint={cfg.preseg.checkpoint} ({path}) is another network than segmenter="
            f"{cfg.segmenter.name} ({'; '.join(differences)}): choose the segmenter it was trained with, or "
            "train a preseg model from train.datasets with preseg.checkpoint=null"
        )
