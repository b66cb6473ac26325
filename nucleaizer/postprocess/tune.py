"""Tune p1..p6 with the genetic algorithm on cached segmentations and probability maps (docs/method.md section 7).

Mask R-CNN labels and U-Net probability maps are computed once by the caller and held in ``TuningCase``s;
only the post-processing runs inside the search. Fitness is the mean DSB score over the cases, evaluated in
parallel processes that each receive the cases once, when they start (pool initializer), not per evaluation.
"""

from __future__ import annotations

import csv
import json
import logging
import multiprocessing
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from nucleaizer.io import atomic_write
from nucleaizer.metrics import dsb_score
from nucleaizer.postprocess.genetic import GAResult, Gene, GeneticAlgorithm, Params
from nucleaizer.postprocess.rules import PostprocessParams, postprocess_labels
from nucleaizer.size import rescale_labels

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TuningCase:
    """One validation image: ground truth at its original size, raw labels and P at the working scale.

    gt: int (H, W); labels: int (h, w) from the segmenter; prob: float32 (h, w) from the U-Net ensemble.
    Scores are taken at the original size (labels resized back with nearest neighbour).
    """

    name: str
    gt: np.ndarray
    labels: np.ndarray
    prob: np.ndarray


def build_cases(
    items: Iterable[tuple[str, np.ndarray, np.ndarray]],
    segment: Callable[[np.ndarray], np.ndarray],
    predict_probability: Callable[[np.ndarray], np.ndarray],
) -> list[TuningCase]:
    """Run the segmenter and the U-Net ensemble once per validation image and keep their outputs.

    items: (name, image np.uint8 (h, w, 3) at the working scale, ground truth int (H, W) at any scale);
    segment: image -> labels int (h, w); predict_probability: image -> P float32 (h, w).
    """
    cases = []
    for name, image, gt in tqdm(list(items), desc="segmenting validation images", leave=False):
        labels = np.asarray(segment(image)).astype(np.int32, copy=False)
        cases.append(TuningCase(name, gt, labels, np.asarray(predict_probability(image), dtype=np.float32)))
    return cases


def score_case(case: TuningCase, params: PostprocessParams | Mapping[str, float] | None) -> float:
    """DSB score of one case, post-processed with ``params`` (None: the raw segmentation)."""
    labels = case.labels if params is None else postprocess_labels(case.labels, case.prob, params)
    return dsb_score(case.gt, rescale_labels(labels, case.gt.shape))


def mean_score(cases: Sequence[TuningCase], params: PostprocessParams | Mapping[str, float] | None) -> float:
    """Mean DSB score over ``cases`` (None: raw segmentation)."""
    return float(np.mean([score_case(case, params) for case in cases]))


def save_cases(path: str | Path, cases: Sequence[TuningCase]) -> Path:
    """Cache cases in one compressed ``.npz`` (atomic write). Returns the path written."""
    arrays: dict[str, np.ndarray] = {"names": np.array([c.name for c in cases])}
    for i, case in enumerate(cases):
        arrays[f"gt_{i}"], arrays[f"labels_{i}"], arrays[f"prob_{i}"] = case.gt, case.labels, case.prob
    path = Path(path)
    with atomic_write(path) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, **arrays)
    return path


def load_cases(path: str | Path) -> list[TuningCase]:
    """Cases written by ``save_cases``."""
    with np.load(path) as data:
        return [
            TuningCase(str(name), data[f"gt_{i}"], data[f"labels_{i}"], data[f"prob_{i}"])
            for i, name in enumerate(data["names"])
        ]


# -- parallel evaluation: every worker process holds the cases it received once at start ----------------
_WORKER_CASES: Sequence[TuningCase] = ()


def _init_worker(cases: Sequence[TuningCase]) -> None:
    global _WORKER_CASES
    _WORKER_CASES = cases


def _worker_mean_score(params: Params) -> float:
    return mean_score(_WORKER_CASES, params)


class CaseEvaluator:
    """Fitness of a list of parameter dicts: mean DSB score over the cases, serial or in processes.

    Use as a context manager; ``workers <= 1`` evaluates in this process. Results come back in the order
    asked, so serial and parallel evaluation give the same numbers. start_method: multiprocessing start
    method (None: the platform's default, fork on Linux before Python 3.14, which starts workers without
    re-importing the caller's script; the workers never touch torch, so forking a torch process is safe).
    """

    def __init__(
        self, cases: Sequence[TuningCase], workers: int = 2, start_method: str | None = None
    ) -> None:
        self.cases = list(cases)
        self.workers = workers
        self.start_method = start_method
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> CaseEvaluator:
        if self.workers > 1:
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context(self.start_method),
                initializer=_init_worker,
                initargs=(self.cases,),
            )
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def __call__(self, population: list[Params]) -> list[float]:
        if self._pool is None:
            return [mean_score(self.cases, params) for params in population]
        return list(self._pool.map(_worker_mean_score, population))


def tune_parameters(
    cases: Sequence[TuningCase],
    genes: Sequence[Gene],
    out_dir: str | Path | None = None,
    initial: Sequence[Mapping[str, float]] = (),
    workers: int = 2,
    progress: bool = True,
    **ga_settings: float,
) -> GAResult:
    """Run the genetic algorithm on ``cases``; ``ga_settings`` are GeneticAlgorithm's keyword arguments.

    ``initial`` individuals (for example the paper's parameters and ``IDENTITY_PARAMS``) start in the first
    generation. With ``out_dir``, writes ``best_params.json``, ``ga_history.csv`` and ``ga_history.png``.
    """
    if not cases:
        raise ValueError("no validation cases to tune the post-processing parameters on")
    algorithm = GeneticAlgorithm(genes, **ga_settings)
    with CaseEvaluator(cases, workers) as evaluate:
        result = algorithm.run(evaluate, initial=initial, progress=progress)
    if out_dir is not None:
        write_tuning_outputs(out_dir, result)
    return result


def write_tuning_outputs(out_dir: str | Path, result: GAResult) -> dict[str, Path]:
    """Write the best parameters (JSON), the history (CSV) and its plot (PNG) into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "params": out / "best_params.json",
        "history": out / "ga_history.csv",
        "plot": out / "ga_history.png",
    }
    params = PostprocessParams.from_dict(result.best).as_dict() if result.best else {}
    with atomic_write(paths["params"]) as tmp:
        Path(tmp).write_text(
            json.dumps(
                {
                    "params": params,
                    "fitness": result.best_fitness,
                    "evaluations": result.evaluations,
                    "seconds": result.seconds,
                    "generations": len(result.history),
                },
                indent=2,
            )
        )
    with atomic_write(paths["history"]) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(result.history[0]))
        writer.writeheader()
        writer.writerows(result.history)
    plot_history(result.history, paths["plot"])
    return paths


def plot_history(history: Sequence[Mapping[str, float]], path: str | Path) -> Path:
    """Best-so-far, generation best and mean (with spread) fitness per generation, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    generation = [row["generation"] for row in history]
    mean = np.array([row["mean_fitness"] for row in history])
    spread = np.array([row["std_fitness"] for row in history])
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(generation, [row["best_fitness"] for row in history], label="best so far")
    ax.plot(generation, [row["generation_best"] for row in history], ".", label="generation best")
    ax.plot(generation, mean, label="generation mean")
    ax.fill_between(generation, mean - spread, mean + spread, alpha=0.2)
    ax.set_xlabel("generation")
    ax.set_ylabel("mean DSB score")
    ax.legend()
    fig.tight_layout()
    with atomic_write(Path(path)) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return Path(path)
