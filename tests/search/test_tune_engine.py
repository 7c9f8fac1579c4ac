"""The Tune engine: `CMASearcher` driven in-process (unit), and `run_search_tune` on a local 2-CPU Ray
on 127.0.0.1 against the native engine (integration)."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import ray  # noqa: F401  (before psutil, which ships in ray/thirdparty_files)
import psutil
from ray.tune.search import Searcher

from evoloss.results.store import MemoryStore, ParquetStore
from evoloss.search.config import SearchConfig, load_config
from evoloss.search.coordinator import run_search
from evoloss.search.dispatch import ActorPool, PoolConfig
from evoloss.search.local_pool import InProcessPool
from evoloss.search.ray_runtime import start_ray
from evoloss.search.tune_engine import (
    TUNE_ENVIRONMENT, CMASearcher, JobTimedOut, TuneEngineOptions, run_job_with_timeout, run_search_tune,
    trial_dirname, trial_name, trial_result,
)
from tests.search import dispatch_test_trainers as tt
from evoloss.workers.jobs import JobRunner

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY = {
    "search.family": "gce", "search.popsize": 4, "search.generations": 2, "search.seed": 3,
    "grid.datasets": ["synthetic:n=200,c=3,d=6"], "grid.archs": ["mlp2"], "grid.mode": "ar",
    "grid.noise": [{"type": "symmetric", "rate": 0.4}], "train.epochs": 1, "train.batch_size": 32,
    "train.trainer": "standard",
}
TEST_MODULES = ("tests.search.dispatch_test_trainers", "tests.search.tune_test_trainers")
VOLATILE = ["wall_s", "timestamp", "evals_per_s", "host"]


def _config(**over: Any) -> SearchConfig:
    return load_config(overrides={**TINY, **over})


def _with_trainer(config: SearchConfig, trainer: str, data_dir: Path | None = None) -> SearchConfig:
    """A test trainer name (the config schema only lists the shipped ones, so bypass its validation)."""
    grid = dataclasses.replace(config.grid, data_dir=None if data_dir is None else str(data_dir))
    return dataclasses.replace(config, train=dataclasses.replace(config.train, trainer=trainer), grid=grid)


def _comparable(df: pd.DataFrame) -> pd.DataFrame:
    return df.drop(columns=[c for c in VOLATILE if c in df.columns]).reset_index(drop=True)


def _drive(searcher: CMASearcher, runner: JobRunner, error_for: set[str] = frozenset()) -> list[str]:
    """Tune's loop without Tune: suggest until None, run each job in-process, report, repeat until FINISHED.
    Jobs whose id is in ``error_for`` come back as errored trials. Returns the job ids in hand-out order."""
    handed, n = [], 0
    while True:
        batch = []
        while (suggestion := searcher.suggest(f"t{n}")) not in (None, Searcher.FINISHED):
            batch.append((f"t{n}", suggestion))
            n += 1
        if suggestion == Searcher.FINISHED and not batch:
            return handed
        for trial_id, config in batch:
            job_id = config["job"]["job_id"]
            handed.append(job_id)
            if job_id in error_for:
                searcher.on_trial_complete(trial_id, error=True)
            else:
                searcher.on_trial_complete(trial_id, trial_result(job_id, runner.run_job(config["job"]), 0.5))


# --- unit: no Ray cluster ---------------------------------------------------------------------------
def test_searcher_in_process_gives_the_native_generations() -> None:
    native = MemoryStore()
    run_search(_config(), InProcessPool(), native, run_id="r")
    store = MemoryStore()
    searcher = CMASearcher(_config(), store, run_id="r", actors=1)
    handed = _drive(searcher, JobRunner())
    assert handed == ["g0-t0-c0", "g1-t0-c0"]  # 1 actor, 1 task: one job of all 4 candidates per generation
    pd.testing.assert_frame_equal(_comparable(native.read_generations()), _comparable(store.read_generations()))
    pd.testing.assert_frame_equal(_comparable(native.read()), _comparable(store.read()))
    assert store.load_state()[1].keys() == native.load_state()[1].keys()
    assert searcher.finished() and searcher.suggest("late") == Searcher.FINISHED


def test_searcher_waits_at_the_generation_barrier() -> None:
    searcher = CMASearcher(_config(), MemoryStore(), run_id="r", actors=2)
    first, second = searcher.suggest("a"), searcher.suggest("b")
    assert {first["job"]["job_id"], second["job"]["job_id"]} == {"g0-t0-c0", "g0-t0-c1"}
    assert searcher.suggest("c") is None  # every job of generation 0 is out: wait
    runner = JobRunner()
    searcher.on_trial_complete("a", trial_result("g0", runner.run_job(first["job"]), 0.1))
    assert searcher.suggest("d") is None  # one job still running
    searcher.on_trial_complete("b", trial_result("g0", runner.run_job(second["job"]), 0.1))
    assert searcher.suggest("e")["job"]["job_id"].startswith("g1-")
    assert first["runner"]["trainer_modules"] and first["timeout_s"] == 600.0


def test_jobs_per_generation_matches_make_jobs() -> None:
    for actors, expected in ((1, 1), (2, 2), (3, 3), (8, 4)):
        searcher = CMASearcher(_config(), MemoryStore(), run_id="r", actors=actors)
        assert searcher.jobs_per_generation() == expected
    searcher = CMASearcher(_config(), MemoryStore(), run_id="r", actors=3)
    specs = searcher.suggest("x")  # the real generation forms the same number of jobs
    assert len(searcher._current.jobs) == searcher.jobs_per_generation() and specs is not None


@pytest.mark.filterwarnings("ignore:CMA-ES generation")
def test_errored_trials_are_rerun_then_recorded_failed() -> None:
    store = MemoryStore()
    searcher = CMASearcher(_config(**{"search.generations": 1}), store, run_id="r", actors=2,
                           options=TuneEngineOptions(max_retries=1))
    searcher.error_text = lambda trial_id: f"RayActorError: the actor of {trial_id} died"
    handed = _drive(searcher, JobRunner(), error_for={"g0-t0-c1"})
    assert sorted(handed) == ["g0-t0-c0", "g0-t0-c1", "g0-t0-c1"]  # one re-run, then given up
    rows = store.read()
    failed = rows[rows["status"] == "failed"]
    assert sorted(failed["candidate"]) == [2, 3] and failed["error"].str.contains("actor of t").all()
    assert (rows[rows["status"] == "ok"]["candidate"].tolist() == [0, 1])
    assert store.read_generations()["failed"].tolist() == [2]


@pytest.mark.filterwarnings("ignore:CMA-ES generation")
def test_a_timed_out_trial_gives_timeout_rows_without_rerun() -> None:
    store = MemoryStore()
    searcher = CMASearcher(_config(**{"search.generations": 1}), store, run_id="r", actors=2)
    searcher.error_text = lambda trial_id: f"ray::EvalTrainable.train()\n{JobTimedOut.__name__}: job ran past"
    handed = _drive(searcher, JobRunner(), error_for={"g0-t0-c0"})
    assert sorted(handed) == ["g0-t0-c0", "g0-t0-c1"]
    rows = store.read().set_index("candidate")
    assert rows.loc[[0, 1], "status"].tolist() == ["timeout", "timeout"]
    assert rows.loc[[2, 3], "status"].tolist() == ["ok", "ok"]


def test_a_store_error_ends_the_search_and_is_kept() -> None:
    class BrokenStore(MemoryStore):
        def save_state(self, generation: int, state: Any) -> None:
            raise OSError("disk full")

    searcher = CMASearcher(_config(), BrokenStore(), run_id="r", actors=1)
    _drive(searcher, JobRunner())
    assert isinstance(searcher.failure, OSError) and searcher.suggest("next") == Searcher.FINISHED


def test_searcher_resumes_from_the_store_and_its_snapshot(tmp_path: Path) -> None:
    full = MemoryStore()
    _drive(CMASearcher(_config(), full, run_id="r", actors=1), JobRunner())
    part = MemoryStore()
    first = CMASearcher(_config(), part, run_id="r", actors=1, max_new_generations=1)
    _drive(first, JobRunner())
    first.save(str(tmp_path / "snap.json"))
    assert json.loads((tmp_path / "snap.json").read_text())["generation"] == 0
    resumed = CMASearcher(_config(), part, run_id="r", actors=1)
    assert resumed.resumed_from == 0 and resumed.strategy.generation == 1
    fresh = CMASearcher(_config(), MemoryStore(), run_id="r", actors=1)
    fresh.restore(str(tmp_path / "snap.json"))
    assert fresh.resumed_from == 0 and fresh.strategy.state() == resumed.strategy.state()
    _drive(resumed, JobRunner())
    pd.testing.assert_frame_equal(_comparable(full.read_generations()), _comparable(part.read_generations()))


def test_restore_rejects_a_foreign_file(tmp_path: Path) -> None:
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="not a CMASearcher snapshot"):
        CMASearcher(_config(), MemoryStore(), run_id="r", actors=1).restore(str(path))


@pytest.mark.parametrize("kwargs, match", [({"cache_size": 0}, "cache_size"), ({"max_retries": -1}, "max_retries"),
                                           ({"max_retries": True}, "max_retries")])
def test_options_reject_bad_values(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TuneEngineOptions(**kwargs)


def test_searcher_rejects_a_bad_actor_count() -> None:
    with pytest.raises(ValueError, match="actors"):
        CMASearcher(_config(), MemoryStore(), run_id="r", actors=0)


def test_run_job_with_timeout() -> None:
    class Runner:
        def __init__(self, sleep_s: float, fail: bool = False) -> None:
            self.sleep_s, self.fail = sleep_s, fail

        def run_job(self, job: dict) -> list[dict]:
            time.sleep(self.sleep_s)
            if self.fail:
                raise KeyError("broken")
            return [{"job_id": job["job_id"]}]

    assert run_job_with_timeout(Runner(0.0), {"job_id": "j"}, None) == [{"job_id": "j"}]
    assert run_job_with_timeout(Runner(0.0), {"job_id": "j"}, 5.0) == [{"job_id": "j"}]
    with pytest.raises(JobTimedOut, match="'j' ran past timeout_s=0.05"):
        run_job_with_timeout(Runner(2.0), {"job_id": "j"}, 0.05)
    with pytest.raises(KeyError, match="broken"):
        run_job_with_timeout(Runner(0.0, fail=True), {"job_id": "j"}, 5.0)


def test_trial_names_and_result() -> None:
    class Trial:
        trial_id = "abc123"
        config = {"job": {"job_id": "g3-t1-c0"}}

    assert trial_name(Trial()) == "g3-t1-c0" and trial_dirname(Trial()) == "g3-t1-c0_abc123"
    result = trial_result("g0", [{"val_acc_last": math.nan}], 1.5)
    assert result["done"] and result["job_wall_s"] == 1.5
    assert math.isnan(json.loads(result["records_json"])[0]["val_acc_last"])


# --- integration: local Ray on 127.0.0.1 -----------------------------------------------------------
@pytest.fixture(scope="module")
def local_ray():
    with start_ray(num_cpus=2, python_paths=[REPO_ROOT]) as runtime:
        yield runtime


@pytest.fixture(scope="module")
def native_run(local_ray, tmp_path_factory):
    """The native engine's full run (2 generations) on the same Ray: the reference for the tune engine."""
    store = ParquetStore(tmp_path_factory.mktemp("native"))
    with ActorPool(PoolConfig(cpus_per_actor=1.0, poll_s=0.2)) as pool:
        run_search(_config(), pool, store, run_id="r")
    return store


