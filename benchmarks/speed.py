"""Speed benchmark: throughput and peak memory of the expensive parts, each measured in a fresh process.

    python -m benchmarks.speed [--quick] [--device cpu|cuda] [--threads N] [--checkpoint PATH] [--unet PATH]
                               [--demo-report runs/demo/report.json] [--data DIR] [--only NAME ...]

1. inference: megapixels of original image per second through ``NucleusSegmenter`` (the size rule from each
   image's annotated diameter, tiles, painting and rescaling as ``conf/infer.yaml`` sets them), Mask R-CNN
   (``--checkpoint``, else an untrained network of the profile's segmenter config: throughput only) beside
   the classical baseline, on a few dsb2018_train images (procedural ``nucleaizer.simulate`` images when the
   data is absent);
2. segmenter training steps per second: ``SegmenterModule`` on the project's crop dataset and Lightning
   trainer settings, maskrcnn_small and maskrcnn_r50, timed after warm-up steps;
3. pix2pix training steps per second: ``stylegen.train_style`` with pix2pix_small (and pix2pix on a GPU);
4. genetic-algorithm evaluations per second: ``tune_parameters`` over p1..p6 on cases of a few images at
   the working scale (classical raw segmentation; probability map from ``--unet`` or the U-Net's training
   target of the ground truth);
5. the demo's end-to-end time, read from a finished demo run's ``report.json`` (the demo is not run here).

Every measurement runs in its own Python process, so its peak memory is its own: the maximum resident set
of that process (``getrusage``) and, on a GPU, ``torch.cuda.max_memory_allocated``. Configs are the project's
Hydra config composed with ``profile=cpu`` (``--device cpu``) or ``profile=gpu`` (``--device cuda``: training
in bf16-mixed as that profile sets it; inference in float32, as ``infer.py`` runs it). Torch threads:
``--threads`` (default: all cores). Writes benchmarks/results/speed[_cuda][_quick].json and .md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import RESULTS, describe_machine, git_commit, machine
from benchmarks.speed_measurements import MEASUREMENTS, demo_timings
from benchmarks.speed_setup import (
    BRIGHTFIELD,
    DATA,
    DEMO_REPORT,
    FLUORESCENCE,
    ROOT,
    TISSUE,
    pick_images,
    procedural_images,
)


# --- processes ----------------------------------------------------------------------------------------------
def peak_memory(device: str) -> dict:
    """Peak resident memory of this process (and of its largest child, e.g. a GA worker), peak CUDA memory."""
    peak = {
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_rss_children_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
        "peak_cuda_mb": None,
    }
    if device == "cuda":
        import torch

        peak["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return peak


def run_measurement(kind: str, spec: dict, threads: int | None) -> dict:
    """Run one measurement in this process with ``threads`` torch threads; adds threads and peak memory."""
    if kind not in MEASUREMENTS:
        raise ValueError(f"unknown measurement {kind!r}; known: {sorted(MEASUREMENTS)}")
    import torch

    if threads:
        torch.set_num_threads(threads)
    device = spec.get("device", "cpu")
    if device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda but torch sees no CUDA device")
        torch.cuda.reset_peak_memory_stats()
    load = os.getloadavg()[0]
    result = MEASUREMENTS[kind](**spec)
    result.update(
        torch_threads=torch.get_num_threads(),
        load_average_1min_at_start=load,
        **peak_memory(result.get("device", device)),
    )
    if device == "cuda":
        result["gpu"] = torch.cuda.get_device_name(0)
    return result


def in_fresh_process(kind: str, spec: dict, threads: int | None, timeout_s: float) -> dict:
    """run_measurement in a new Python process; a failure becomes a row with ``error``."""
    with tempfile.TemporaryDirectory() as tmp:
        spec_path, result_path = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        spec_path.write_text(json.dumps({"kind": kind, "spec": spec, "threads": threads}))
        command = [sys.executable, "-m", "benchmarks.speed", "--child", str(spec_path), str(result_path)]
        started = time.perf_counter()
        try:
            process = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
            error = None if process.returncode == 0 else (process.stderr.strip().splitlines() or ["?"])[-1]
            if error:
                print(process.stderr[-4000:], file=sys.stderr, flush=True)
        except subprocess.TimeoutExpired:
            error = f"timed out after {timeout_s:.0f} s"
        wall = round(time.perf_counter() - started, 1)
        if error is None:
            return json.loads(result_path.read_text()) | {"process_wall_s": wall}
    return {
        "name": kind,
        "value": None,
        "unit": None,
        "error": error,
        "process_wall_s": wall,
        "config": spec,
        "notes": f"failed: {error}",
    }


def child_main(spec_path: str, result_path: str) -> None:
    import logging

    logging.basicConfig(level=logging.WARNING)
    job = json.loads(Path(spec_path).read_text())
    result = run_measurement(job["kind"], job["spec"], job["threads"])
    Path(result_path).write_text(json.dumps(result, default=float))


# --- the plan, the report ------------------------------------------------------------------------------------
def plan(args: argparse.Namespace) -> list[tuple[str, str, dict, float]]:
    """(key, kind, spec, timeout s) of every measurement of this run."""
    cuda, quick = args.device == "cuda", args.quick
    profile = "gpu" if cuda else "cpu"
    real = args.data.is_dir()

    def images(per_group: dict[str, int], styles: list[str], size: int) -> dict:
        return pick_images(args.data, per_group) if real else procedural_images(styles, size)

    inference_images = images(
        {FLUORESCENCE: 1} if quick else {FLUORESCENCE: 2, TISSUE: 2, BRIGHTFIELD: 2},
        ["fluorescence"] if quick else ["fluorescence", "he", "brightfield"],
        512,
    )
    training_images = images(
        {FLUORESCENCE: 2, TISSUE: 2, BRIGHTFIELD: 2}, ["fluorescence", "he", "brightfield"], 512
    )
    style_images = images({TISSUE: 2 if quick else 4}, ["he"] * (2 if quick else 4), 512)
    ga_images = images(
        {FLUORESCENCE: 1, TISSUE: 1, BRIGHTFIELD: 1}
        if quick
        else {FLUORESCENCE: 4, TISSUE: 2, BRIGHTFIELD: 2},
        ["fluorescence", "he", "brightfield"] * (1 if quick else 2),
        320,
    )
    warm, steps = (1, 2) if quick else (2, 5)
    device = args.device
    checkpoint = str(args.checkpoint) if args.checkpoint else None
    runs = [
        (
            "inference_classical",
            "inference",
            {"kind": "classical", "images": inference_images, "profile": profile},
        ),
        (
            "inference_maskrcnn",
            "inference",
            {
                "kind": "maskrcnn",
                "images": inference_images,
                "profile": profile,
                "device": device,
                "checkpoint": checkpoint,
            },
        ),
        (
            "segmenter_maskrcnn_small",
            "segmenter_training",
            {
                "images": training_images,
                "profile": profile,
                "device": device,
                "overrides": ["segmenter=maskrcnn_small"],
                "warmup": warm,
                "steps": steps,
            },
        ),
        # the ResNet-50 configuration: 4 x 512 px crops; far slower on a CPU, so fewer steps there
        (
            "segmenter_maskrcnn_r50",
            "segmenter_training",
            {
                "images": training_images,
                "profile": profile,
                "device": device,
                "overrides": ["segmenter=maskrcnn_r50"],
                "warmup": 1 if not cuda else warm,
                "steps": (1 if quick else 2) if not cuda else steps,
            },
        ),
        (
            "pix2pix_small",
            "pix2pix_training",
            {
                "images": style_images,
                "profile": profile,
                "device": device,
                "overrides": ["stylegen=pix2pix_small"],
                "warmup": warm,
                "steps": steps,
            },
        ),
    ]
    if cuda:
        runs.append(
            (
                "pix2pix",
                "pix2pix_training",
                {
                    "images": style_images,
                    "profile": profile,
                    "device": device,
                    "overrides": ["stylegen=pix2pix"],
                    "warmup": warm,
                    "steps": steps,
                },
            )
        )
    runs.append(
        (
            "ga",
            "ga",
            {
                "images": ga_images,
                "profile": profile,
                "population": 6 if quick else 12,
                "generations": 2 if quick else 4,
                "workers": args.ga_workers,
                "unet": str(args.unet) if args.unet else None,
            },
        )
    )
    chosen = [(key, kind, spec) for key, kind, spec in runs if not args.only or key in args.only]
    return [(key, kind, spec, 300.0 if quick else 900.0) for key, kind, spec in chosen]


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:#.3g}" if abs(value) < 100 else f"{value:.0f}"


def write_markdown(path: Path, result: dict) -> None:
    m = result["machine"]
    command = (
        "python -m benchmarks.speed"
        + (" --quick" if result["quick"] else "")
        + (f" --device {result['device']}" if result["device"] != "cpu" else "")
    )
    lines = [
        f"# Speed benchmark ({result['date']})",
        "",
        f"`{command}`; commit {result['commit']}; {describe_machine(m)}, "
        f"device {result['device']}, torch threads {result['threads']}; load average {m['load_average_1min_at_start']:.1f} "
        f"at the start (the machine is shared: wall times are pessimistic); {result.get('total_wall_s', '?')} s "
        "in all.",
        "",
        "Every measurement ran in its own process; peak RSS is that process's maximum resident memory, peak "
        "CUDA its `torch.cuda.max_memory_allocated`.",
        "",
        "| measurement | value | unit | peak RSS MB | peak CUDA MB | notes |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in result["measurements"]:
        extra = [f"{row.get('device', '-')}", f"{row.get('torch_threads', '-')} torch threads"]
        if row.get("precision"):
            extra.append(row["precision"])
        if row.get("peak_rss_children_mb") and row.get("unit") == "evaluations/s":
            extra.append(f"largest worker {row['peak_rss_children_mb']} MB")
        notes = f"{row.get('notes', '')}; {row.get('data', '')}; {', '.join(extra)}"
        lines.append(
            f"| {row['name']} | {fmt(row.get('value'))} | {row.get('unit') or '-'} | "
            f"{row.get('peak_rss_mb', '-')} | {row.get('peak_cuda_mb') or '-'} | {notes} |"
        )
    demo = result["demo"]
    if demo["measured"]:
        stages = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in demo["stages"].items())
        lines.append(
            f"| demo end to end (`train.py +target=demo`, profile {demo['profile']}) | "
            f"{fmt(demo['total_seconds'])} | s | - | - | read from {demo['report']} "
            f"(written {demo['report_written']}): {stages} |"
        )
    else:
        lines.append(
            f"| demo end to end (`train.py +target=demo`) | not measured | s | - | - | no {demo['report']}; "
            "run the demo, then this script |"
        )
    lines.append("")
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        child_main(*argv[1:3])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer images and steps; writes speed_quick.*")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count(), help="torch threads (default: all cores)"
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="trained segmenter .pt for inference; an untrained network without it",
    )
    parser.add_argument(
        "--unet", type=Path, default=None, help="U-Net ensemble .pt for the GA's probability maps"
    )
    parser.add_argument(
        "--ga-workers", type=int, default=None, help="GA processes (config: postprocess.ga.workers)"
    )
    parser.add_argument(
        "--demo-report",
        type=Path,
        default=DEMO_REPORT,
        help="report.json of a finished demo run (relative to the repository root)",
    )
    parser.add_argument(
        "--data", type=Path, default=DATA, help="dsb2018_train; procedural images when absent"
    )
    parser.add_argument("--only", nargs="+", default=None, help="measure only these keys (see plan())")
    args = parser.parse_args(argv)
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("error: --device cuda but torch sees no CUDA device")
    demo_path = args.demo_report if args.demo_report.is_absolute() else ROOT / args.demo_report
    result = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": machine(),
        "commit": git_commit(),
        "device": args.device,
        "threads": args.threads,
        "quick": args.quick,
        "data": str(args.data) if args.data.is_dir() else "procedural (nucleaizer.simulate)",
        "measurements": [],
    }
    started = time.perf_counter()
    for key, kind, spec, timeout_s in plan(args):
        print(f"{key}: running", flush=True)
        row = in_fresh_process(kind, spec, args.threads, timeout_s)
        row["key"] = key
        result["measurements"].append(row)
        print(
            f"{key}: {fmt(row.get('value'))} {row.get('unit') or ''} (peak RSS {row.get('peak_rss_mb', '-')} MB, "
            f"{row['process_wall_s']} s)",
            flush=True,
        )
    result["total_wall_s"] = round(time.perf_counter() - started, 1)
    result["demo"] = demo_timings(demo_path)
    demo = result["demo"]
    print(
        f"demo end to end: {demo['total_seconds']} s"
        if demo["measured"]
        else f"demo end to end: not measured (no {demo_path})",
        flush=True,
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "speed" + ("" if args.device == "cpu" else f"_{args.device}") + ("_quick" if args.quick else "")
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    write_markdown(RESULTS / f"{name}.md", result)
    print(f"wrote {RESULTS / name}.json and .md")


if __name__ == "__main__":
    main()
