"""A small genetic algorithm over named genes with bounds, integer or real (docs/method.md section 7).

Generic: it maximises any fitness of a parameter dict. Tournament selection, uniform crossover, Gaussian
mutation, elitism, early stop after ``patience`` generations without improvement. Fitness is asked for a
whole generation at once (``evaluate(list_of_dicts) -> list_of_floats``), so the caller decides whether it
runs serially or in parallel processes; an individual seen before is never evaluated again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields

import numpy as np
from tqdm.auto import tqdm

from nucleaizer.errors import UserError

log = logging.getLogger(__name__)

Params = dict[str, float | int]
Evaluate = Callable[[list[Params]], Sequence[float]]


@dataclass(frozen=True)
class Gene:
    """One searched parameter: a name, inclusive bounds and whether it takes integer values."""

    name: str
    low: float
    high: float
    integer: bool = False

    def __post_init__(self) -> None:
        if not self.low <= self.high:
            raise UserError(f"gene {self.name}: low ({self.low}) must not exceed high ({self.high})")


def genes_from_config(spec: Mapping[str, Mapping[str, object]]) -> list[Gene]:
    """Genes from a config mapping ``{name: {low: .., high: .., type: int | real}}``, in its order."""
    genes = []
    for name, entry in spec.items():
        kind = str(entry.get("type", "real"))
        if kind not in ("int", "real"):
            raise UserError(f"postprocess.ga.genes.{name}.type must be 'int' or 'real', got {kind!r}")
        if "low" not in entry or "high" not in entry:
            raise UserError(f"postprocess.ga.genes.{name} needs both 'low' and 'high'")
        genes.append(Gene(str(name), float(entry["low"]), float(entry["high"]), kind == "int"))
    return genes


@dataclass(frozen=True)
class GASearch:
    """The ``postprocess.ga`` section as one value: the search space, the algorithm's settings (see
    GeneticAlgorithm), how many processes evaluate fitness and the share of validation images tuned on.
    No defaults here: conf/postprocess/default.yaml holds them."""

    genes: tuple[Gene, ...]
    population: int
    generations: int
    tournament: int
    crossover: float
    mutation: float
    mutation_scale: float
    elite: int
    patience: int
    workers: int
    val_fraction: float

    @classmethod
    def from_config(cls, section: Mapping) -> GASearch:
        """From the section's plain mapping; a missing or unknown key is a UserError naming it."""
        names = [f.name for f in fields(cls)]
        unknown, missing = sorted(set(section) - set(names)), [n for n in names if n not in section]
        if unknown or missing:
            raise UserError(f"postprocess.ga: unknown key(s) {unknown}, missing key(s) {missing}")
        values = {name: section[name] for name in names}
        return cls(**{**values, "genes": tuple(genes_from_config(section["genes"]))})

    def algorithm_settings(self) -> dict:
        """The keyword arguments of GeneticAlgorithm besides genes and seed."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in NOT_ALGORITHM_SETTINGS}


NOT_ALGORITHM_SETTINGS = ("genes", "workers", "val_fraction")


@dataclass
class GAResult:
    """The best individual found, its fitness and one history row per generation."""

    best: Params
    best_fitness: float
    history: list[dict[str, float]] = field(default_factory=list)
    evaluations: int = 0
    seconds: float = 0.0


class GeneticAlgorithm:
    """Maximise a fitness over ``genes``; all numbers as in the ``postprocess.ga`` config section.

    population: individuals per generation; generations: the most generations; tournament: individuals per
    tournament; crossover: probability that a pair of parents exchanges genes (uniform crossover); mutation:
    per-gene probability of a Gaussian step of ``mutation_scale`` times the gene's range; elite: best
    individuals copied unchanged into the next generation; patience: generations without improvement before
    stopping; seed: the random seed (same seed and fitness, same result).
    """

    def __init__(
        self,
        genes: Sequence[Gene],
        population: int = 100,
        generations: int = 300,
        tournament: int = 3,
        crossover: float = 0.9,
        mutation: float = 0.2,
        mutation_scale: float = 0.1,
        elite: int = 2,
        patience: int = 30,
        seed: int = 0,
    ) -> None:
        if not genes:
            raise UserError("postprocess.ga.genes is empty: give at least one gene to search")
        if population < 2 or not 0 <= elite < population or tournament < 1:
            raise UserError(
                f"postprocess.ga: need population >= 2, 0 <= elite < population and tournament >= 1 "
                f"(got population={population}, elite={elite}, tournament={tournament})"
            )
        self.genes = list(genes)
        self.population = population
        self.generations = generations
        self.tournament = tournament
        self.crossover = crossover
        self.mutation = mutation
        self.mutation_scale = mutation_scale
        self.elite = elite
        self.patience = patience
        self.seed = seed
        self._low = np.array([g.low for g in self.genes])
        self._high = np.array([g.high for g in self.genes])
        self._integer = np.array([g.integer for g in self.genes])

    # -- encoding ---------------------------------------------------------------------------------------
    def _repair(self, genomes: np.ndarray) -> np.ndarray:
        """Clip to the bounds and round integer genes. genomes: float (n, n_genes)."""
        genomes = np.clip(genomes, self._low, self._high)
        return np.where(self._integer, np.round(genomes), genomes)

    def decode(self, genome: np.ndarray) -> Params:
        """A genome (float (n_genes,)) as a parameter dict with Python ints for integer genes."""
        return {
            g.name: int(round(v)) if g.integer else float(v) for g, v in zip(self.genes, genome, strict=True)
        }

    def encode(self, params: Mapping[str, float]) -> np.ndarray:
        """A parameter dict (every gene's name) as a repaired genome float (n_genes,)."""
        missing = [g.name for g in self.genes if g.name not in params]
        if missing:
            raise UserError(f"initial individual lacks gene(s) {missing}")
        return self._repair(np.array([[float(params[g.name]) for g in self.genes]]))[0]

    # -- operators --------------------------------------------------------------------------------------
    def _select(self, fitness: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
        """Indices of ``n`` tournament winners (ties go to the earlier individual)."""
        size = min(self.tournament, fitness.size)
        entrants = np.stack([rng.choice(fitness.size, size=size, replace=False) for _ in range(n)])
        return entrants[np.arange(n), np.argmax(fitness[entrants], axis=1)]

    def _offspring(self, parents: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Children of consecutive parent pairs: uniform crossover, then Gaussian mutation."""
        first, second = parents[0::2], parents[1::2]
        swap = (rng.random(first.shape) < 0.5) & (rng.random((first.shape[0], 1)) < self.crossover)
        children = np.concatenate([np.where(swap, second, first), np.where(swap, first, second)])
        mutate = rng.random(children.shape) < self.mutation
        step = rng.standard_normal(children.shape) * self.mutation_scale * (self._high - self._low)
        # an integer gene with a narrow range still has to move when it mutates
        step = np.where(self._integer & mutate, np.sign(step) * np.maximum(np.abs(step), 1.0), step)
        return self._repair(children + np.where(mutate, step, 0.0))

    # -- search -----------------------------------------------------------------------------------------
    def run(
        self, evaluate: Evaluate, initial: Sequence[Mapping[str, float]] = (), progress: bool = True
    ) -> GAResult:
        """Search; ``initial`` individuals (parameter dicts) join the random first generation."""
        rng = np.random.default_rng(self.seed)
        start = time.perf_counter()
        cache: dict[tuple[float, ...], float] = {}
        seeded = [self.encode(p) for p in initial][: self.population]
        random_part = self._repair(
            rng.uniform(self._low, self._high, size=(self.population - len(seeded), len(self.genes)))
        )
        genomes = np.concatenate([np.array(seeded).reshape(-1, len(self.genes)), random_part])
        result = GAResult(best={}, best_fitness=-np.inf)
        stale = 0
        bar = tqdm(range(self.generations), desc="genetic algorithm", disable=not progress)
        for generation in bar:
            fitness, new = self._evaluate(genomes, evaluate, cache)
            result.evaluations += new
            order = np.argsort(-fitness, kind="stable")
            if fitness[order[0]] > result.best_fitness:
                result.best_fitness = float(fitness[order[0]])
                result.best = self.decode(genomes[order[0]])
                stale = 0
            else:
                stale += 1
            result.history.append(
                {
                    "generation": generation,
                    "best_fitness": result.best_fitness,
                    "generation_best": float(fitness[order[0]]),
                    "mean_fitness": float(fitness.mean()),
                    "std_fitness": float(fitness.std()),
                    "new_evaluations": new,
                    "evaluations": result.evaluations,
                    "seconds": time.perf_counter() - start,
                    **{f"best_{k}": v for k, v in result.best.items()},
                }
            )
            bar.set_postfix(best=f"{result.best_fitness:.4f}")
            log.debug("generation %d: best %.4f mean %.4f", generation, result.best_fitness, fitness.mean())
            if stale >= self.patience or generation == self.generations - 1:
                break
            n_children = self.population - self.elite
            parents = genomes[self._select(fitness, rng, n_children + n_children % 2)]
            children = self._offspring(parents, rng)[:n_children]
            genomes = np.concatenate([genomes[order[: self.elite]], children])
        bar.close()
        result.seconds = time.perf_counter() - start
        log.info(
            "genetic algorithm: best fitness %.4f after %d generations, %d evaluations, %.1f s",
            result.best_fitness,
            len(result.history),
            result.evaluations,
            result.seconds,
        )
        return result

    def _evaluate(
        self, genomes: np.ndarray, evaluate: Evaluate, cache: dict[tuple[float, ...], float]
    ) -> tuple[np.ndarray, int]:
        """Fitness float (n,) of every genome; only genomes never seen before go to ``evaluate``."""
        keys = [tuple(g.tolist()) for g in genomes]
        unseen = list(dict.fromkeys(k for k in keys if k not in cache))
        if unseen:
            scores = evaluate([self.decode(np.array(k)) for k in unseen])
            if len(scores) != len(unseen):
                raise RuntimeError(f"fitness returned {len(scores)} values for {len(unseen)} individuals")
            cache.update(zip(unseen, (float(s) for s in scores), strict=True))
        return np.array([cache[k] for k in keys]), len(unseen)