@pytest.mark.integration
def test_tune_engine_gives_the_native_rows(native_run: ParquetStore, tmp_path: Path) -> None:
    home_results = Path.home() / "ray_results"
    existed, environ = home_results.exists(), {k: os.environ.get(k) for k in TUNE_ENVIRONMENT}
    store = ParquetStore(tmp_path / "run")
    summary = run_search_tune(_config(**{"cluster.engine": "tune"}), store, run_id="r", run_dir=tmp_path / "run")
    assert summary.generations == 2 and summary.evaluations == 8 and "max_generations" in summary.stop_reasons
    pd.testing.assert_frame_equal(_comparable(native_run.read_generations()), _comparable(store.read_generations()))
    pd.testing.assert_frame_equal(_comparable(native_run.read()), _comparable(store.read()))
    experiments = list((tmp_path / "run" / "tune").iterdir())
    assert len(experiments) == 1 and len(list(experiments[0].glob("g0-t0-c*_*/result.json"))) == 2
    assert not list(experiments[0].rglob("events.out.tfevents*"))  # JSON + CSV loggers only
    assert home_results.exists() == existed
    assert {k: os.environ.get(k) for k in TUNE_ENVIRONMENT} == environ  # Tune's switches only while it ran


@pytest.mark.integration
def test_tune_engine_resumes_a_native_run(native_run: ParquetStore, tmp_path: Path) -> None:
    store = ParquetStore(tmp_path / "run")
    with ActorPool(PoolConfig(cpus_per_actor=1.0, poll_s=0.2)) as pool:
        run_search(_config(), pool, store, run_id="r", max_new_generations=1)
    summary = run_search_tune(_config(), ParquetStore(tmp_path / "run"), run_id="r", run_dir=tmp_path / "run")
    assert summary.resumed_from == 0 and store.generations_done() == [0, 1]
    pd.testing.assert_frame_equal(_comparable(native_run.read_generations()), _comparable(store.read_generations()))


