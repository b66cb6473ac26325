"""The prepared GPU check: one command, one JSON line, within 8 minutes on one H200.

    python -m benchmarks.gpu_check [--device cuda] [--train-minutes 4] [--save DIR]   # on a GPU machine
    python -m benchmarks.gpu_check --device cpu --quick                               # checks the script

1. Environment: torch, CUDA, GPU.
2. Training steps/s of the GPU profile (bf16-mixed, batch 8 of 512 px crops) for ResNet-50-FPN and the
   ImageNet-pretrained EfficientNet-Lite0-FPN (256 channels), a bare loop after a warm-up.
3. A short training run of the pretrained Lite0 (the project's trainer, GPU profile, random rescaling as for
   the generalist model) on dsb2018_train's fixed 80% split, and its DSB on the 133 held-out images (oracle
   size, no TTA). Without ../shared/data (or with --quick) simulated images stand in and the score is theirs.
4. Inference megapixels per second on a 2048 px mosaic (tiles of 512 px, batch 8).
--save DIR writes the trained weights as fp16 (``segmenter_fp16.pt``, a segmenter checkpoint) for the way
back: the next issue's generalist model can be trained this way and scored on the CPU machine.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from nucleaizer import simulate
from nucleaizer.data import image_to_tensor, instance_targets
from nucleaizer.maskrcnn import build_maskrcnn, load_segmenter, save_segmenter
from nucleaizer.maskrcnn_arch import MaskRCNNArch
from nucleaizer.maskrcnn_predictor import MaskRCNNPredictor

ROOT = Path(__file__).resolve().parent.parent

# the pretrained Lite0 with torchvision's FPN width, as changes to the GPU profile's network (maskrcnn_r50)
LITE0 = {
    "backbone": "efficientnet_lite0",
    "returned_layers": None,
    "pretrained": True,
    "frozen_batchnorm": True,
    "fpn_channels": 256,
    "anchor_sizes": [[24, 40], [48, 80], [96, 160], [192, 320]],
}


def gpu_segmenter_config() -> dict:
    """The GPU profile's segmenter section (conf/segmenter/maskrcnn_r50.yaml)."""
    from nucleaizer.config_files import load_config

    return load_config("segmenter", "maskrcnn_r50")


def environment(device: str) -> dict:
    return {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": device,
        "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None,
    }


