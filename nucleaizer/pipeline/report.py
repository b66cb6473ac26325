"""The run's ``report.json`` and ``report.md``: stage timings and summaries, the target scores of every
variant and of the pre-segmentation, and which model to use (the one the bundle holds, and whether the scores
or the realism of the synthetic images argue for another)."""

from __future__ import annotations

import json
import logging

from nucleaizer.io import atomic_write
from nucleaizer.pipeline.context import Context

log = logging.getLogger(__name__)

STYLE_NAMES = {"none": "nostyle", "auto": "autostyle", "gt": "gtstyle"}
# A real-vs-synthetic classifier this accurate tells nearly every synthetic crop from a real one.
UNREALISTIC_C2ST = 0.9
# Score differences smaller than this on a target are within the noise of a few dozen images.
SCORE_NOISE = 0.01
# the scores table's row of the pre-segmentation (the start model before fine-tuning, or the classical method)
PRESEG_ROW = "pre-segmentation (before fine-tuning)"


def one_line(summary: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in summary.items() if not isinstance(v, (dict, list))) or "-"


def start_advice(
    chosen: str, scores: dict, preseg_scores: dict | None, preseg_model: str | None
) -> list[str]:
    """A sentence when the pre-segmentation scores above every fine-tuned variant: fine-tuning did not help."""
    if not preseg_scores or chosen not in scores:
        return []
    margin = preseg_scores["dsb"] - max(s["dsb"] for s in scores.values())
    if margin < SCORE_NOISE:
        return []
    # infer.py takes a shipped model's name or a bundle folder, not a bare .pt
    usable = preseg_model and not str(preseg_model).endswith(".pt")
    use = f"segment with infer.py model={preseg_model} (the start model) or " if usable else ""
    return [
        f"The pre-segmentation alone scores {margin:+.3f} DSB above every fine-tuned variant: fine-tuning did not "
        f"help on this target; {use}give the adaptation more budget (segmenter.train.finetune_stages, "
        "stylegen.train.budget.max_steps)."
    ]


def advice(
    style: str,
    scores: dict,
    realism: dict,
    preseg_scores: dict | None = None,
    preseg_model: str | None = None,
) -> list[str]:
    """Which model to use, in sentences: from the target scores when there are labels (``preseg_scores``: the
    pre-segmentation's, ``preseg_model``: the start model a user can segment with, if any), else from
    realism."""
    chosen = STYLE_NAMES[style]
    lines = [f"The model folder (bundle) holds the {chosen} model (style={style})."]
    if len(scores) > 1:
        best = max(scores, key=lambda v: scores[v]["dsb"])
        margin = scores[best]["dsb"] - scores[chosen]["dsb"] if chosen in scores else 0.0
        if best == chosen or margin < SCORE_NOISE:
            lines.append(
                f"On the target labels it scores as well as any variant trained beside it "
                f"(best: {best}, DSB {scores[best]['dsb']:.3f}): use it."
            )
        else:
            other = {v: k for k, v in STYLE_NAMES.items()}[best]
            lines.append(
                f"On the target labels {best} scores {margin:+.3f} DSB above it: run again with style={other} "
                "for the bundle to hold that model."
            )
    elif not scores:
        lines.append(
            "There were no target labels to compare variants: label a few target images and run with "
            "target.labels=DIR compare=[none] to measure whether the synthetic images help."
        )
    lines += start_advice(chosen, scores, preseg_scores, preseg_model)
    unrealistic = {
        s: r["c2st_accuracy"] for s, r in realism.items() if r["c2st_accuracy"] >= UNREALISTIC_C2ST
    }
    if style != "none" and unrealistic:
        lines.append(
            f"The synthetic images of style(s) {', '.join(map(str, unrealistic))} are easy to tell from real "
            f"ones (C2ST accuracy {', '.join(f'{a:.2f}' for a in unrealistic.values())}, 0.5 = "
            "indistinguishable): more stylegen steps (stylegen.train.budget.max_steps) should help them."
        )
    return lines


def write_report(ctx: Context, stage_names: list[str]) -> dict:
    """``report.json`` and ``report.md`` in the run folder from the records of ``stage_names``; logs the
    scores."""
    stages = {}
    for stage in stage_names:
        record = ctx.run.record(stage)
        if record is not None:
            stages[stage] = {"seconds": record["seconds"], "summary": record["summary"]}
    scores = stages.get("segmenter", {}).get("summary", {}).get("scores", {})
    preseg_scores = stages.get("segmenter", {}).get("summary", {}).get("preseg_scores")
    realism = stages.get("synthetic", {}).get("summary", {}).get("realism", {})
    preseg_model = ctx.cfg.preseg.checkpoint if ctx.cfg.preseg.method == "model" else None
    report = {
        "target": ctx.cfg.target.name,
        "style": ctx.cfg.style,
        "profile": ctx.cfg.profile,
        "stages": stages,
        "scores": scores,
        "preseg_scores": preseg_scores,
        "advice": advice(ctx.cfg.style, scores, realism, preseg_scores, preseg_model),
        "total_seconds": round(sum(s["seconds"] for s in stages.values()), 1),
    }
    with atomic_write(ctx.run.root / "report.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2, default=str))
    lines = [
        f"# Run report: {report['target']}",
        "",
        f"style={report['style']}, profile={report['profile']}, total {report['total_seconds']} s",
        "",
        "| stage | seconds | summary |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {name} | {s['seconds']:.0f} | {one_line(s['summary'])} |" for name, s in stages.items()]
    if scores:
        lines += [
            "",
            "## Scores on the target labels",
            "",
            "| variant | DSB | mAP | mF1 |",
            "| --- | --- | --- | --- |",
        ]
        rows = {**scores, **({PRESEG_ROW: preseg_scores} if preseg_scores else {})}
        lines += [
            f"| {variant} | {s['dsb']:.3f} | {s['map']:.3f} | {s['mf1']:.3f} |" for variant, s in rows.items()
        ]
        for variant, s in scores.items():
            log.info("target DSB score, %s: %.3f", variant, s["dsb"])
    lines += ["", "## Which model to use", "", *report["advice"]]
    with atomic_write(ctx.run.root / "report.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return report
