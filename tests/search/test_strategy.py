"""CMAStrategy: maximisation, the failure policy, exact JSON resume, stop reasons, bad input."""
from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from evoloss.search.strategy import CMAStrategy


def sphere_fitness(genomes: np.ndarray) -> list[float]:
    """A concave fitness to maximise, optimum 1.0 at genome (0.5, ..., 0.5)."""
    return [1.0 - float(np.sum((g - 0.5) ** 2)) for g in genomes]


def with_failures(genomes: np.ndarray, generation: int) -> list[float | None]:
    fit: list[float | None] = list(sphere_fitness(genomes))
    if generation % 2 == 1:  # odd generations lose three candidates, three ways
        fit[0], fit[3], fit[5] = math.nan, None, math.inf
    return fit


def run(strategy: CMAStrategy, generations: int, start: int = 0) -> tuple[list[np.ndarray], list[dict]]:
    """Generations ``start ..`` of a search; the genomes asked and the stop reasons after each."""
    asked, stops = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for g in range(start, start + generations):
            genomes = strategy.ask()
            asked.append(genomes)
            strategy.tell(genomes, with_failures(genomes, g))
            stops.append(strategy.stop())
    return asked, stops


def make(**over: Any) -> CMAStrategy:
    kw: dict[str, Any] = dict(popsize=8, sigma0=0.5, seed=7)
    kw.update(over)
    return CMAStrategy(kw.pop("dim", 2), **kw)


def test_ask_shape_and_seeding_use_no_global_rng() -> None:
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    a, b, c = make(), make(), make(seed=8)
    ga, gb, gc = a.ask(), b.ask(), c.ask()
    assert ga.shape == (8, 2) and ga.dtype == np.float64
    assert np.array_equal(ga, gb) and not np.array_equal(ga, gc)
    assert np.array_equal(np.random.get_state()[1], before)  # numpy's global RNG untouched


def test_maximises() -> None:
    s = make(dim=2, seed=3)
    for _ in range(40):
        genomes = s.ask()
        s.tell(genomes, sphere_fitness(genomes))
    genome, fitness = s.best()
    assert fitness > 0.999 and np.allclose(genome, 0.5, atol=0.05)
    assert fitness == pytest.approx(1.0 - np.sum((genome - 0.5) ** 2), abs=0)


@pytest.mark.parametrize("bounds", [None, (-2.0, [2.0, 3.0])])
def test_resume_is_bit_identical(bounds: object) -> None:
    # tolfun=0.1 reads pycma's fitness history: the stop checks must also continue exactly
    opts = {"tolfun": 0.1}
    uninterrupted = make(bounds=bounds, cma_options=opts)
    expected, expected_stops = run(uninterrupted, 12)
    first = make(bounds=bounds, cma_options=opts)
    run(first, 4)
    # through strict JSON with sorted keys, as the result stores write it
    state = json.loads(json.dumps(first.state(), allow_nan=False, sort_keys=True))
    resumed = CMAStrategy.from_state(state)
    continued, stops = run(resumed, 8, start=4)
    for g, (x, y) in enumerate(zip(expected[4:], continued), start=4):
        assert np.array_equal(x, y), f"generation {g} differs after resume"
    assert stops == expected_stops[4:]
    assert resumed.state() == json.loads(json.dumps(uninterrupted.state()))
    assert resumed.failed_total == uninterrupted.failed_total == 18
    best_a, best_b = resumed.best(), uninterrupted.best()
    assert np.array_equal(best_a[0], best_b[0]) and best_a[1] == best_b[1]


def test_restore_into_fresh_object_and_mismatch() -> None:
    s = make()
    run(s, 3)
    state = json.loads(json.dumps(s.state(), allow_nan=False))
    fresh = make()
    fresh.restore(state)
    next_genomes = s.ask()
    assert np.array_equal(fresh.ask(), next_genomes)
    with pytest.raises(ValueError, match="popsize=8 in the state but 10 here"):
        make(popsize=10).restore(state)
    extended = CMAStrategy.from_state(state, max_generations=5)  # a stopping rule may change
    assert extended.config["max_generations"] == 5 and np.array_equal(extended.ask(), next_genomes)
    with pytest.raises(ValueError, match="not a"):
        make().restore({"format": "pickle"})
    state["es"]["os.system"] = {"attrs": {}}
    with pytest.raises(ValueError, match="unknown object paths"):
        make().restore(state)


def test_failure_policy_substitutes_worst_minus_margin(monkeypatch: pytest.MonkeyPatch) -> None:
    s = make(popsize=6)
    told: list[list[float]] = []
    real_tell = s._es.tell
    monkeypatch.setattr(s._es, "tell", lambda X, f: (told.append(list(f)), real_tell(X, f)))
    genomes = s.ask()
    fitness = [0.30, math.nan, 0.90, None, -math.inf, 0.50]
    with pytest.warns(RuntimeWarning, match="3 of 6 candidates"):
        s.tell(genomes, fitness)
    worst = 0.30 - 0.01
    assert told[0] == [-0.30, -worst, -0.90, -worst, -worst, -0.50]  # negated: pycma minimises
    assert s.failed_last == 3 and s.failed_total == 3
    genome, best = s.best()
    assert best == 0.90 and np.array_equal(genome, genomes[2])