def simulated_pairs(count: int, size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    return [
        simulate.sample(
            simulate.DSB_LOOKS[i % len(simulate.DSB_LOOKS)], size=size, diameter_px=40, density=0.3, seed=i
        )
        for i in range(count)
    ]


def steps_per_second(
    arch: MaskRCNNArch, device: str, batch: int, crop: int, steps: int, warmup: int = 2
) -> float:
    """Bare bf16 training steps/s (AdamW) of a Mask R-CNN on simulated crops, after ``warmup`` steps."""
    model = build_maskrcnn(arch).to(device).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    pairs = simulated_pairs(batch, crop)
    images = [image_to_tensor(image).to(device) for image, _ in pairs]
    targets = [{k: v.to(device) for k, v in instance_targets(labels).items()} for _, labels in pairs]
    device_type = "cuda" if device == "cuda" else "cpu"

    def step() -> None:
        with torch.autocast(device_type, dtype=torch.bfloat16):
            loss = sum(model(images, targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - started)


def short_training(device: str, minutes: float, work: Path, quick: bool) -> tuple[Path, dict]:
    """Train the pretrained Lite0 with the project's trainer; returns (checkpoint, scores on held-out images)."""
    from nucleaizer.segmenter import fit_segmenter, training_kwargs_from_config

    config = gpu_segmenter_config()
    config["arch"].update({**LITE0, "box_batch_size_per_image": 128})
    config["train"]["ema_decay"] = 0.998
    kwargs = training_kwargs_from_config(config)
    kwargs.update(
        stages=[{"trainable": "all", "lr": 4e-4, "epochs": 10_000}],
        synthetic_share=0.0,
        warmup_steps=100,
        steps_per_epoch=200,
    )
    kwargs["augment"] = {**kwargs["augment"], "rescale": 1.0}
    trainer = {
        "accelerator": "gpu" if device == "cuda" else "cpu",
        "devices": 1,
        "precision": "bf16-mixed",
        "num_workers": 8 if device == "cuda" else 0,
        "enable_progress_bar": False,
    }
    data = ROOT.parent / "shared" / "data" / "dsb2018_train"
    real = data.is_dir() and not quick
    if real:
        from benchmarks import segmenter as bench
        from nucleaizer.io import list_samples

        samples = list_samples(data, require_labels=True)
        train = bench.pairs_of([s for s in samples if bench.dsb_split(s.name) == "train"])
        val = bench.pairs_of([s for s in samples if bench.dsb_split(s.name) == "val"])
    else:
        kwargs.update(crop_size=128, batch_size=2, steps_per_epoch=3)
        train, val = simulated_pairs(6, 128), simulated_pairs(2, 128)
    started = time.perf_counter()
    path = fit_segmenter(train, val, work / "train", trainer=trainer, max_time_s=minutes * 60, **kwargs)
    result = {
        "data": "dsb2018_train" if real else "simulated",
        "train_s": round(time.perf_counter() - started, 1),
    }
    if real:
        from dataclasses import asdict

        import pandas as pd

        from benchmarks import segmenter_scoring as scoring
        from nucleaizer.generalist import dsb_split
        from nucleaizer.size import SizeRule

        manifest = pd.read_csv(data / "manifest.csv").set_index("id")
        test = [s for s in samples if dsb_split(s.name) == "test"]
        val_samples = [s for s in samples if dsb_split(s.name) == "val"]
        table, _, chosen = scoring.evaluate(
            test,
            path,
            manifest,
            asdict(SizeRule()),
            val_samples,
            [0.5, 0.6, 0.7],
            [0.5],
            ["identity"],
            with_baseline=False,
            device=device,
        )
        result["held_out_dsb"] = scoring.summarise(table)["model"]
        result["score_threshold"] = chosen["model"]["chosen"]
    return path, result


def inference_speed(checkpoint: Path, device: str, side: int) -> dict:
    """Megapixels per second of tiled prediction on a side x side mosaic of simulated images."""
    from nucleaizer.infer.tiling import TileParams, predict_image

    cell = 256
    mosaic = np.concatenate(
        [
            np.concatenate([image for image, _ in simulated_pairs(side // cell, cell)], axis=1)
            for _ in range(side // cell)
        ],
        axis=0,
    )
    predictor = MaskRCNNPredictor.from_file(checkpoint, device=device, batch_size=8)
    tiles = TileParams(tile_size=512, overlap=64, batch_size=8)
    predict_image(mosaic[:512, :512], predictor, tiles)  # warm-up
    started = time.perf_counter()
    found = predict_image(mosaic, predictor, tiles)
    seconds = time.perf_counter() - started
    return {"mosaic_px": side, "objects": len(found), "mp_per_s": round(side * side / 1e6 / seconds, 3)}


def save_fp16(checkpoint: Path, folder: Path) -> Path:
    """The trained weights as fp16 in a segmenter checkpoint (small enough to bring back)."""
    model, arch = load_segmenter(checkpoint)
    return save_segmenter(folder / "segmenter_fp16.pt", model, arch, dtype=torch.float16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes and simulated data: checks the script"
    )
    parser.add_argument("--train-minutes", type=float, default=4.0)
    parser.add_argument("--work", type=Path, default=Path("/tmp/nucleaizer_gpu_check"))
    parser.add_argument("--save", type=Path, default=None, help="write the trained weights (fp16) here")
    args = parser.parse_args()
    batch, crop, steps, warmup = (2, 96, 1, 0) if args.quick else (8, 512, 20, 2)
    resnet50 = MaskRCNNArch.from_config(gpu_segmenter_config()["arch"])
    report = {
        "environment": environment(args.device),
        "batch": batch,
        "crop_px": crop,
        "train_steps_per_s_bf16": {
            name: round(steps_per_second(arch, args.device, batch, crop, steps, warmup), 3)
            for name, arch in (("resnet50_fpn", resnet50), ("lite0_fpn256", resnet50.replace(**LITE0)))
        },
    }
    minutes = 0.05 if args.quick else args.train_minutes
    checkpoint, report["short_training"] = short_training(args.device, minutes, args.work, args.quick)
    report["inference"] = inference_speed(checkpoint, args.device, 256 if args.quick else 2048)
    if args.save is not None:
        report["saved"] = str(save_fp16(checkpoint, args.save))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
