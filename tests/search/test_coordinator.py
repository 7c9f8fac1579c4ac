"""The generation loop without Ray (InProcessPool): resume, failures, rows and export."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from evoloss.losses.plugin import load_loss
from evoloss.results.queries import best_candidate
from evoloss.results.store import MemoryStore, ParquetStore
from evoloss.search.config import load_config
from evoloss.search.coordinator import make_jobs, run_search
from evoloss.search.local_pool import InProcessPool
from evoloss.workers.jobs import JobResult, failure_records

TINY = {
    "search.family": "gce", "search.popsize": 4, "search.generations": 3, "search.seed": 3,
    "grid.datasets": ["synthetic:n=300,c=3,d=6"], "grid.archs": ["mlp2"], "grid.mode": "ar",
    "grid.noise": [{"type": "symmetric", "rate": 0.4}], "train.epochs": 2, "train.batch_size": 32,
    "train.trainer": "standard",
}


def _config(**over):
    return load_config(overrides={**TINY, **over})


def _comparable(df: pd.DataFrame) -> pd.DataFrame:
    drop = [c for c in ("wall_s", "timestamp", "evals_per_s", "host") if c in df.columns]
    return df.drop(columns=drop).reset_index(drop=True)


def test_search_runs_and_records_every_evaluation():
    store = MemoryStore()
    summary = run_search(_config(), InProcessPool(), store, run_id="r")
    evals = store.read()
    assert summary.generations == 3 and len(evals) == 3 * 4
    assert set(evals["status"]) == {"ok"}
    assert evals.groupby("generation")["candidate"].nunique().tolist() == [4, 4, 4]
    assert (evals["noise_convention"] == "symmetric/exact").all() or (evals["noise_convention"] != "").all()
    assert "max_generations" in summary.stop_reasons
    gens = store.read_generations()
    assert np.allclose(gens["best_fitness"], evals.groupby("generation")["val_acc_last"].max())
    assert summary.best_fitness == pytest.approx(gens["best_fitness"].max())


def test_resume_gives_the_uninterrupted_trajectory(tmp_path):
    full = ParquetStore(tmp_path / "full")
    run_search(_config(), InProcessPool(), full, run_id="x")
    part = ParquetStore(tmp_path / "part")
    run_search(_config(), InProcessPool(), part, run_id="x", max_new_generations=1)
    assert part.generations_done() == [0]
    summary = run_search(_config(), InProcessPool(), ParquetStore(tmp_path / "part"), run_id="x")
    assert summary.resumed_from == 0
    pd.testing.assert_frame_equal(_comparable(full.read_generations()), _comparable(part.read_generations()))
    pd.testing.assert_frame_equal(_comparable(full.read()), _comparable(part.read()))
    keys = part.read()[["generation", "candidate", "task_key"]]
    assert not keys.duplicated().any()


class FlakyPool(InProcessPool):
    """Fails the first job of every generation as `failed`, the second as `timeout`."""

    def run_jobs(self, jobs, *, timeout_s=None, on_result=None):
        out = []
        for i, job in enumerate(jobs):
            if i < 2:
                status = ("failed", "timeout")[i]
                out.append(JobResult(job.job_id, status, failure_records(job, status, f"injected {status}"), 1, 0.0))
            else:
                out.extend(super().run_jobs([job]))
        return out


def test_failed_and_timed_out_jobs_never_stop_the_search():
    store = MemoryStore()
    config = _config(**{"grid.seeds": [0, 1, 2]})
    summary = run_search(config, FlakyPool(), store, run_id="f")
    evals = store.read()
    assert summary.generations == 3
    assert set(evals["status"]) == {"ok", "failed", "timeout"}
    assert evals.loc[evals["status"] != "ok", "error"].str.startswith("injected").all()
    assert math.isfinite(summary.best_fitness)


def test_make_jobs_splits_candidates_to_fill_actors():
    from evoloss.losses import LossSpec
    from evoloss.workers.task import Task

    specs = [LossSpec("ce")] * 8
    one = make_jobs(0, [Task("digits", "mlp2")], specs, "population", actors=4)
    assert [len(j.specs) for j in one] == [2, 2, 2, 2]
    assert sorted(c for j in one for c in j.candidates) == list(range(8))
    many = make_jobs(0, [Task("digits", "mlp2", seed=s) for s in range(5)], specs, "population", actors=2)
    assert [len(j.specs) for j in many] == [8] * 5


@pytest.mark.parametrize("mode", ["off", "auto"])
def test_train_compile_reaches_the_population_trainer_and_the_rows(mode):
    """``train.compile`` is the population trainer's ``compile`` option: every job carries it, every row
    says which path ran (on this CPU-only test ``auto`` stays eager and says so)."""
    config = _config(**{"train.trainer": "population", "train.compile": mode, "search.generations": 1})
    store = MemoryStore()
    run_search(config, InProcessPool(), store, run_id="r")
    evals = store.read()
    assert set(evals["execution"]) == {"stacked"}
    expected = "not compiled: compile='off'" if mode == "off" else "not compiled: compile='auto' compiles on CUDA only"
    assert set(evals["execution_note"]) == {expected}


def test_train_compile_is_refused_outside_its_choices():
    with pytest.raises(Exception, match="train.compile"):
        _config(**{"train.compile": "yes"})


def test_meta_and_standard_records_say_single_execution():
    config = _config(**{"search.generations": 1})
    store = MemoryStore()
    run_search(config, InProcessPool(), store, run_id="r")
    assert set(store.read()["execution"]) == {"single"}


def test_export_best_is_loadable(tmp_path):
    from evoloss.search.api import export
    from evoloss.search.run_dir import create_run_dir

    config = _config(**{"search.generations": 1})
    run = tmp_path / "run"
    create_run_dir(run, config)
    run_search(config, InProcessPool(), ParquetStore(run), run_id="run")
    out = export(run)
    assert out == run / "export" / "evolved_loss" / "loss.json"
    loss = load_loss(out)
    spec, fitness, _, _ = best_candidate(ParquetStore(run), "last")
    assert loss.spec.family == "gce" and dict(loss.spec.params) == pytest.approx(dict(spec.params))


def test_export_pick_mean_is_the_decoded_cmaes_mean(tmp_path):
    from evoloss.search.api import export, picked_spec
    from evoloss.search.coordinator import decode_candidates
    from evoloss.search.run_dir import create_run_dir
    from evoloss.search.strategy import CMAStrategy

    config = _config(**{"search.generations": 1})
    run = tmp_path / "run"
    create_run_dir(run, config)
    run_search(config, InProcessPool(), ParquetStore(run), run_id="run")
    _, state = ParquetStore(run).load_state()
    expected = decode_candidates("gce", CMAStrategy.from_state(state["strategy"]).mean[None, :])[0]
    spec, origin = picked_spec(run, "mean")
    assert spec == expected and origin["pick"] == "mean" and origin["fitness"] is None
    loss = load_loss(export(run, out=tmp_path / "m", pick="mean"))
    assert dict(loss.spec.params) == pytest.approx(dict(expected.params))
    with pytest.raises(ValueError, match="pick"):
        picked_spec(run, "median")


def test_a_finished_search_can_be_extended():
    store = MemoryStore()
    run_search(_config(**{"search.generations": 1}), InProcessPool(), store, run_id="e")
    summary = run_search(_config(**{"search.generations": 2}), InProcessPool(), store, run_id="e")
    assert summary.resumed_from == 0 and store.generations_done() == [0, 1]


def test_a_task_that_stays_near_chance_is_named_once():
    """lr 1e-9: the networks stay at their initialisation, every candidate near chance (10 classes); the
    search says so once (not every generation); a task that learns gets no such line."""
    lines: list[str] = []
    config = _config(**{"grid.datasets": ["synthetic:n=300,c=10,d=6"], "train.lr": 1e-9})
    run_search(config, InProcessPool(), MemoryStore(), run_id="r", progress=lines.append)
    notes = [line for line in lines if "near chance" in line]
    assert len(notes) == 1, lines
    assert "synthetic:n=300,c=10,d=6/mlp2/" in notes[0] and "chance 0.100" in notes[0]
    assert "val_acc_last at most 0.1" in notes[0] and notes[0].endswith("\n")
    lines.clear()  # TINY itself stays near chance after 2 epochs (the line said so); after 6 it learns
    run_search(_config(**{"train.epochs": 6}), InProcessPool(), MemoryStore(), run_id="r", progress=lines.append)
    assert not [line for line in lines if "near chance" in line]
