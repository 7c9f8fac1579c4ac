"""``pick="reevaluated"``: the top candidates and the CMA-ES mean trained again on new seeds, the best
on clean validation exported (search/reevaluate.py). One tiny search (synthetic data, the standard
trainer, InProcessPool) and one export of it are shared by the module; the compare runs in-process
through the real ``evoloss.compare`` entry point."""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
from pathlib import Path
from typing import Any, Iterator

import pandas as pd
import pytest

from evoloss.losses import LossSpec
from evoloss.losses.plugin import load_loss, read_plugin
from evoloss.results.store import ParquetStore
from evoloss.search.api import SearchResult, export, picked_spec
from evoloss.search.cli import main
from evoloss.search.compare_config import load_compare_config
from evoloss.search.config import load_config
from evoloss.search.coordinator import run_search
from evoloss.search.local_pool import InProcessPool
from evoloss.search.reevaluate import (
    MAX_TASKS,
    Candidate,
    choose,
    reevaluation_config,
    reevaluation_scores,
    reevaluation_seeds,
    reevaluation_tasks,
)
from evoloss.search.run_dir import create_run_dir
from evoloss.workers.jobs import JobResult, failure_records

TINY = {
    "search.family": "gce", "search.popsize": 4, "search.generations": 2, "search.seed": 3,
    "grid.datasets": ["synthetic:n=300,c=3,d=6"], "grid.archs": ["mlp2"], "grid.mode": "ar",
    "grid.noise": [{"type": "symmetric", "rate": 0.4}], "grid.seeds": [0, 1], "train.epochs": 1,
    "train.batch_size": 32, "train.trainer": "standard",
}
TOP = 3


@contextlib.contextmanager
def _in_process_pool(cluster: Any, run_dir: Path, *, address: str | None = None) -> Iterator[InProcessPool]:
    yield InProcessPool()


