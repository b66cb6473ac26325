"""The domain-shift benchmark's data: every target's adaptation and evaluation folders (links into
../shared/data, never copies), its annotated source and the model its adaptation starts from."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
SOURCE_GROUPS = ("gray_darkbg_fluorescence", "gray_brightbg_brightfield")
TISSUE_GROUP = "colour_brightbg_HE_like"
SHIPPED = "generalist"  # the start of the targets the shipped model never saw
TRAINED_SOURCE = "trained"  # the start trained here, in the run ``source``


@dataclass(frozen=True)
class Target:
    """A target's folders (links into ../shared/data), its annotated source and the model adaptation starts from."""

    adapt: Path
    eval: Path
    source: Path
    start: str  # SHIPPED, TRAINED_SOURCE or the path of a segmenter checkpoint


def half_of(image_id: str) -> str:
    """adapt | eval: a fixed split of the tissue images by the sha1 of the id."""
    return "eval" if int(hashlib.sha1(image_id.encode()).hexdigest(), 16) % 2 == 0 else "adapt"


def link_folder(folder: Path, ids: list[str], dataset: Path) -> Path:
    """``folder/{images,labels}`` of symbolic links to ``dataset``'s files of ``ids`` (data are never copied)."""
    for kind in ("images", "labels"):
        (folder / kind).mkdir(parents=True, exist_ok=True)
        for image_id in ids:
            link = folder / kind / f"{image_id}.png"
            if not link.exists():
                link.symlink_to(dataset / kind / f"{image_id}.png")
    return folder


def prepare_data(work: Path, quick: bool) -> dict[str, Target]:
    """Every target's folders: links into ../shared/data (data are never copied)."""
    dsb = DATA / "dsb2018_train"
    manifest = pd.read_csv(dsb / "manifest.csv")
    source_ids = sorted(manifest.loc[manifest["group"].isin(SOURCE_GROUPS), "id"])
    tissue_ids = sorted(manifest.loc[manifest["group"] == TISSUE_GROUP, "id"])
    cpm_ids = sorted(p.stem for p in (DATA / "cpm15_he" / "images").glob("*.png"))
    nih_ids = sorted(p.stem for p in (DATA / "nih3t3_fluo" / "images").glob("*.png"))
    all_dsb = sorted(manifest["id"])
    if quick:
        source_ids, tissue_ids, cpm_ids, nih_ids = source_ids[:12], tissue_ids[:12], cpm_ids[:3], nih_ids[:3]
        all_dsb = source_ids + tissue_ids
    data = work / "data"
    # quick: a tiny model trained here starts every target (the shipped one would not run the tiny profile)
    start = TRAINED_SOURCE if quick else SHIPPED
    tissue_adapt = link_folder(data / "tissue_adapt", [i for i in tissue_ids if half_of(i) == "adapt"], dsb)
    cpm = link_folder(data / "cpm15", cpm_ids, DATA / "cpm15_he")
    nih = link_folder(data / "nih3t3", nih_ids, DATA / "nih3t3_fluo")
    fluo_bf = link_folder(data / "source", source_ids, dsb)
    dsb_all = link_folder(data / "dsb2018_all", all_dsb, dsb)
    return {
        "tissue": Target(
            tissue_adapt,
            link_folder(data / "tissue_eval", [i for i in tissue_ids if half_of(i) == "eval"], dsb),
            fluo_bf,
            TRAINED_SOURCE,
        ),
        "cpm15": Target(cpm, cpm, fluo_bf if quick else dsb_all, start),
        "nih3t3": Target(nih, nih, fluo_bf if quick else dsb_all, start),
    }


def generalist_train_source(work: Path) -> Path:
    """The dsb2018_train images the shipped generalist trained on (``nucleaizer.generalist.dsb_split`` train;
    its val and test images left out): an annotated source that holds none of the held-out images
    benchmarks/source_regression.py scores."""
    from nucleaizer.generalist import dsb_split

    dsb = DATA / "dsb2018_train"
    ids = sorted(i for i in pd.read_csv(dsb / "manifest.csv")["id"] if dsb_split(i) == "train")
    return link_folder(work / "data" / "dsb2018_generalist_train", ids, dsb)


def start_checkpoint(work: Path, target: Target) -> str:
    """What ``preseg.checkpoint`` names for a target: the shipped model, the source model trained here or the
    checkpoint its start names."""
    return (
        str(work / "runs" / "source" / "preseg" / "preseg.pt")
        if target.start == TRAINED_SOURCE
        else target.start
    )
