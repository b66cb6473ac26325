"""The built-in demo end to end, as a user runs it: wall time, CPU time, stage times and the target scores.

    python -m benchmarks.demo [--work DIR] [--threads N]

Runs ``python train.py +target=demo`` (W&B off) in a fresh run folder under ``--work`` and writes
benchmarks/results/demo.{json,md}: the wall and CPU seconds of the whole command, the run report's seconds
per stage and the target DSB of AUTOstyle and NOstyle, with the date, machine and commit.
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


def run_demo(run_dir: Path, threads: int) -> dict:
    """``train.py +target=demo`` into ``run_dir`` (removed first); wall and CPU seconds and its report."""
    shutil.rmtree(run_dir, ignore_errors=True)
    command = [sys.executable, str(ROOT / "train.py"), "+target=demo", f"run_dir={run_dir}", "logger=none"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "WANDB_MODE": "disabled"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    process = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if process.returncode != 0:
        raise SystemExit(f"the demo failed (exit {process.returncode}):\n{process.stderr[-3000:]}")
    return {
        "command": " ".join(["python train.py +target=demo", f"run_dir={run_dir}", "logger=none"]),
        "wall_s": round(wall, 1),
        "cpu_s": round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 1),
        "report": json.loads((run_dir / "report.json").read_text()),
    }


def markdown(result: dict) -> str:
    report = result["report"]
    lines = [
        f"# Demo end to end ({result['date']})",
        "",
        f"`{result['command']}` on {describe_machine(result['machine'])}, {result['threads']} torch thread(s), "
        f"commit {result['commit']}: **{result['wall_s']:.0f} s wall** ({result['wall_s'] / 60:.1f} min), "
        f"{result['cpu_s']:.0f} s CPU.",
        "",
        "| stage | seconds | summary |",
        "| --- | --- | --- |",
    ]
    for stage, record in report["stages"].items():
        flat = {k: v for k, v in record["summary"].items() if not isinstance(v, (dict, list))}
        lines.append(f"| {stage} | {record['seconds']:.0f} | {flat} |")
    lines += ["", "| variant | target DSB | mAP | mF1 |", "| --- | --- | --- | --- |"]
    lines += [
        f"| {variant} | {s['dsb']:.3f} | {s['map']:.3f} | {s['mf1']:.3f} |"
        for variant, s in report["scores"].items()
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/nucleaizer_bench/demo"))
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    result = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": machine(),
        "commit": git_commit(),
        "threads": args.threads,
        **run_demo(args.work / "run", args.threads),
    }
    write_report("demo", result, markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
