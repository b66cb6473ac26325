"""The configuration tree (Hydra's ``conf``): inside the package, so it ships in the wheel and the console
scripts find it wherever nucleaizer is installed."""

from __future__ import annotations

from pathlib import Path

CONF_DIR = Path(__file__).resolve().parent / "conf"
# Hydra's log folder of each run inside the output/run folder (hydra.run.dir in conf/infer.yaml, train.yaml):
# Hydra makes it after the command-line checks and before the task runs.
HYDRA_FOLDER = "hydra"


def load_config(*parts: str) -> dict:
    """One file of the tree as a plain dict: ``load_config("segmenter", "maskrcnn_small")`` reads
    conf/segmenter/maskrcnn_small.yaml."""
    from omegaconf import OmegaConf

    path = CONF_DIR.joinpath(*parts[:-1], f"{parts[-1]}.yaml")
    return OmegaConf.to_container(OmegaConf.load(path))