def test_inf_is_a_failure_and_never_best() -> None:
    s = make(popsize=4)
    genomes = s.ask()
    with pytest.warns(RuntimeWarning):
        s.tell(genomes, [math.inf, 0.2, 0.1, math.nan])
    assert s.best()[1] == 0.2 and np.array_equal(s.best()[0], genomes[1])


def test_all_failed_uses_floor_keeps_best_and_does_not_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    s = make(popsize=4)
    assert math.isnan(s.best()[1]) and np.array_equal(s.best()[0], s.mean)
    genomes = s.ask()
    s.tell(genomes, [0.1, 0.4, 0.2, 0.3])
    told: list[list[float]] = []
    real_tell = s._es.tell
    monkeypatch.setattr(s._es, "tell", lambda X, f: (told.append(list(f)), real_tell(X, f)))
    with pytest.warns(RuntimeWarning, match="4 of 4"):
        s.tell(s.ask(), [None, math.nan, None, math.nan])
    assert told[0] == [-0.0] * 4
    assert s.best()[1] == 0.4 and np.array_equal(s.best()[0], genomes[1])
    assert s.stop() == {}  # one flat (all failed) generation does not end the search
    assert math.isfinite(s.sigma)


def test_stop_reasons() -> None:
    s = make(max_generations=3)
    run(s, 2)
    assert "max_generations" not in s.stop()
    run(s, 1)
    assert "max_generations=3" in s.stop()["max_generations"]
    t = make(cma_options={"tolx": 1e3})
    run(t, 1)
    assert "tolx" in t.stop()


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(popsize=1), "popsize must be an int >= 2"),
        (dict(sigma0=0.0), "sigma0 must be a positive"),
        (dict(seed=-1), "seed must be an int >= 0"),
        (dict(x0=[1.0, 2.0, 3.0]), "x0 must be 2 finite"),
        (dict(bounds=(0.0, 1.0)), "inside bounds"),
        (dict(max_generations=0), "max_generations"),
        (dict(failure_margin=0.0), "failure_margin"),
        (dict(sigma0="1"), "sigma0 must be a finite number"),
        (dict(x0="ab"), "x0 must be 2 finite"),
        (dict(bounds=(0.0,)), r"bounds must be \(lower, upper\)"),
        (dict(cma_options={"tolfn": 1e-3}), "did you mean.*tolfun"),
        (dict(cma_options={"seed": 3}), "set by CMAStrategy"),
    ],
)
def test_constructor_rejects_bad_input(kwargs: dict, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        make(**kwargs)


def test_protocol_errors() -> None:
    s = make()
    with pytest.raises(ValueError, match="call ask"):
        s.tell(np.zeros((8, 2)), [0.0] * 8)
    genomes = s.ask()
    with pytest.raises(ValueError, match="not told"):
        s.ask()
    with pytest.raises(ValueError, match="pending"):
        s.state()
    with pytest.raises(ValueError, match="differ from the 8 asked"):
        s.tell(genomes[::-1], [0.0] * 8)
    with pytest.raises(ValueError, match="expected 8 fitness"):
        s.tell(genomes, [0.0] * 7)
    with pytest.raises(TypeError, match=r"fitness\[2\]='0.5'"):
        s.tell(genomes, [0.0, 0.0, "0.5", 0.0, 0.0, 0.0, 0.0, 0.0])
    s.tell(genomes, [0.0] * 8)  # the failed calls left the generation pending, not half-told
    assert s.generation == 1


@pytest.mark.slow  # a fresh interpreter importing pycma: ~2 s of CPU, more on a loaded machine
def test_resume_in_a_fresh_process(tmp_path: Path) -> None:
    """State saved here, continued by another Python process: the same genomes as without a break."""
    uninterrupted = make()
    expected = []
    for _ in range(6):
        expected.append(uninterrupted.ask())
        uninterrupted.tell(expected[-1], sphere_fitness(expected[-1]))
    first = make()
    for _ in range(3):
        genomes = first.ask()
        first.tell(genomes, sphere_fitness(genomes))
    (tmp_path / "state.json").write_text(json.dumps(first.state(), allow_nan=False))
    script = (
        "import json, sys\n"
        "from evoloss.search.strategy import CMAStrategy\n"
        "s = CMAStrategy.from_state(json.load(open(sys.argv[1] + '/state.json')))\n"
        "asked = []\n"
        "for _ in range(3):\n"
        "    g = s.ask(); asked.append(g.tolist())\n"
        "    s.tell(g, [1.0 - float(((x - 0.5) ** 2).sum()) for x in g])\n"
        "json.dump(asked, open(sys.argv[1] + '/asked.json', 'w'))\n"
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=root, check=True, timeout=120)
    continued = json.loads((tmp_path / "asked.json").read_text())
    assert [e.tolist() for e in expected[3:]] == continued  # floats through JSON repr are exact


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_a_flat_or_all_failed_generation_does_not_stop_the_search() -> None:
    for values in ([None] * 4, [0.1] * 4):
        s = CMAStrategy(3, popsize=4, sigma0=0.5, seed=0, max_generations=10)
        s.tell(s.ask(), values)
        assert s.stop() == {}, values
        s.tell(s.ask(), [0.5, 0.6, 0.7, 0.8])
        assert s.stop() == {} and s.generation == 2