@pytest.mark.integration
@pytest.mark.filterwarnings("ignore:CMA-ES generation")
def test_a_raising_trainer_gives_failed_rows_and_the_search_completes(local_ray, tmp_path: Path) -> None:
    store = MemoryStore()
    options = TuneEngineOptions(materializer=tt.MATERIALIZER, trainer_modules=TEST_MODULES)
    summary = run_search_tune(_with_trainer(_config(), "_test_raise"), store, run_id="r", run_dir=tmp_path,
                              options=options)
    rows, n = store.read(), summary.generations
    # the search ends normally: after 2 generations, or earlier when pycma stops on the flat fitness
    assert n >= 1 and summary.stop_reasons and store.generations_done() == list(range(n))
    assert len(rows) == 4 * n and set(rows["status"]) == {"failed"}
    assert rows["error"].str.contains("RuntimeError: boom").all()
    assert store.read_generations()["failed"].tolist() == [4] * n and math.isnan(summary.best_fitness)


@pytest.mark.integration
def test_a_trial_whose_actor_dies_is_rerun(local_ray, tmp_path: Path) -> None:
    store = MemoryStore()
    options = TuneEngineOptions(materializer=tt.MATERIALIZER, trainer_modules=TEST_MODULES, max_retries=1)
    config = _with_trainer(_config(**{"search.generations": 1}), "_tune_test_exit_once", data_dir=tmp_path)
    run_search_tune(config, store, run_id="r", run_dir=tmp_path / "run", options=options)
    assert len(list(tmp_path.glob("died-*"))) == 2  # each of the 2 jobs killed its actor once
    assert set(store.read()["status"]) == {"ok"} and store.generations_done() == [0]


