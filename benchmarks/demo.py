"""The built-in demo end to end, as a user runs it: wall time, CPU time, stage times and the target scores.

    python -m benchmarks.demo [--looks he,two_colour,dim,brightfield] [--work DIR] [--threads N]

Runs ``python train.py +target=demo`` (W&B off) in a fresh run folder under ``--work``, once per simulated target
look (``target.demo.target_style``; the first is the demo's own), and writes benchmarks/results/demo.{json,md}:
per look the wall and CPU seconds of the whole command, the run report's seconds per stage and the target scores
of AUTOstyle, NOstyle and the pre-segmentation (the shipped model before fine-tuning), with the date, machine and
commit.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import describe_machine, git_commit, machine, write_report

ROOT = Path(__file__).resolve().parent.parent


def run_demo(run_dir: Path, threads: int, look: str) -> dict:
    """``train.py +target=demo`` with the target look ``look`` into ``run_dir`` (removed first); wall and CPU
    seconds and its report."""
    shutil.rmtree(run_dir, ignore_errors=True)
    arguments = ["+target=demo", f"target.demo.target_style={look}", f"run_dir={run_dir}", "logger=none"]
    command = [sys.executable, str(ROOT / "train.py"), *arguments]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "WANDB_MODE": "disabled"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    process = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if process.returncode != 0:
        raise SystemExit(f"the demo failed (exit {process.returncode}):\n{process.stderr[-3000:]}")
    return {
        "look": look,
        "command": " ".join(["python train.py", *arguments]),
        "wall_s": round(wall, 1),
        "cpu_s": round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 1),
        "report": json.loads((run_dir / "report.json").read_text()),
    }


ERRORS = ("n_gt", "n_pred", "missed", "extra", "merges")


def scores_table(report: dict) -> list[str]:
    """The target scores and error counts of every variant and of the pre-segmentation."""
    rows = {**report["scores"], "pre-segmentation (shipped model)": report["preseg_scores"]}
    lines = [
        "| variant | target DSB | mAP | mF1 | F1@0.5 | " + " | ".join(ERRORS) + " |",
        "| --- " * (5 + len(ERRORS)) + "|",
    ]
    lines += [
        f"| {variant} | {s['dsb']:.3f} | {s['map']:.3f} | {s['mf1']:.3f} | {s['f1_50']:.3f} | "
        + " | ".join(str(s[key]) for key in ERRORS)
        + " |"
        for variant, s in rows.items()
    ]
    return lines


def markdown(result: dict) -> str:
    lines = [
        f"# Demo end to end ({result['date']})",
        "",
        f"On {describe_machine(result['machine'])}, {result['threads']} torch thread(s), commit {result['commit']}; "
        "the first look is the demo's own (`python train.py +target=demo`).",
    ]
    for run in result["runs"]:
        report = run["report"]
        lines += [
            "",
            f"## Target look `{run['look']}`",
            "",
            f"`{run['command']}`: **{run['wall_s']:.0f} s wall** ({run['wall_s'] / 60:.1f} min), "
            f"{run['cpu_s']:.0f} s CPU.",
            "",
            "| stage | seconds | summary |",
            "| --- | --- | --- |",
        ]
        for stage, record in report["stages"].items():
            flat = {k: v for k, v in record["summary"].items() if not isinstance(v, (dict, list))}
            lines.append(f"| {stage} | {record['seconds']:.0f} | {flat} |")
        lines += ["", *scores_table(report)]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/nucleaizer_bench/demo"))
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--looks",
        default="he,two_colour,dim,brightfield",
        help="comma-separated simulated target looks (nucleaizer.simulate.STYLES), the demo's own first",
    )
    args = parser.parse_args()
    looks = [look for look in args.looks.split(",") if look]
    result = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": machine(),
        "commit": git_commit(),
        "threads": args.threads,
        "runs": [run_demo(args.work / look, args.threads, look) for look in looks],
    }
    write_report("demo", result, markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