def _digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A 2-generation search and its ``reevaluated`` export (top 3 + the mean, 2 new seeds)."""
    run = tmp_path_factory.mktemp("reeval") / "run"
    config = load_config(overrides=TINY)
    create_run_dir(run, config)
    run_search(config, InProcessPool(), ParquetStore(run), run_id="run")
    before = {part: _digest(run / part) for part in ("evaluations", "generations", "state")}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("evoloss.search.engine.evaluation_pool", _in_process_pool)
        path = export(run, pick="reevaluated", top=TOP, progress=False)
    return {"run": run, "path": path, "before": before,
            "provenance": read_plugin(path)[1]["provenance"],
            "rows": pd.read_parquet(path.parent / "reevaluation" / "evaluations")}


def test_the_export_is_a_loadable_plugin_with_its_reevaluation_beside_it(exported):
    path = exported["path"]
    assert path == exported["run"] / "export" / "evolved_loss" / "loss.json"
    assert (path.parent / "evolved_loss.py").is_file() and (path.parent / "reevaluation" / "summary.txt").is_file()
    assert load_loss(path).spec.family == "gce"
    assert not [p for p in path.parent.parent.iterdir() if p.name.startswith(".")]  # no staging left


def test_the_chosen_candidate_is_the_argmax_of_the_rows_validation_metric(exported):
    rows, prov = exported["rows"], exported["provenance"]
    ok = rows[rows["status"] == "ok"]
    means = ok.groupby("method", sort=False)["val_acc_last"].mean()
    order = [c["id"] for c in prov["reevaluation"]["candidates"]]
    ranked = sorted(order, key=lambda m: (-means[m], order.index(m)))  # ties to the earlier-ranked candidate
    assert prov["reevaluation"]["chosen"] == ranked[0]
    chosen = next(c for c in prov["reevaluation"]["candidates"] if c["id"] == ranked[0])
    assert dict(load_loss(exported["path"]).spec.params) == pytest.approx(chosen["params"])
    for c in prov["reevaluation"]["candidates"]:
        assert c["score"] == pytest.approx(means[c["id"]])
    assert prov["reevaluation"]["selected_on"] == "val_acc_last"


def test_the_candidates_are_the_distinct_top_and_the_mean(exported):
    run, prov = SearchResult(exported["run"]), exported["provenance"]
    cands = prov["reevaluation"]["candidates"]
    assert [c["id"] for c in cands][-1] == "mean" and len(cands) == TOP + 1
    best = run.best
    assert (cands[0]["generation"], cands[0]["candidate"]) == (best["generation"], best["candidate"])
    assert cands[0]["fitness"] == pytest.approx(best["fitness"])
    # independently: fitness = mean val_acc_last per (generation, candidate) (accuracy/mean), distinct params
    evals = run.evaluations()
    per = evals.groupby(["generation", "candidate"]).agg(fitness=("val_acc_last", "mean"), params=("params", "first"))
    per = per.reset_index().sort_values(["fitness", "generation", "candidate"], ascending=[False, True, True])
    per = per.drop_duplicates("params").head(TOP)
    assert [c["id"] for c in cands[:-1]] == [f"g{g}-c{c}" for g, c in zip(per["generation"], per["candidate"])]
    assert [c["fitness"] for c in cands[:-1]] == pytest.approx(list(per["fitness"]))
    assert [c["params"] for c in cands[:-1]] == [json.loads(t) for t in per["params"]]
    mean_spec, origin = picked_spec(exported["run"], "mean")
    assert cands[-1]["params"] == pytest.approx(dict(mean_spec.params)) and cands[-1]["candidate"] is None
    assert cands[-1]["generation"] == origin["generation"]


def test_reevaluation_seeds_are_new_and_recorded(exported):
    rows, prov = exported["rows"], exported["provenance"]
    assert set(rows["seed"]) == {100, 101} and not set(rows["seed"]) & set(TINY["grid.seeds"])
    assert prov["reevaluation"]["seeds"] == [100, 101] and prov["reevaluation"]["search_seeds"] == [0, 1]
    assert prov["pick"] == "reevaluated" and prov["metric_rule"] == "last"
    assert prov["reevaluation"]["run_dir"] == str(exported["path"].parent / "reevaluation")
    assert sorted(prov["reevaluation"]["tasks"]) == sorted(set(rows["task_key"]))
    assert len(rows) == (TOP + 1) * 2 and set(rows["method"]) == {c["id"] for c in prov["reevaluation"]["candidates"]}


def test_the_search_run_is_unchanged_by_the_export(exported):
    run = exported["run"]
    assert {part: _digest(run / part) for part in ("evaluations", "generations", "state")} == exported["before"]
    assert set(pd.read_parquet(run / "evaluations")["seed"]) == {0, 1}


class _Skewed(InProcessPool):
    """Real jobs, then validation and test accuracy set by construction: the second candidate is the
    best on validation, the first on test."""

    def run_jobs(self, jobs, *, timeout_s=None, on_result=None):
        results = super().run_jobs(jobs)
        for res in results:
            for rec in res.records:
                i = int(str(rec["candidate"]).lstrip("m"))
                rec.update(val_acc_last=0.6 if i == 1 else 0.2 + 0.01 * i, test_acc_last=0.9 if i == 0 else 0.1)
        return results


def test_the_cli_picks_on_validation_where_test_accuracy_disagrees(exported, tmp_path, monkeypatch, capsys):
    @contextlib.contextmanager
    def skewed(cluster: Any, run_dir: Path, *, address: str | None = None) -> Iterator[InProcessPool]:
        yield _Skewed()

    monkeypatch.setattr("evoloss.search.engine.evaluation_pool", skewed)
    out = tmp_path / "e"
    argv = ["export", str(exported["run"]), "--out", str(out), "--pick", "reevaluated", "--top", "3",
            "--reeval-seeds", "1", "--name", "picked"]
    assert main(argv) == 0
    rows = pd.read_parquet(out / "reevaluation" / "evaluations")
    by_val = rows.groupby("method")["val_acc_last"].mean().idxmax()
    by_test = rows.groupby("method")["test_acc_last"].mean().idxmax()
    prov = read_plugin(out)[1]["provenance"]["reevaluation"]
    second = prov["candidates"][1]
    assert by_val == second["id"] != by_test and prov["chosen"] == second["id"] and set(rows["seed"]) == {100}
    assert dict(load_loss(out).spec.params) == pytest.approx(second["params"])
    assert f"picked {second['id']} by mean val_acc_last on seeds [100]" in capsys.readouterr().out


# --- the choice reads the validation column only ---------------------------------------------------
def _rows(val: list[float], test: list[float], status: list[str] | None = None) -> pd.DataFrame:
    n = len(val)
    return pd.DataFrame({"candidate": list(range(n)), "status": status or ["ok"] * n, "val_acc_last": val,
                         "val_acc_best": [0.0] * n, "test_acc_last": test, "test_acc_best": test})


def test_the_choice_follows_validation_even_where_test_accuracy_disagrees():
    rows = _rows([0.9, 0.5, 0.7], [0.1, 0.99, 0.5])
    scores = reevaluation_scores(rows, "last", 3)
    assert scores == pytest.approx([0.9, 0.5, 0.7]) and choose(scores) == 0
    no_test = rows.drop(columns=["test_acc_last", "test_acc_best"])  # it runs without any test column
    assert reevaluation_scores(no_test, "last", 3) == scores


def test_the_choice_reads_the_metric_rules_column_ties_and_failures():
    rows = _rows([0.9, 0.5], [0.0, 0.0]).assign(val_acc_best=[0.2, 0.8], noisy_val_acc_best=[0.6, 0.3])
    assert choose(reevaluation_scores(rows, "best", 2)) == 1
    assert choose(reevaluation_scores(rows, "noisy", 2)) == 0
    assert choose([0.5, 0.7, 0.7]) == 1 and choose([None, None]) is None
    failed = _rows([math.nan, 0.4], [0.9, 0.1], status=["failed", "ok"])
    assert reevaluation_scores(failed, "last", 3) == [None, pytest.approx(0.4), None]


# --- tasks of a subset grid ------------------------------------------------------------------------
SUBSET = {**TINY, "grid.mode": "ardr", "grid.archs": ["mlp2", "mlp3"],
          "grid.datasets": ["synthetic:n=300,c=3,d=6", "synthetic:n=300,c=4,d=6"], "grid.seeds": [0, 1, 2],
          "grid.subset_size": 2}


def test_a_small_subset_grid_is_reevaluated_on_every_task():
    config = load_config(overrides=SUBSET)
    seeds = reevaluation_seeds(config, 2)
    tasks = reevaluation_tasks(config, seeds)
    assert seeds == [100, 101] and len(tasks) == 2 * 2 * 1 * 2 == MAX_TASKS
    assert {t[3] for t in tasks} == {100, 101}


def test_a_large_subset_grid_is_reevaluated_on_a_seeded_subset():
    config = load_config(overrides=SUBSET)
    seeds = reevaluation_seeds(config, 3)
    every = [(a, d, 0, s) for a in SUBSET["grid.archs"] for d in SUBSET["grid.datasets"] for s in seeds]
    tasks = reevaluation_tasks(config, seeds)
    assert len(tasks) == MAX_TASKS and len(set(tasks)) == MAX_TASKS and set(tasks) < set(every)
    assert tasks == sorted(tasks, key=every.index)  # in grid order
    assert reevaluation_tasks(config, seeds) == tasks  # a pure function of the config
    draws = {tuple(reevaluation_tasks(load_config(overrides={**SUBSET, "search.seed": s}), seeds)) for s in range(6)}
    assert len(draws) > 1  # search.seed decides the draw
    data = reevaluation_config(config, [Candidate("g0-c0", LossSpec("gce", {"q": 0.5}), 0, 0, 0.5)], seeds, Path("r"))
    compare = load_compare_config(data=data)
    listed = sorted((g.archs[0], g.datasets[0], s) for g in compare.tasks for s in g.seeds)
    assert listed == sorted((a, d, s) for a, d, _, s in tasks)



def test_a_stratified_grid_is_reevaluated_on_a_subset_stratified_by_arch():
    three = {**SUBSET, "grid.archs": ["mlp2", "mlp3", "mlp4"], "grid.stratify": "arch"}
    seeds = [100, 101, 102]
    for seed in range(4):
        tasks = reevaluation_tasks(load_config(overrides={**three, "search.seed": seed}), seeds)
        counts = sorted(sum(t[0] == a for t in tasks) for a in three["grid.archs"])
        assert len(tasks) == MAX_TASKS and counts == [2, 3, 3]  # 8 over 3 architectures
    plain = [reevaluation_tasks(load_config(overrides={**three, "grid.stratify": "none", "search.seed": s}), seeds)
             for s in range(8)]
    assert any(sorted(sum(t[0] == a for t in ts) for a in three["grid.archs"]) != [2, 3, 3] for ts in plain)

# --- bad input: one line, nothing written ----------------------------------------------------------
@pytest.mark.parametrize("kwargs, key", [({"top": 0}, "top"), ({"top": 65}, "top"), ({"top": True}, "top"),
                                         ({"reeval_seeds": 0}, "reeval_seeds"), ({"reeval_seeds": 17}, "reeval_seeds")])
def test_bad_arguments_are_refused_before_anything_is_written(exported, tmp_path, kwargs, key):
    out = tmp_path / "e"
    with pytest.raises(ValueError, match=rf"^{key}=.*must be an int in \[1, \d+\]"):
        export(exported["run"], out=out, pick="reevaluated", progress=False, **kwargs)
    assert not out.exists()


def test_top_without_the_reevaluated_pick_is_refused(exported, tmp_path):
    with pytest.raises(ValueError, match="top=3: is used by pick='reevaluated' only"):
        export(exported["run"], out=tmp_path / "e", pick="best", top=3)
    assert not (tmp_path / "e").exists()


def test_a_run_without_a_complete_generation_is_refused(tmp_path):
    run = tmp_path / "run"
    create_run_dir(run, load_config(overrides=TINY))
    with pytest.raises(ValueError, match="no complete generation"):
        export(run, pick="reevaluated", progress=False)
    assert not (run / "export").exists()


@pytest.mark.parametrize("flags, needle", [(["--top", "0"], "top=0"), (["--reeval-seeds", "17"], "reeval_seeds=17"),
                                           (["--top", "2", "--pick", "mean"], "top=2")])
def test_the_cli_says_one_line_and_exits_2(exported, tmp_path, capsys, flags, needle):
    out = tmp_path / "e"
    argv = ["export", str(exported["run"]), "--out", str(out), *flags]
    if "--pick" not in flags:
        argv += ["--pick", "reevaluated"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and needle in err and not out.exists()


class _Broken(InProcessPool):
    def run_jobs(self, jobs, *, timeout_s=None, on_result=None):
        super().run_jobs(jobs[:1])
        raise OSError("injected: the pool broke")


def test_a_failed_reevaluation_leaves_no_export_behind(exported, tmp_path, monkeypatch):
    @contextlib.contextmanager
    def broken(cluster: Any, run_dir: Path, *, address: str | None = None) -> Iterator[InProcessPool]:
        yield _Broken()

    monkeypatch.setattr("evoloss.search.engine.evaluation_pool", broken)
    out = tmp_path / "e"
    with pytest.raises(OSError, match="injected"):
        export(exported["run"], out=out, pick="reevaluated", top=1, reeval_seeds=1, progress=False)
    assert list(tmp_path.iterdir()) == []


class _AllFailed(InProcessPool):
    def run_jobs(self, jobs, *, timeout_s=None, on_result=None):
        return [JobResult(j.job_id, "failed", failure_records(j, "failed", "injected: no worker"), 1, 0.0) for j in jobs]


def test_a_reevaluation_without_a_usable_row_exports_nothing(exported, tmp_path, monkeypatch):
    @contextlib.contextmanager
    def all_failed(cluster: Any, run_dir: Path, *, address: str | None = None) -> Iterator[InProcessPool]:
        yield _AllFailed()

    monkeypatch.setattr("evoloss.search.engine.evaluation_pool", all_failed)
    with pytest.raises(ValueError, match=r"no usable row \(failed 2; first error: injected: no worker\)"):
        export(exported["run"], out=tmp_path / "e", pick="reevaluated", top=1, reeval_seeds=1, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_an_existing_export_is_kept_unless_overwrite(exported, tmp_path, monkeypatch):
    monkeypatch.setattr("evoloss.search.engine.evaluation_pool", _in_process_pool)
    out = tmp_path / "e"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    with pytest.raises(ValueError, match="^out=.*exists and is not empty"):
        export(exported["run"], out=out, pick="reevaluated", top=1, reeval_seeds=1, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["e"] and (out / "mine.txt").read_text() == "keep"
    path = export(exported["run"], out=out, pick="reevaluated", top=1, reeval_seeds=1, progress=False, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["evolved_loss.py", "loss.json", "reevaluation"]
    assert [p.name for p in tmp_path.iterdir()] == ["e"] and path == out / "loss.json"
    with pytest.raises(ValueError, match="reeval_dir"):
        picked_spec(exported["run"], "reevaluated")
