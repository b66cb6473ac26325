"""The adaptation at the CPU profile's budget on every target, in one table and plot.

    python -m benchmarks.adaptation_summary [--point more_pairs]

Reads benchmarks/results/adaptation_budget_<target>.json (tissue, cpm15, nih3t3; written by
benchmarks/adaptation_budget.py) and writes benchmarks/results/adaptation_summary.{json,md,png}: per target the
point's DSB of the start, NOstyle, AUTOstyle, GTstyle and Otsu + watershed, the gain, the pre-segmentation's
recall and precision, realism, size error and minutes; the full metrics and error taxonomy where the point
recorded them. ``more_pairs`` is the CPU profile's budget (conf/profile/cpu.yaml).
"""

from __future__ import annotations

import argparse
import datetime
import json

from benchmarks.common import RESULTS, SCORE_HEADER, SCORE_RULE, score_cells, write_report
from benchmarks.domain_shift import bar_plot

TARGETS = {
    "tissue": "dsb2018_train colour tissue: adapted on one half, scored on the other 57 images; start trained "
    "here on dsb2018 fluorescence + bright-field",
    "cpm15": "cpm15 H&E, 15 images adapted unlabelled and scored; start: the shipped generalist",
    "nih3t3": "nih3t3 fluorescence, 18 images adapted unlabelled and scored; start: the shipped generalist",
}
METHODS = ("source_only", "nostyle", "autostyle", "gtstyle", "classical_baseline")


def collect(point: str) -> dict:
    """target -> the point's record plus the start's pre-segmentation quality, for every target studied."""
    found = {}
    for target in TARGETS:
        path = RESULTS / f"adaptation_budget_{target}.json"
        if not path.is_file():
            continue
        study = json.loads(path.read_text())
        if point in study["points"]:
            found[target] = {
                **study["points"][point],
                "preseg": study.get("preseg"),
                "machine": study["machine"],
            }
    return found


def markdown(report: dict) -> str:
    lines = [
        f"# Adaptation at the CPU profile's budget, every target ({report['date']})",
        "",
        f"Point `{report['point']}` of benchmarks/adaptation_budget.py on each target (its results files hold the "
        "machine, commit and overrides). AUTOstyle and NOstyle are fine-tuned from the same start for the same "
        "steps; GTstyle learns its styles, pix2pix pairs and masks from the target's labels instead of the "
        "start's pre-segmentation. Target DSB:",
        "",
        "| target | start | NOstyle | AUTOstyle | GTstyle | Otsu + watershed | gain | pre-segmentation recall / "
        "precision | realism (C2ST) | size error | adapt min |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for target, p in report["targets"].items():
        d = p["dsb"]
        cells = [f"{d[m]:.3f}" if m in d else "-" for m in METHODS]
        preseg = p["preseg"] or {}
        realism = ", ".join(f"{v:.2f}" for v in p["realism"].values())
        lines.append(
            f"| {target} | {' | '.join(cells[:4])} | {cells[4]} | {p['gain']:+.3f} | "
            f"{preseg.get('recall', float('nan')):.2f} / {preseg.get('precision', float('nan')):.2f} | {realism} | "
            f"{p['median_size_error']:.1%} | {p['adapt_seconds'] / 60:.0f} |"
        )
    lines += ["", *(f"- `{t}`: {TARGETS[t]}" for t in report["targets"])]
    detailed = {t: p["scores"] for t, p in report["targets"].items() if "scores" in p}
    if detailed:
        lines += [
            "",
            "Every metric and the error taxonomy (IoU 0.5):",
            "",
            f"| target | method {SCORE_HEADER}",
        ]
        lines.append(f"| --- | --- {SCORE_RULE}")
        for target, scores in detailed.items():
            lines += [f"| {target} | {method} {score_cells(s)}" for method, s in scores.items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--point", default="more_pairs", help="the budget point to show (more_pairs: the CPU profile)"
    )
    args = parser.parse_args()
    targets = collect(args.point)
    if not targets:
        raise SystemExit(f"no adaptation_budget results with point {args.point} in {RESULTS}")
    report = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "point": args.point,
        "profile": "cpu",
        "targets": targets,
        # domain_shift.bar_plot's input: target -> method -> summary
        "scores": {
            t: {m: {"dsb": p["dsb"][m]} for m in METHODS if m in p["dsb"]} for t, p in targets.items()
        },
    }
    write_report("adaptation_summary", report, markdown(report))
    bar_plot(report, RESULTS / "adaptation_summary.png")
    print(markdown(report))


if __name__ == "__main__":
    main()