@pytest.mark.integration
@pytest.mark.filterwarnings("ignore:CMA-ES generation")
def test_a_dead_trial_past_its_retries_and_a_straggler_give_failed_and_timeout_rows(local_ray, tmp_path: Path) -> None:
    options = TuneEngineOptions(materializer=tt.MATERIALIZER, trainer_modules=TEST_MODULES, max_retries=0)
    dead = MemoryStore()
    run_search_tune(_with_trainer(_config(**{"search.generations": 1}), "_test_exit_always"), dead, run_id="r",
                    run_dir=tmp_path / "dead", options=options)
    assert set(dead.read()["status"]) == {"failed"} and dead.generations_done() == [0]
    slow = MemoryStore()
    config = _with_trainer(_config(**{"search.generations": 1, "cluster.timeout_s": 1.0}), "_tune_test_sleep",
                           data_dir=tmp_path)
    run_search_tune(config, slow, run_id="r", run_dir=tmp_path / "slow", options=options)
    rows = slow.read()
    assert set(rows["status"]) == {"timeout"} and rows["error"].str.contains("timeout_s=1").all()
    sleepers = [int(p.read_text()) for p in tmp_path.glob("sleeping-*")]
    assert len(sleepers) == 2
    alive = [proc for pid in sleepers for proc in _process(pid)]
    assert psutil.wait_procs(alive, timeout=30)[1] == []  # Tune stopped the straggling actors


def _process(pid: int) -> list[psutil.Process]:
    try:
        return [psutil.Process(pid)]
    except psutil.NoSuchProcess:
        return []
