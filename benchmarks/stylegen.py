"""One pix2pix style model on a real style: training time, L1 to held-out real images, realism.

    python -m benchmarks.stylegen [--quick] [--gpu] [--data ../shared/data/dsb2018_train]

Data: the colour-tissue group of dsb2018_train (manifest column group == colour_brightbg_HE_like, 107 RGB
images of 256x320), masks = labels > 0. Every 5th image (sorted by id) is held out; the style is trained on
the rest with conf/stylegen/pix2pix_small.yaml and conf/trainer/cpu.yaml (the CPU profile), or with
--gpu, conf/stylegen/pix2pix.yaml and conf/trainer/auto.yaml at bf16-mixed (the GPU profile; results go to
stylegen_gpu.*). --quick cuts the budget to a smoke test (results go to stylegen_quick.*).

Measured on the held-out images, each rendered from its real mask:
- L1 (mean absolute difference, grey levels 0..255) to the real image, for the trained generator and two
  baselines measured in the same run: the untrained generator (same seed, same initial weights) and a
  two-colour image (mean training nucleus colour inside the mask, mean background colour outside).
- The realism check of stylegen.realism: classifier two-sample test accuracy (0.5 = indistinguishable) and
  per-channel Wasserstein distance, for the same three (paired: an image and its render are held out
  together), plus a real-vs-real control (training images against held-out images, unpaired), which shows
  how far two real sets of this heterogeneous group differ.
Writes benchmarks/results/stylegen[_gpu|_quick].json and .md, and a sample grid PNG (real | mask | synthetic).
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch

from benchmarks.common import RESULTS, describe_machine, git_commit, machine
from nucleaizer.config_files import load_config
from stylegen import Pix2Pix, realism_report, render_masks, sample_grid, save_style, train_style

ROOT = Path(__file__).resolve().parent.parent

GROUP = "colour_brightbg_HE_like"
log = logging.getLogger("benchmarks.stylegen")


def load_group(data: Path, group: str) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    """Ids, uint8 RGB images and bool masks (labels > 0) of one manifest group, sorted by id."""
    manifest = pd.read_csv(data / "manifest.csv")
    ids = sorted(manifest.loc[manifest["group"] == group, "id"])
    images, masks = [], []
    for name in ids:
        image = cv2.imread(str(data / "images" / f"{name}.png"), cv2.IMREAD_COLOR)  # drops alpha, BGR
        labels = cv2.imread(str(data / "labels" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        images.append(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
        masks.append(labels > 0)
    return ids, images, masks


def two_colour_images(train_images, train_masks, masks) -> list[np.ndarray]:
    """Baseline renderer: mean training nucleus colour inside each mask, mean background colour outside."""
    inside = np.concatenate([im[m] for im, m in zip(train_images, train_masks, strict=True)]).mean(0)
    outside = np.concatenate([im[~m] for im, m in zip(train_images, train_masks, strict=True)]).mean(0)
    return [np.where(m[..., None], inside, outside).round().astype(np.uint8) for m in masks]


def mean_l1(fakes: list[np.ndarray], reals: list[np.ndarray]) -> float:
    """Mean absolute difference in grey levels over all pixels and channels."""
    return float(
        np.mean(
            [
                np.abs(f.astype(np.float32) - r.astype(np.float32)).mean()
                for f, r in zip(fakes, reals, strict=True)
            ]
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "dsb2018_train")
    parser.add_argument("--quick", action="store_true", help="smoke test: 20 steps, few images")
    parser.add_argument(
        "--gpu", action="store_true", help="GPU profile: pix2pix.yaml, bf16-mixed (needs CUDA)"
    )
    parser.add_argument("--holdout-every", type=int, default=5)
    parser.add_argument(
        "--threads", type=int, default=1, help="CPU threads (the shared 2-core machine runs best at 1)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--batch-size", type=int, default=None, help="override train.batch_size (GPU exploration)"
    )
    parser.add_argument("--max-steps", type=int, default=None, help="override train.budget.max_steps")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.gpu and not torch.cuda.is_available():
        raise SystemExit("--gpu needs a CUDA device")
    if not args.gpu:
        torch.set_num_threads(args.threads)

    profile = "gpu" if args.gpu else "cpu"
    config_name = "pix2pix" if args.gpu else "pix2pix_small"
    cfg = load_config("stylegen", f"{config_name}")
    trainer = load_config("trainer", f"{'auto' if args.gpu else 'cpu'}")
    trainer["enable_progress_bar"] = False
    if args.gpu:
        trainer.update(precision="bf16-mixed", benchmark=True)  # conf/profile/gpu.yaml; fixed tile size
    train_cfg = cfg["train"]
    if args.batch_size:
        train_cfg["batch_size"] = args.batch_size
    if args.max_steps:
        train_cfg["budget"]["max_steps"] = args.max_steps
    if args.quick:
        train_cfg["budget"]["max_steps"] = 20
        train_cfg["sample_every_n_steps"] = None

    ids, images, masks = load_group(args.data, GROUP)
    held = [i for i in range(len(ids)) if i % args.holdout_every == 0]
    train_idx = [i for i in range(len(ids)) if i % args.holdout_every != 0]
    if args.quick:
        held, train_idx = held[:4], train_idx[:8]
    train_images, train_masks = [images[i] for i in train_idx], [masks[i] for i in train_idx]
    held_images, held_masks = [images[i] for i in held], [masks[i] for i in held]
    log.info(
        "%s: %d training images, %d held out; profile %s (%s)",
        GROUP,
        len(train_idx),
        len(held),
        profile,
        config_name,
    )
    load_before = list(os.getloadavg())

    model = train_style(train_images, train_masks, seed=args.seed, trainer=trainer, **train_cfg)
    record = dict(model.train_record)
    log.info("trained: %s", record)

    device = "cuda" if args.gpu else "cpu"
    started = time.perf_counter()
    fakes = render_masks(model, held_masks, device=device, **cfg["render"])
    if args.gpu:
        torch.cuda.synchronize()
    render_seconds = time.perf_counter() - started
    started = time.perf_counter()
    big = render_masks(
        model, [held_masks[0].repeat(2, 0)[:512].repeat(2, 1)[:, :512]] * 4, device=device, **cfg["render"]
    )
    render_512_seconds = (time.perf_counter() - started) / len(big)

    torch.manual_seed(args.seed)
    untrained = Pix2Pix(net_g=train_cfg["net_g"], net_d=train_cfg["net_d"], tile_size=train_cfg["tile_size"])
    untrained_fakes = render_masks(untrained, held_masks, device=device, **cfg["render"])
    baseline_fakes = two_colour_images(train_images, train_masks, held_masks)

    realism_cfg = {**cfg["realism"], "seed": args.seed}
    real_control = train_images[: len(held_images)]
    rows = {}
    for name, candidate in (
        ("trained", fakes),
        ("untrained", untrained_fakes),
        ("two_colour", baseline_fakes),
        ("real_control", real_control),
    ):
        # renders of the held-out masks pair with the held-out images; the control's images do not
        report = realism_report(held_images, candidate, paired=name != "real_control", **realism_cfg)
        rows[name] = {
            "l1": mean_l1(candidate, held_images) if name != "real_control" else None,
            "c2st_accuracy": report["c2st"]["accuracy"],
            "c2st_p_value": report["c2st"]["p_value"],
            "c2st_n_test": report["c2st"]["n_test"],
            "wasserstein_rgb": [round(d, 2) for d in report["wasserstein_rgb"]],
            "wasserstein_mean": round(report["wasserstein_mean"], 2),
        }
        log.info("%s: %s", name, rows[name])

    with tempfile.TemporaryDirectory() as folder:
        style_file_mb = save_style(Path(folder) / "style.pt", model).stat().st_size / 2**20

    suffix = "_gpu" if args.gpu else ("_quick" if args.quick else "")
    RESULTS.mkdir(parents=True, exist_ok=True)
    grid_path = RESULTS / f"stylegen{suffix}_samples.png"
    shown = slice(0, 4)
    grid = sample_grid(np.stack(held_images[shown]), np.stack(held_masks[shown]), np.stack(fakes[shown]))
    cv2.imwrite(str(grid_path), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))

    n_params_g = sum(p.numel() for p in model.net_g.parameters())
    results = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "machine": {**machine(), "load_average_before": load_before, "load_average": list(os.getloadavg())},
        "profile": profile,
        "config": {"stylegen": config_name, "train": train_cfg, "trainer": trainer, "realism": realism_cfg},
        "data": {
            "group": GROUP,
            "train_images": len(train_idx),
            "held_out_images": len(held),
            "holdout_every": args.holdout_every,
        },
        "train": {
            **record,
            "seconds_per_step": round(record["seconds"] / max(record["steps"], 1), 3),
            "generator_params": n_params_g,
        },
        "render": {
            "held_out_seconds": round(render_seconds, 2),
            "seconds_per_512px_image": round(render_512_seconds, 3),
            "device": device,
        },
        "style_file_mb": round(style_file_mb, 1),
        "held_out": rows,
        "sample_grid": str(grid_path.relative_to(ROOT)),
    }
    (RESULTS / f"stylegen{suffix}.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / f"stylegen{suffix}.md").write_text(markdown(results))
    print(markdown(results))


def markdown(r: dict) -> str:
    t, m = r["train"], r["machine"]
    lines = [
        f"# stylegen benchmark ({r['profile']} profile)",
        "",
        f"{r['date']}, commit {r['git_commit']}; {describe_machine(m)} "
        f"({m['torch_threads']} threads), GPU {m['gpu']}; load average before {m['load_average_before'][0]:.1f}, "
        f"after {m['load_average'][0]:.1f} (shared machine).",
        "",
        f"Data: {r['data']['group']} of dsb2018_train, {r['data']['train_images']} training images, "
        f"{r['data']['held_out_images']} held out (every {r['data']['holdout_every']}th). Config: "
        f"conf/stylegen/{r['config']['stylegen']}.yaml (generator {t['generator_params'] / 1e6:.1f} M parameters), "
        f"precision {t['precision']}.",
        "",
        f"Training: {t['n_tiles']} tiles, {t['steps']} steps ({t['epochs']} epochs) in {t['seconds']:.0f} s "
        f"({t['seconds_per_step']} s/step). Rendering: {r['render']['held_out_seconds']} s for the held-out masks, "
        f"{r['render']['seconds_per_512px_image']} s per 512x512 image on {r['render']['device']}. Style file "
        f"{r['style_file_mb']} MB.",
        "",
        "Held-out images rendered from their real masks, against the real images. L1 in grey levels (0..255);",
        "C2ST = held-out accuracy of a classifier telling real from synthetic 64 px patches (0.5 = indistinguishable);",
        "Wasserstein = per-channel intensity distance in grey levels (R, G, B). real_control: real training images",
        "against the held-out ones (unpaired; below 0.5 when the group is heterogeneous and images few: the",
        "classifier learns kinds of image, and the held-out split has the other kinds).",
        "",
        "| renderer | L1 | C2ST accuracy | C2ST p-value | Wasserstein R, G, B | Wasserstein mean |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, row in r["held_out"].items():
        l1 = "-" if row["l1"] is None else f"{row['l1']:.1f}"
        lines.append(
            f"| {name} | {l1} | {row['c2st_accuracy']:.3f} | {row['c2st_p_value']:.2g} | "
            f"{', '.join(f'{d:.1f}' for d in row['wasserstein_rgb'])} | {row['wasserstein_mean']:.1f} |"
        )
    lines += ["", f"Sample grid (real | mask | synthetic): `{r['sample_grid']}`", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
