"""The adaptation at the CPU profile's budget on every target, in one table and plot.

    python -m benchmarks.adaptation_summary [--points more_pairs,more_pairs_missed_as_nuclei]

Reads benchmarks/results/adaptation_budget_<target>.json (tissue, cpm15, nih3t3; written by
benchmarks/adaptation_budget.py) and writes benchmarks/results/adaptation_summary.{json,md,png}: per target and
point the DSB of the start, NOstyle, AUTOstyle, GTstyle and Otsu + watershed, the gain (and its mean and spread
over seeds where the point ran at several), the pre-segmentation's recall and precision, realism, size error
and minutes; the full metrics and error taxonomy where the point recorded them. ``more_pairs`` is the CPU
profile's budget with the paper's pix2pix pairs, ``more_pairs_missed_as_nuclei`` the CPU profile itself (the
nuclei the pre-segmentation missed added to the pairs' masks). Its goals section weighs every point of each
target against the issue's goals (``goal_lines``): the best gain without labels, AUTOstyle above Otsu +
watershed, GTstyle at or above AUTOstyle, and what the ablations that take a part of AUTOstyle from the labels
(``FROM_LABELS``) gave from the same start.
"""

from __future__ import annotations

import argparse
import datetime
import json

from benchmarks.adaptation_budget import FROM_LABELS, POINTS, base_point
from benchmarks.common import RESULTS, SCORE_HEADER, SCORE_RULE, score_cells, write_report
from benchmarks.domain_shift import bar_plot

TARGETS = {
    "tissue": "dsb2018_train colour tissue: adapted on one half, scored on the other 57 images; start trained "
    "here on dsb2018 fluorescence + bright-field",
    "cpm15": "cpm15 H&E, 15 images adapted unlabelled and scored; start: the shipped generalist",
    "nih3t3": "nih3t3 fluorescence, 18 images adapted unlabelled and scored; start: the shipped generalist",
}
METHODS = ("source_only", "nostyle", "autostyle", "gtstyle", "classical_baseline")
GAIN_GOAL = 0.05  # AUTOstyle - NOstyle, target DSB (the goal, on the two tissue targets)
GOAL_TARGETS = ("tissue", "cpm15")


def studies() -> dict:
    """target -> its adaptation_budget results (every point and seed)."""
    paths = {target: RESULTS / f"adaptation_budget_{target}.json" for target in TARGETS}
    return {target: json.loads(path.read_text()) for target, path in paths.items() if path.is_file()}


def collect(points: list[str], by_target: dict) -> dict:
    """target -> point -> its seed-0 record, with the start's pre-segmentation quality and the gain over seeds
    (``by_target``: ``studies()``)."""
    found = {}
    for target, study in by_target.items():
        for point in points:
            if point in study["points"]:
                found.setdefault(target, {})[point] = {
                    **study["points"][point],
                    "preseg": study.get("preseg"),
                    "over_seeds": study.get("over_seeds", {}).get(point),
                }
    return found


def mean_gain(study: dict, point: str) -> tuple[float, str]:
    """A point's gain over its seeds where it ran at several (else its one record's), and how it was
    measured."""
    seeds = study.get("over_seeds", {}).get(point)
    if seeds:
        return seeds["gain"], f"{seeds['gain']:+.3f} +- {seeds['gain_sd']:.3f} over {seeds['seeds']} seeds"
    return study["points"][point]["gain"], f"{study['points'][point]['gain']:+.3f}, one seed"


def gt_over_seeds(study: dict, point: str) -> str:
    """``; over N seeds +x +- y`` where GTstyle ran at several seeds of the point, else nothing."""
    seeds = study.get("over_seeds", {}).get(point, {})
    if "gt_gain" not in seeds:
        return ""
    return f"; over {len(seeds['gt_gains'])} seeds {seeds['gt_gain']:+.3f} +- {seeds['gt_gain_sd']:.3f}"


def goal_lines(target: str, study: dict) -> list[str]:
    """The target's figures against the goals (the gain goal on ``GOAL_TARGETS``): the best gain without labels
    (over seeds where measured), whether its AUTOstyle beats Otsu + watershed, GTstyle against AUTOstyle where
    both ran, and the label ablations beside the label-free points from the same start (same start DSB)."""
    records = study["points"]
    seed0 = {key: r for key, r in records.items() if base_point(key) == key}
    label_free = [key for key in seed0 if key not in FROM_LABELS]
    best = max(label_free, key=lambda key: mean_gain(study, key)[0])
    gain, measured = mean_gain(study, best)
    dsb = records[best]["dsb"]
    if target in GOAL_TARGETS:
        verdict = "met" if gain >= GAIN_GOAL else "missed"
    else:
        verdict = "not set for this target"
    above = "above" if dsb["autostyle"] > dsb["classical_baseline"] else "not above"
    lines = [
        f"- `{target}`: best gain without labels `{best}` {measured}: goal +{GAIN_GOAL:.2f} {verdict}; its "
        f"AUTOstyle {dsb['autostyle']:.3f} against Otsu + watershed {dsb['classical_baseline']:.3f} ({above})."
    ]
    gt_cells = [
        f"`{key}` GTstyle {d['gtstyle']:.3f} (gain {d['gtstyle'] - d['nostyle']:+.3f}{gt_over_seeds(study, key)}) "
        f"against AUTOstyle {d['autostyle']:.3f}"
        for key, d in ((key, r["dsb"]) for key, r in seed0.items())
        if "gtstyle" in d
    ]
    if gt_cells:
        lines.append(f"  - GTstyle (styles, pairs and layouts from the labels): {'; '.join(gt_cells)}.")
    for ablation in sorted(FROM_LABELS & set(seed0)):
        start = records[ablation]["dsb"]["source_only"]
        gains = sorted(
            records[key]["gain"] for key in label_free if records[key]["dsb"]["source_only"] == start
        )
        beside = (
            f"{gains[0]:+.3f} to {gains[-1]:+.3f} over {len(gains)} label-free points at seed 0"
            if gains
            else "no label-free point"
        )
        lines.append(
            f"  - `{ablation}` ({POINTS[ablation][0]}): gain {mean_gain(study, ablation)[1]}; "
            f"from the same start (DSB {start:.3f}) {beside}."
        )
    return lines


