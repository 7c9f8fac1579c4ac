"""Dispatch: `Job`/`JobRunner` (no Ray) and the `ActorPool` on a local 2-CPU Ray on 127.0.0.1."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import ray

from evoloss.losses import LossSpec
from evoloss.search.dispatch import ActorPool, JobResult, PoolConfig, actor_count, dispatch_order
from evoloss.search.ray_runtime import embedded_ray_pids, is_loopback, listening_sockets, start_ray
from tests.search import dispatch_test_trainers as tt
from evoloss.workers.jobs import (
    EVAL_RECORD_FIELDS,
    RECORD_IDENTITY_FIELDS,
    UNCAPPED_TRAIN_ROWS,
    Job,
    JobRunner,
    failure_records,
    import_trainer_modules,
    pick_device,
    resolve_callable,
    threads_for,
)
from evoloss.workers.task import Budget, Splits, Task

REPO_ROOT = Path(__file__).resolve().parents[2]
_task = tt.make_task
_job = tt.make_job


def _runner(**kw: object) -> JobRunner:
    return JobRunner(materializer=tt.MATERIALIZER, trainer_modules=tt.MODULES, **kw)


# --- Job --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"job_id": ""}, "job_id"),
        ({"specs": ()}, "specs"),
        ({"candidates": (1,)}, "candidates"),
        ({"candidates": (1, 1)}, "candidates"),
        ({"trainer": ""}, "trainer"),
        ({"trainer_options": {"x": object()}}, "trainer_options"),
        ({"cost": -1.0}, "cost"),
        ({"cost": math.nan}, "cost"),
        ({"task": "digits"}, "task"),
    ],
)
def test_job_rejects_bad_fields(kwargs: dict, match: str) -> None:
    base = dict(job_id="j", task=_task(), specs=(LossSpec("ce"), LossSpec("ce", {"a": 1.0})))
    with pytest.raises((ValueError, TypeError), match=match):
        Job(**{**base, **kwargs})


def test_job_wire_form_round_trips_through_json() -> None:
    job = _job("g3-t1", k=3, seed=7, sleep_s=0.5)
    back = Job.from_dict(json.loads(json.dumps(job.to_dict())))
    assert back == job
    assert back.candidates == ("g3-t1-c0", "g3-t1-c1", "g3-t1-c2")


def test_dispatch_order_is_longest_first_and_stable() -> None:
    jobs = [Job(job_id=str(i), task=_task(), specs=(LossSpec("ce"),), cost=c) for i, c in enumerate([1, 5, 3, 5])]
    assert dispatch_order(jobs) == [1, 3, 2, 0]
    # default estimate: candidates x epochs x training rows (uncapped = UNCAPPED_TRAIN_ROWS)
    capped = Task(dataset="digits", arch="mlp2", budget=Budget(epochs=10), splits=Splits(max_train=500))
    small = Job(job_id="s", task=_task(), specs=(LossSpec("ce"),))
    big = Job(job_id="b", task=_task(), specs=(LossSpec("ce"),) * 3)
    tiny = Job(job_id="t", task=capped, specs=(LossSpec("ce"),) * 4)
    assert dispatch_order([tiny, small, big]) == [2, 1, 0]
    assert big.estimated_cost() == 3 * 2 * UNCAPPED_TRAIN_ROWS and tiny.estimated_cost() == 4 * 10 * 500


@pytest.mark.parametrize(
    "resources, cpus, gpus, requested, expected",
    [
        ({"CPU": 2.0}, 1.0, 0.0, None, 2),
        ({"CPU": 8.0}, 0.5, 0.0, None, 16),
        ({"CPU": 16.0, "GPU": 1.0}, 1.0, 0.25, None, 4),
        ({"CPU": 3.0, "GPU": 2.0}, 1.0, 0.5, None, 3),
        ({"CPU": 4.0}, 1.0, 0.0, 3, 3),
    ],
)
def test_actor_count(resources: dict, cpus: float, gpus: float, requested: int | None, expected: int) -> None:
    assert actor_count(resources, cpus, gpus, requested) == expected


@pytest.mark.parametrize(
    "resources, cpus, gpus, requested, match",
    [({"CPU": 1.0}, 2.0, 0.0, None, "cpus_per_actor=2"), ({"CPU": 4.0}, 1.0, 0.5, None, "GPU=0"),
     ({"CPU": 2.0}, 1.0, 0.0, 3, "num_actors=3")],
)
def test_actor_count_rejects_what_does_not_fit(resources: dict, cpus: float, gpus: float,
                                               requested: int | None, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        actor_count(resources, cpus, gpus, requested)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"cpus_per_actor": 0}, "cpus_per_actor"), ({"gpus_per_actor": -1.0}, "gpus_per_actor"),
     ({"num_actors": 0}, "num_actors"), ({"cache_size": 0}, "cache_size"), ({"max_retries": -1}, "max_retries"), ({"poll_s": math.inf}, "poll_s"),
     ({"actor_start_timeout_s": 0}, "actor_start_timeout_s")],
)
def test_pool_config_rejects_bad_values(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PoolConfig(**kwargs)


def test_threads_and_device_choice() -> None:
    assert [threads_for(c) for c in (0.25, 1, 1.5, 4.0)] == [1, 1, 1, 4]
    with pytest.raises(ValueError, match="cpus per actor"):
        threads_for(0)
    assert pick_device([], True) == "cpu"
    assert pick_device([0], False) == "cpu"
    assert pick_device(["0"], True) == "cuda"


def test_resolve_callable_and_module_import_problems(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_callable(tt.MATERIALIZER) is tt.tiny_materialize
    for bad in ("no_colon", "json:", "json:not an identifier", "json:no_such_attr"):
        with pytest.raises(ValueError, match="materializer"):
            resolve_callable(bad)
    assert import_trainer_modules(["evoloss.workers.no_such_trainer_module", "json"]) == {
        "evoloss.workers.no_such_trainer_module": "not installed"}


def test_failure_records_keep_identity() -> None:
    job = _job("g1-t4", k=3)
    recs = failure_records(job, "timeout", "too slow", wall_s=2.5, origin={"host": "h", "node_ip": "127.0.0.1"})
    assert [r["candidate"] for r in recs] == list(job.candidates)
    assert {r["status"] for r in recs} == {"timeout"} and all(math.isnan(r["val_acc_last"]) for r in recs)
    assert all(set(r) == set(EVAL_RECORD_FIELDS) | set(RECORD_IDENTITY_FIELDS) for r in recs)
    assert recs[0]["params"] == {"a": pytest.approx(0.1)} and recs[0]["task_key"] == job.task.key()
    with pytest.raises(ValueError, match="status='ok'"):
        failure_records(job, "ok", "")


# --- JobRunner (what an actor does, without Ray) ----------------------------------------------------
def test_runner_returns_one_record_per_candidate_in_order() -> None:
    job = _job("j1", k=3, seed=4)
    out = _runner().run_job(job.to_dict())
    assert [r["candidate"] for r in out] == list(job.candidates)
    assert [r["val_acc_last"] for r in out] == [tt.expected_val_acc(s, job.task) for s in job.specs]
    assert all(r["status"] == "ok" and r["job_id"] == "j1" and r["extra"]["n_train"] == 12 for r in out)


def test_runner_caches_task_data_per_data_key_with_lru() -> None:
    runner = _runner(cache_size=2)
    tt.MATERIALIZE_CALLS.clear()
    for arch in ("mlp2", "mlp3", "cnn4"):  # same data, different architectures -> one materialisation
        runner.run_job(Job(job_id=arch, task=_task(0, arch), specs=(LossSpec("ce"),), trainer="_test_echo"))
    assert runner.materialized == 1
    for seed in (1, 2, 0):  # seed 0 was evicted by seeds 1 and 2 (LRU of 2)
        runner.run_job(Job(job_id=f"s{seed}", task=_task(seed), specs=(LossSpec("ce"),), trainer="_test_echo"))
    assert runner.materialized == 4 and [k.split("/")[-1] for k in tt.MATERIALIZE_CALLS] == ["s0", "s1", "s2", "s0"]


@pytest.mark.parametrize(
    "trainer, options, match",
    [("_test_raise", {"message": "bad spec 42"}, "RuntimeError: bad spec 42"),
     ("_test_wrong_count", {}, "returned 1 records for 2 specs"),
     ("_test_no_such_trainer", {}, "unknown trainer '_test_no_such_trainer'")],
)
def test_runner_turns_trainer_errors_into_failed_records(trainer: str, options: dict, match: str) -> None:
    job = _job("bad", trainer=trainer, k=2, **options)
    out = _runner().run_job(job)
    assert [r["status"] for r in out] == ["failed", "failed"]
    assert [r["candidate"] for r in out] == list(job.candidates) and all(match in r["error"] for r in out)


def test_runner_reports_a_missing_materializer_per_job() -> None:
    out = JobRunner(materializer="evoloss.workers.no_such_module:materialize", trainer_modules=tt.MODULES).run_job(_job("m"))
    assert out[0]["status"] == "failed" and "No module named 'evoloss.workers.no_such_module'" in out[0]["error"]


def test_runner_keeps_nan_metrics_of_a_diverged_run() -> None:
    out = _runner().run_job(_job("nan", trainer="_test_nan"))
    assert [r["status"] for r in out] == ["diverged", "diverged"] and math.isnan(out[0]["train_loss_last"])


# --- ActorPool on a local Ray (integration) ---------------------------------------------------------
@pytest.fixture(scope="module")
def pool():
    with start_ray(num_cpus=2, python_paths=[REPO_ROOT]):
        cfg = PoolConfig(cpus_per_actor=1.0, materializer=tt.MATERIALIZER, trainer_modules=tt.MODULES, poll_s=0.2)
        with ActorPool(cfg) as actor_pool:
            yield actor_pool


@pytest.mark.integration
def test_pool_runs_a_batch_in_full_on_every_actor(pool: ActorPool) -> None:
    assert pool.size == 2 and all(i["node_ip"] == "127.0.0.1" and i["threads"] == 1 for i in pool.actor_info())
    assert pool.run_jobs([]) == []
    jobs = [_job(f"b{i}", k=2, seed=i, sleep_s=0.3) for i in range(6)]
    seen: list[str] = []
    results = pool.run_jobs(jobs, timeout_s=60, on_result=lambda r: seen.append(r.job_id))
    assert [r.job_id for r in results] == [j.job_id for j in jobs] and sorted(seen) == sorted(r.job_id for r in results)
    for job, res in zip(jobs, results):
        assert res.status == "ok" and res.attempts == 1
        assert [r["val_acc_last"] for r in res.records] == [tt.expected_val_acc(s, job.task) for s in job.specs]
    assert len({r.records[0]["worker_pid"] for r in results}) == 2  # both actors worked


@pytest.mark.integration
def test_pool_reruns_a_job_whose_actor_died(pool: ActorPool, tmp_path: Path) -> None:
    deaths = pool.counters["actor_deaths"]
    jobs = [_job("dies-once", trainer="_test_exit_once", marker=str(tmp_path / "marker"))]
    jobs += [_job(f"ok{i}", seed=i, sleep_s=0.2) for i in range(3)]
    results = pool.run_jobs(jobs, timeout_s=60)
    assert [r.status for r in results] == ["ok"] * 4
    first_pid = int((tmp_path / "marker").read_text())
    assert results[0].attempts == 2 and results[0].records[0]["worker_pid"] != first_pid
    assert pool.counters["actor_deaths"] == deaths + 1


@pytest.mark.integration
@pytest.mark.slow  # three actor restarts (a fresh process imports torch each time): ~10-20 s
def test_pool_gives_up_after_bounded_retries(pool: ActorPool) -> None:
    results = pool.run_jobs([_job("always-dies", trainer="_test_exit_always"), _job("fine")], timeout_s=60)
    dead, fine = results
    assert dead.status == "failed" and dead.attempts == pool.config.max_retries + 1
    assert all(r["status"] == "failed" and "actor died 3 times" in r["error"] for r in dead.records)
    assert [r["candidate"] for r in dead.records] == ["always-dies-c0", "always-dies-c1"] and fine.status == "ok"


@pytest.mark.integration
def test_pool_times_out_a_straggler_and_finishes_the_rest(pool: ActorPool) -> None:
    jobs = [_job("straggler", sleep_s=120.0, k=3)] + [_job(f"q{i}", seed=i, sleep_s=0.2) for i in range(4)]
    results = pool.run_jobs(jobs, timeout_s=3.0)
    assert results[0].status == "timeout" and [r["status"] for r in results[0].records] == ["timeout"] * 3
    assert "ran past timeout_s=3" in results[0].records[0]["error"]
    assert [r.status for r in results[1:]] == ["ok"] * 4
    after = pool.run_jobs([_job(f"after{i}") for i in range(2)], timeout_s=60)  # the killed actor was replaced
    assert [r.status for r in after] == ["ok", "ok"] and pool.size == 2


@pytest.mark.integration
def test_pool_returns_failed_records_for_a_raising_trainer(pool: ActorPool) -> None:
    deaths = pool.counters["actor_deaths"]
    res = pool.run_jobs([_job("raises", trainer="_test_raise", message="loss exploded: q=7")])[0]
    assert res.status == "ok" and res.attempts == 1  # the actor answered; its records say failed
    assert all(r["status"] == "failed" and "RuntimeError: loss exploded: q=7" in r["error"] for r in res.records)
    assert [r["job_id"] for r in res.records] == ["raises", "raises"] and pool.counters["actor_deaths"] == deaths


@pytest.mark.integration
def test_pool_keeps_nan_metrics(pool: ActorPool) -> None:
    res = pool.run_jobs([_job("nan", trainer="_test_nan")])[0]
    assert isinstance(res, JobResult) and [r["status"] for r in res.records] == ["diverged", "diverged"]
    assert math.isnan(res.records[0]["val_acc_best"]) and res.records[0]["error"] == "loss became NaN at step 3"


@pytest.mark.integration
def test_actors_cache_task_data_across_jobs(pool: ActorPool) -> None:
    def materialized() -> int:
        return sum(ray.get([s.actor.cache_stats.remote() for s in pool._idle], timeout=60)[i]["materialized"]
                   for i in range(len(pool._idle)))

    before = materialized()
    jobs = [Job(job_id=f"arch-{a}-{r}", task=_task(99, a), specs=(LossSpec("ce"),), trainer="_test_echo",
                trainer_options={"sleep_s": 0.1}) for a in ("mlp2", "mlp3", "cnn4") for r in range(2)]
    assert [r.status for r in pool.run_jobs(jobs, timeout_s=60)] == ["ok"] * 6
    assert 1 <= materialized() - before <= pool.size  # one materialisation per actor at most, not per job


@pytest.mark.integration
def test_pool_rejects_duplicate_job_ids_and_bad_timeouts(pool: ActorPool) -> None:
    with pytest.raises(ValueError, match=r"duplicated: \['x'\]"):
        pool.run_jobs([_job("x"), _job("x")])
    with pytest.raises(ValueError, match="timeout_s"):
        pool.run_jobs([_job("y")], timeout_s=0)


@pytest.mark.integration
def test_a_pool_whose_actors_never_start_raises_and_cleans_up(pool: ActorPool) -> None:
    cfg = PoolConfig(materializer=tt.MATERIALIZER, trainer_modules=tt.MODULES, actor_start_timeout_s=0.05)
    with pytest.raises(RuntimeError, match="no evaluation actor could be started: actor not ready after"):
        ActorPool(cfg)  # the CPUs are held by the module's pool, so its actors stay pending
    assert pool.run_jobs([_job("still-fine")])[0].status == "ok"


@pytest.mark.integration
def test_embedded_ray_listens_on_loopback_only(pool: ActorPool) -> None:
    sockets = listening_sockets(embedded_ray_pids())
    assert len({s.process for s in sockets}) >= 3  # gcs_server, raylet, actors at least
    assert [s for s in sockets if not is_loopback(s.ip)] == []
