"""The genetic algorithm on synthetic fitness functions with a known optimum."""

from concurrent.futures import ProcessPoolExecutor

import pytest

from nucleaizer.errors import UserError
from nucleaizer.postprocess.genetic import Gene, GeneticAlgorithm, genes_from_config

GENES = [Gene("count", 0, 30, integer=True), Gene("x", -5.0, 5.0), Gene("fraction", 0.0, 1.0)]


def bowl(params: dict) -> float:
    """Maximum 0 at count=17, x=1.5, fraction=0.3."""
    return -(
        (params["count"] - 17) ** 2 / 100 + (params["x"] - 1.5) ** 2 / 25 + (params["fraction"] - 0.3) ** 2
    )


def serial(population):
    return [bowl(p) for p in population]


def run(seed=0, evaluate=serial, **settings):
    options = dict(population=30, generations=80, patience=25, seed=seed) | settings
    return GeneticAlgorithm(GENES, **options).run(evaluate, progress=False)


def test_finds_the_known_optimum_with_mixed_genes():
    result = run()
    assert result.best["count"] == 17 and isinstance(result.best["count"], int)
    assert result.best["x"] == pytest.approx(1.5, abs=0.05)
    assert result.best["fraction"] == pytest.approx(0.3, abs=0.02)
    # the best-so-far curve never falls
    best = [row["best_fitness"] for row in result.history]
    assert best == sorted(best) and best[-1] == result.best_fitness


def test_same_seed_same_result_other_seed_other_path():
    first, second, other = run(seed=3), run(seed=3), run(seed=4)
    assert first.best == second.best and first.history == [
        {**row, "seconds": a["seconds"]} for row, a in zip(second.history, first.history, strict=True)
    ]
    assert other.history[0]["mean_fitness"] != first.history[0]["mean_fitness"]


def test_parallel_and_serial_evaluation_give_the_same_result():
    with ProcessPoolExecutor(max_workers=2) as pool:
        parallel = run(seed=1, generations=10, evaluate=lambda ps: list(pool.map(bowl, ps)))
    assert parallel.best == run(seed=1, generations=10).best


def test_stops_early_without_improvement_and_never_re_evaluates():
    calls = []

    def flat(population):
        calls.extend(population)
        return [0.0] * len(population)

    result = GeneticAlgorithm(GENES, population=10, generations=100, patience=4, seed=0).run(
        flat, progress=False
    )
    assert len(result.history) == 5  # the first generation sets the best, then 4 without improvement
    assert len({tuple(p.values()) for p in calls}) == len(calls) == result.evaluations


def test_initial_individuals_are_evaluated_first_and_bounds_hold():
    seen = []

    def record(population):
        seen.extend(population)
        return serial(population)

    GeneticAlgorithm(GENES, population=8, generations=5, seed=0).run(
        record, initial=[{"count": 17, "x": 1.5, "fraction": 0.3}], progress=False
    )
    assert seen[0] == {"count": 17, "x": 1.5, "fraction": 0.3}
    for params in seen:
        assert 0 <= params["count"] <= 30 and -5 <= params["x"] <= 5 and 0 <= params["fraction"] <= 1


def test_genes_from_config_and_bad_settings():
    genes = genes_from_config(
        {"p2": {"low": 0, "high": 200, "type": "int"}, "p3": {"low": 0.1, "high": 0.99}}
    )
    assert genes == [Gene("p2", 0, 200, True), Gene("p3", 0.1, 0.99, False)]
    with pytest.raises(UserError, match="p2"):
        genes_from_config({"p2": {"low": 0, "high": 2, "type": "float"}})
    with pytest.raises(UserError, match="elite"):
        GeneticAlgorithm(GENES, population=4, elite=4)