def plotted_scores(targets: dict) -> dict:
    """target -> bar -> {"dsb"}: the start, NOstyle, GTstyle and Otsu once, AUTOstyle once per point."""
    scores = {}
    for target, points in targets.items():
        bars = scores.setdefault(target, {})
        for point, record in points.items():
            for method in METHODS:
                name = f"autostyle ({point})" if method == "autostyle" else method
                if method in record["dsb"]:
                    bars.setdefault(name, {"dsb": record["dsb"][method]})
    order = ["source_only", "nostyle", *(f"autostyle ({p})" for p in POINTS), "gtstyle", "classical_baseline"]
    return {t: {m: bars[m] for m in order if m in bars} for t, bars in scores.items()}


def markdown(report: dict) -> str:
    lines = [
        f"# Adaptation at the CPU profile's budget, every target ({report['date']})",
        "",
        "Points of benchmarks/adaptation_budget.py on each target (their results files hold the machine, commit "
        "and overrides of every record). AUTOstyle and NOstyle are fine-tuned from the same start for the same "
        "steps; GTstyle learns its styles, pix2pix pairs and masks from the target's labels instead of the "
        "start's pre-segmentation. Target DSB of the seed-0 record; the gain over seeds where the point ran at "
        "several:",
        "",
        "| target | point | start | NOstyle | AUTOstyle | GTstyle | Otsu + watershed | gain | gain over seeds "
        "| pre-segmentation recall / precision | realism (C2ST) | size error | adapt min |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for target, points in report["targets"].items():
        for point, p in points.items():
            d = p["dsb"]
            cells = [f"{d[m]:.3f}" if m in d else "-" for m in METHODS]
            preseg = p["preseg"] or {}
            realism = ", ".join(f"{v:.2f}" for v in p["realism"].values())
            seeds = p["over_seeds"]
            over = f"{seeds['gain']:+.3f} +- {seeds['gain_sd']:.3f} ({seeds['seeds']})" if seeds else "-"
            lines.append(
                f"| {target} | {point} | {' | '.join(cells)} | {p['gain']:+.3f} | {over} | "
                f"{preseg.get('recall', float('nan')):.2f} / {preseg.get('precision', float('nan')):.2f} | "
                f"{realism} | {p['median_size_error']:.1%} | {p['adapt_seconds'] / 60:.0f} |"
            )
    lines += ["", *(f"- `{t}`: {TARGETS[t]}" for t in report["targets"])]
    lines += [f"- `{p}`: {POINTS[p][0]}" for p in report["points"]]
    lines += [
        "",
        "## Goals",
        "",
        *(line for target_lines in report["goals"].values() for line in target_lines),
    ]
    detailed = [
        (t, p, r["scores"]) for t, ps in report["targets"].items() for p, r in ps.items() if "scores" in r
    ]
    if detailed:
        lines += ["", "Every metric and the error taxonomy (IoU 0.5):", ""]
        lines += [f"| target | point | method {SCORE_HEADER}", f"| --- | --- | --- {SCORE_RULE}"]
        for target, point, scores in detailed:
            lines += [f"| {target} | {point} | {method} {score_cells(s)}" for method, s in scores.items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--points", default="more_pairs,more_pairs_missed_as_nuclei", help="the budget points to show"
    )
    args = parser.parse_args()
    points = [p for p in args.points.split(",") if p]
    unknown = sorted(set(points) - set(POINTS))
    if unknown:
        raise SystemExit(f"unknown budget points {unknown}; known: {', '.join(POINTS)}")
    by_target = studies()
    targets = collect(points, by_target)
    if not targets:
        raise SystemExit(f"no adaptation_budget results with points {points} in {RESULTS}")
    report = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "points": points,
        "profile": "cpu",
        "targets": targets,
        "goals": {target: goal_lines(target, study) for target, study in by_target.items()},
        "scores": plotted_scores(targets),  # domain_shift.bar_plot's input
    }
    write_report("adaptation_summary", report, markdown(report))
    bar_plot(report, RESULTS / "adaptation_summary.png")
    print(markdown(report))


if __name__ == "__main__":
    main()
