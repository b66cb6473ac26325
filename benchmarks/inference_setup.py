"""What the inference benchmarks share: the data, the shipped checkpoint, the tile settings, the Mask R-CNN
predictor, and running a measurement in a fresh process with its peak memory."""

from __future__ import annotations

import multiprocessing
import resource
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd

from nucleaizer.infer.tiling import TileParams
from nucleaizer.models import DEFAULT_MODEL, segmenter_file

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "dsb2018_train"
DEFAULT_CHECKPOINT = segmenter_file(DEFAULT_MODEL)  # the shipped generalist
TILE_PARAMS = TileParams(tile_size=512, overlap=64, batch_size=4)


def pick_images(per_group: int) -> list[str]:
    """Image ids: the first ``per_group`` of each group of dsb2018_train, in id order (deterministic)."""
    manifest = pd.read_csv(DATA / "manifest.csv").sort_values("id")
    return [i for _, group in manifest.groupby("group") for i in group["id"].head(per_group)]


def load_maskrcnn(checkpoint: Path | None, device: str):
    """(MaskRCNNPredictor, description) from the checkpoint, or from an untrained CPU-profile network."""
    from nucleaizer import segmenter
    from nucleaizer.config_files import load_config
    from nucleaizer.maskrcnn_arch import MaskRCNNArch

    if checkpoint is not None:
        model, arch = segmenter.load_segmenter(checkpoint, device=device)
        description = f"Mask R-CNN {arch.backbone}, trained checkpoint {checkpoint}"
    else:
        import torch

        torch.manual_seed(0)
        arch = MaskRCNNArch.from_config(load_config("segmenter", "maskrcnn_small")["arch"])
        model = segmenter.build_maskrcnn(arch).to(device).eval()
        description = f"Mask R-CNN {arch.backbone}, untrained (throughput only)"
    return segmenter.MaskRCNNPredictor(model, device=device, batch_size=TILE_PARAMS.batch_size), description


def peak_rss_kb() -> int:
    """Peak resident memory of this process (kB): VmHWM on Linux, else ru_maxrss.

    ru_maxrss of a spawned worker starts at its parent's peak (Linux keeps it across fork and exec), which
    would charge a worker with the memory of the benchmark's main process; VmHWM is the worker's own.
    """
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def peak_memory_mb(device: str) -> dict:
    peak = {"peak_rss_mb": round(peak_rss_kb() / 1024, 1)}
    if device == "cuda":
        import torch

        peak["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return peak


def in_fresh_process(function, *args) -> dict:
    """``function(*args)`` in a new process; BrokenProcessPool when that process dies (e.g. out of memory)."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *args).result()
