"""Successive halving inside a generation and CE references (search/fidelity.py, search/coordinator.py)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from evoloss.results.store import MemoryStore, ParquetStore
from evoloss.search.config import load_config
from evoloss.search.coordinator import run_search
from evoloss.search.fidelity import HalvingSchedule, choose_finishers, complete_ranking
from evoloss.search.fitness import FitnessRule, fitness
from evoloss.search.local_pool import InProcessPool
from evoloss.search.strategy import CMAStrategy

TINY = {
    "search.family": "gce", "search.popsize": 4, "search.generations": 3, "search.seed": 5,
    "grid.datasets": ["synthetic:n=300,c=3,d=6"], "grid.archs": ["mlp2"], "grid.mode": "ar",
    "grid.noise": [{"type": "symmetric", "rate": 0.4}], "grid.seeds": [0, 1], "train.epochs": 3,
    "train.batch_size": 32, "train.trainer": "standard",
    "search.low_fidelity": 0.34, "search.finish_share": 0.5,
}


def _config(**over):
    return load_config(overrides={**TINY, **over})


def test_schedule_arithmetic():
    s = HalvingSchedule(0.34, 0.5)
    assert s.low_epochs(3) == 1 and s.fidelity(3) == pytest.approx(1 / 3)
    assert s.low_epochs(30) == 10 and s.finishers(6) == 3 and s.finishers(12) == 6
    assert HalvingSchedule(0.01, 0.01).low_epochs(10) == 1 and HalvingSchedule(0.1, 0.01).finishers(12) == 1
    for bad in ((0.0, 0.5), (1.0, 0.5), (0.5, 0.0), (0.5, 1.5)):
        with pytest.raises(ValueError):
            HalvingSchedule(*bad)


def test_finishers_are_the_best_at_low_fidelity():
    low = {0: 0.2, 1: math.nan, 2: 0.7, 3: 0.5, 4: 0.7}
    assert choose_finishers(low, 2) == [2, 4]
    assert choose_finishers(low, 3) == [2, 3, 4]
    assert choose_finishers(low, 5) == [0, 1, 2, 3, 4]  # NaN last


def test_complete_ranking_places_stopped_below_every_finished_one():
    low = {0: 0.9, 1: 0.1, 2: 0.5, 3: 0.3, 4: math.nan, 5: 0.4}
    full = {2: 0.6, 5: 0.2}
    told = complete_ranking(full, low, [2, 5], margin=0.01)
    assert told[2] == 0.6 and told[5] == 0.2
    stopped = [0, 3, 1]  # by low fitness, best first
    assert told[0] == pytest.approx(0.19) and told[3] == pytest.approx(0.18) and told[1] == pytest.approx(0.17)
    assert all(told[c] < min(full.values()) for c in stopped)
    assert math.isnan(told[4])  # nothing counted: the strategy's failure policy ranks it last


def test_halving_search_tells_cma_es_a_complete_ranking(monkeypatch):
    told = []
    real_tell = CMAStrategy.tell
    monkeypatch.setattr(CMAStrategy, "tell", lambda self, g, f: (told.append(list(f)), real_tell(self, g, f))[1])
    store = MemoryStore()
    run_search(_config(**{"search.generations": 2}), InProcessPool(), store, run_id="h")
    evals = store.read()
    assert len(told) == 2
    for g, values in enumerate(told):
        rows = evals[evals["generation"] == g]
        low_rows, full_rows = rows[rows["fidelity"] < 1.0], rows[rows["fidelity"] == 1.0]
        assert len(values) == 4 and np.isfinite(values).all()
        assert set(low_rows["candidate"]) == set(range(4)) and len(low_rows) == 4 * 2
        finishers = sorted(set(full_rows["candidate"]))
        assert len(finishers) == 2 and len(full_rows) == 2 * 2
        assert low_rows["fidelity"].unique().tolist() == pytest.approx([1 / 3])
        assert (low_rows["epochs_run"] <= 1).all() and (full_rows["epochs_run"] <= 3).all()
        stopped = [c for c in range(4) if c not in finishers]
        assert min(values[c] for c in finishers) > max(values[c] for c in stopped)
        low = fitness(low_rows, FitnessRule())
        assert choose_finishers(low, 2) == finishers  # the finishers are the best at low fidelity
        order = sorted(stopped, key=lambda c: -values[c])
        assert [low[c] for c in order] == sorted((low[c] for c in stopped), reverse=True)
        assert len({values[c] for c in stopped}) == len(stopped)  # stopped ones: a strict order
        full = fitness(full_rows, FitnessRule())
        assert [values[c] for c in finishers] == pytest.approx([full[c] for c in finishers])
    gens = store.read_generations()
    assert gens["evaluations"].tolist() == [12, 12]


def _comparable(df: pd.DataFrame) -> pd.DataFrame:
    drop = [c for c in ("wall_s", "timestamp", "evals_per_s", "host") if c in df.columns]
    return df.drop(columns=drop).reset_index(drop=True)


def test_resumed_halving_search_keeps_its_trajectory(tmp_path):
    over = {"grid.fitness": "relative-ce", "grid.aggregate": "quantile", "grid.quantile": 0.5,
            "search.generations": 2}
    full = ParquetStore(tmp_path / "full")
    run_search(_config(**over), InProcessPool(), full, run_id="x")
    part = ParquetStore(tmp_path / "part")
    run_search(_config(**over), InProcessPool(), part, run_id="x", max_new_generations=1)
    refs = part.load_state()[1]["references"]
    assert sorted(refs) == sorted(set(part.read()["task_key"])) and len(refs) == 2  # CE, once per task
    summary = run_search(_config(**over), InProcessPool(), ParquetStore(tmp_path / "part"), run_id="x")
    assert summary.resumed_from == 0
    pd.testing.assert_frame_equal(_comparable(full.read_generations()), _comparable(part.read_generations()))
    pd.testing.assert_frame_equal(_comparable(full.read()), _comparable(part.read()))
    assert full.load_state()[1]["strategy"] == ParquetStore(tmp_path / "part").load_state()[1]["strategy"]
    assert set(full.read()["fitness_rule"]) == {"relative-ce/q0.5"}


def test_tune_engine_refuses_halving():
    from evoloss.search.config_fields import ConfigError

    with pytest.raises(ConfigError, match="native"):
        _config(**{"cluster.engine": "tune"})
