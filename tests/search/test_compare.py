"""`evoloss compare` internals: config validation, presets, jobs, tuned selection, rows, failures, summary.

Runs use `InProcessPool` and tiny budgets (digits, mlp2, 1–2 epochs, ≤150 training rows). One compare
with every kind of method (and broken ones) runs once per module; the tests read its rows.
"""
from __future__ import annotations

import copy
import datetime as dt
import json
import math
import statistics
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import torch

from evoloss import losses
from evoloss.losses import LossSpec
from evoloss.losses.plugin import export_plugin
from evoloss.results.schema import SCHEMA_VERSION
from evoloss.results.store import MemoryStore, ParquetStore
from evoloss.results.tables import group_summary_table
from evoloss.search.compare import (
    META_COST_FACTOR,
    CompareTask,
    ResolvedMethod,
    Slot,
    compare_tasks,
    make_compare_jobs,
    resolve_method,
    run_compare,
    select_tuned,
    tuned_record,
)
from evoloss.search.compare_config import (
    MAX_GRID_POINTS,
    CompareConfig,
    apply_overrides,
    list_compare_presets,
    load_compare_config,
    parse_compare_config,
    resolved_compare_toml,
    tuned_grid_points,
)
from evoloss.search.config import SearchConfig, SearchSection, load_config
from evoloss.search.coordinator import record_to_row
from evoloss.search.grid import grid_from_config
from evoloss.search.local_pool import InProcessPool
from evoloss.search.run_dir import create_run_dir
from evoloss.workers.records import EvalRecord
from evoloss.workers.task import Budget, NoiseSpec, Splits, Task

REPO_ROOT = Path(__file__).resolve().parents[2]
NAN_FAMILY = "_test_nan_loss"

if NAN_FAMILY not in losses.list_losses():
    @losses.register_family(NAN_FAMILY)
    def _nan_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """A loss that is NaN for every sample (its runs must end ``diverged``)."""
        return logits.sum(dim=1) * float("nan")


SYM = {"type": "symmetric", "rate": 0.8, "convention": "exact"}
ASYM = {"type": "asymmetric", "rate": 0.4, "convention": "pairflip"}
BASE: dict[str, Any] = {
    "compare": {"meta_per_class": 5},
    "train": {"epochs": 1, "max_train": 120},
    "methods": [
        {"name": "ce", "kind": "loss", "family": "ce"},
        {"name": "gce", "kind": "loss", "family": "gce", "params": {"q": 0.7}},
        {"name": "gce-tuned", "kind": "tuned", "family": "gce", "grid": {"q": [0.1, 0.9]}},
        {"name": "l2b", "kind": "trainer", "trainer": "l2b"},
    ],
    "tasks": [
        {"name": "seen", "datasets": ["digits"], "noise": [SYM], "seeds": [0, 1]},
        {"name": "held-out", "heldout": True, "datasets": ["digits"], "noise": [ASYM], "seeds": [0]},
    ],
}
DELETE = object()


def with_setting(path: str, value: Any, base: dict[str, Any] = BASE) -> dict[str, Any]:
    """``base`` with one setting replaced (or deleted); numeric parts index into lists."""
    data = copy.deepcopy(base)
    *parents, leaf = path.split(".")
    node: Any = data
    for part in parents:
        node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
    key = int(leaf) if leaf.isdigit() else leaf
    if value is DELETE:
        del node[key]
    else:
        node[key] = value
    return data


# --- config --------------------------------------------------------------------------------------
def test_base_parses_with_defaults_filled() -> None:
    config = parse_compare_config(BASE)
    assert isinstance(config, CompareConfig)
    assert config.compare.metric_rule == "last" and config.compare.meta_per_class == 5
    assert config.methods[0].params == {} and config.methods[1].params == {"q": 0.7}
    assert config.methods[2].params == {} and config.methods[2].grid == {"q": (0.1, 0.9)}
    assert config.methods[3].trainer == "l2b" and config.methods[3].options is None
    assert [g.heldout for g in config.tasks] == [False, True] and config.train.trainer == "population"


def test_tuned_grid_points_are_the_product_first_key_slowest() -> None:
    data = with_setting("methods.2", {"name": "sce-tuned", "kind": "tuned", "family": "sce",
                                      "grid": {"alpha": [0.1, 1.0], "beta": [0.5, 1.0, 2.0]}, "params": {"A": -4.0}})
    points = tuned_grid_points(parse_compare_config(data).methods[2])
    expected = [(a, b) for a in (0.1, 1.0) for b in (0.5, 1.0, 2.0)]
    assert [(p["alpha"], p["beta"]) for p in points] == expected and all(p["A"] == -4.0 for p in points)


def test_resolved_toml_round_trips_for_base_and_every_preset() -> None:
    configs = [parse_compare_config(BASE)] + [load_compare_config(preset=p) for p in list_compare_presets()]
    for config in configs:
        text = resolved_compare_toml(config)
        assert parse_compare_config(tomllib.loads(text)) == config
    assert set(list_compare_presets()) >= {"quick", "arl-table1", "arl-table2"}


def test_overrides_address_list_entries_by_name() -> None:
    data = apply_overrides(BASE, {"methods.gce.params.q": 0.5, "tasks.seen.seeds": [3], "train.epochs": 2})
    config = parse_compare_config(data)
    assert config.methods[1].params == {"q": 0.5} and config.tasks[0].seeds == (3,) and config.train.epochs == 2
    assert BASE["methods"][1]["params"] == {"q": 0.7}  # the base is not mutated
    with pytest.raises(ValueError, match=r"config methods.gcee.params.q: names no entry of methods.*did you mean 'gce'"):
        apply_overrides(BASE, {"methods.gcee.params.q": 0.5})
    with pytest.raises(ValueError, match=r"must name a key of the entry"):
        apply_overrides(BASE, {"tasks.seen": 1})


BAD = [
    ("compar", {}, "config <root>: unknown key 'compar'; did you mean 'compare'"),
    ("methods", DELETE, "config methods: is missing"),
    ("tasks", [], "config tasks: must be a non-empty list of tables"),
    ("methods.0.famly", "ce", "config methods[0]: unknown key 'famly'; did you mean 'family'"),
    ("methods.1.name", "ce", "config methods[1].name: repeats the name of another method"),
    ("methods.0.name", " ", "config methods[0].name: must be a non-empty name"),
    ("methods.0.kind", "los", "config methods[0].kind: is not a valid choice, got 'los'; did you mean 'loss'"),
    ("methods.0.family", "cee", "config methods[0].family: is not registered, got 'cee'; did you mean 'ce'"),
    ("methods.1.params.q", 1.5, "config methods[1].params.q: is outside its valid range (0, 1], got 1.5"),
    ("methods.1.params.z", 1.0, "config methods[1].params: unknown key 'z'"),
    ("methods.1.params.q", "high", "config methods[1].params.q: must be a finite number"),
    ("methods.0.params.q", 0.5, "config methods[0].params.q: family 'ce' has no parameters"),
    ("methods.2.grid.q", [0.1, 2.0], "config methods[2].grid.q[1]: is outside its valid range"),
    ("methods.2.grid.q", [], "config methods[2].grid.q: must be a non-empty list of numbers"),
    ("methods.2.grid.q", [0.5, 0.5], "config methods[2].grid.q: lists a value twice"),
    ("methods.2.params", {"q": 0.3}, "config methods[2].grid.q: is also fixed in params"),
    ("methods.2.grid", DELETE, "config methods[2].grid: is required by kind 'tuned'"),
    ("methods.2.grid.q", [round(0.01 * (i + 1), 2) for i in range(MAX_GRID_POINTS + 1)],
     f"config methods[2].grid: has {MAX_GRID_POINTS + 1} points"),
    ("methods.0.path", "x.json", "config methods[0].path: is not used by kind 'loss'"),
    ("methods.0.kind", "plugin", "config methods[0].path: is required by kind 'plugin'"),
    ("methods.3.trainer", "l2bb", "config methods[3].trainer: is not registered, got 'l2bb'; did you mean 'l2b'"),
    ("methods.3.trainer", "population", "config methods[3].trainer: is a loss trainer"),
    ("methods.3.options", {"variant": "nope"}, "config methods[3].options: rejected by trainer 'l2b'"),
    ("methods.3.options", {"colour": 1}, "config methods[3].options: rejected by trainer 'l2b'"),
    ("compare.meta_per_class", 0, "config compare.meta_per_class: is 0 but method 'l2b' needs a clean meta set"),
    ("compare.metric_rule", "first", "config compare.metric_rule: is not a valid choice"),
    ("cluster.engine", "tune", "config cluster.engine: must be 'native' for a compare"),
    ("train.val", 0.85, "config train.test: val + test fractions must leave training data"),
    ("tasks.0.datasets", ["digitz"], "config tasks[0].datasets[0]:"),
    ("tasks.0.archs", ["mlp9"], "config tasks[0].archs[0]:"),
    ("tasks.0.noise.0.rate", 1.0, "config tasks[0].noise[0].rate: must be < 1"),
    ("tasks.0.heldout", "yes", "config tasks[0].heldout: must be true or false"),
    ("tasks.0.seeds", [], "config tasks[0].seeds: must be a non-empty list of ints"),
    ("tasks.1.name", "seen", "config tasks[1].name: repeats the name of another task group"),
    ("tasks.1.noise", [SYM],
     "config tasks[1]: lists task digits/mlp2/symmetric0.8-exact that group 'seen' already has"),
]


@pytest.mark.parametrize("path, value, message", BAD, ids=[f"{p}={v!r}"[:60] for p, v, _ in BAD])
def test_bad_config_is_one_clear_error_naming_the_key(path: str, value: Any, message: str) -> None:
    data = with_setting(path, value) if path != "compar" else {**BASE, "compar": value}
    with pytest.raises(ValueError) as info:
        parse_compare_config(data)
    text = str(info.value)
    assert "\n" not in text
    assert message in text, text


def test_unknown_preset_and_missing_file() -> None:
    with pytest.raises(ValueError, match=r"config preset: is not registered, got 'quik'; did you mean 'quick'"):
        load_compare_config(preset="quik")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_compare_config("no/such/compare.toml")


# --- presets -------------------------------------------------------------------------------------
def _task_labels(config: CompareConfig, heldout: bool) -> set[tuple[str, str, str, float, str]]:
    return {(d, a, n.type, n.rate, n.convention) for g in config.tasks if g.heldout == heldout
            for d in g.datasets for a in g.archs for n in g.noise}


def test_quick_preset_compares_all_three_kinds_on_seen_and_unseen_tasks() -> None:
    config = load_compare_config(preset="quick")
    kinds = {m.name: (m.kind, m.family or m.trainer or m.run_dir or None) for m in config.methods}
    assert kinds == {"ce": ("loss", "ce"), "gce": ("loss", "gce"), "sce": ("loss", "sce"),
                     "nce+mae": ("loss", "nce_mae"), "gce-tuned": ("tuned", "gce"),
                     "evolved": ("search", "runs/quickstart/search"),
                     "evolved-mean": ("plugin", None), "l2b": ("trainer", "l2b"),
                     "mwnet": ("trainer", "mwnet"), "adaptive-gce": ("trainer", "adaptive-gce"),
                     "narl-gce": ("trainer", "narl-gce"), "dynamic": ("trainer", "dynamic"),
                     "cleanlab": ("cleanlab", None)}
    search = load_config(preset="quick")  # what the quick search trains on
    searched = {(t.dataset, t.arch, t.noise.kind, t.noise.rate, t.noise.convention)
                for t in grid_from_config(search).tasks()}
    assert _task_labels(config, heldout=False) <= searched
    assert _task_labels(config, heldout=True) and not (_task_labels(config, heldout=True) & searched)
    assert {d for g in config.tasks for d in g.datasets} == {"digits", "synthetic:n=3000,c=10,d=20"}
    assert {a for g in config.tasks for a in g.archs} == {"mlp2", "mlp3", "cnn4"}
    # held-out under the search's own noise (80% symmetric): unseen noise draws, data, architecture
    assert {g.name for g in config.tasks if g.heldout and g.noise[0].rate == 0.8} >= {"held-out-draws", "held-out-data"}
    # the compare trains the protocol's 30 epochs; the quick search scores at 15 (a loss must learn fast)
    assert (config.train.epochs, search.train.epochs) == (30, 15) and config.train.max_train == search.train.max_train
    moved = load_compare_config(preset="quick", overrides={"methods.evolved.run_dir": "runs/elsewhere"})
    assert moved.methods[5].run_dir == "runs/elsewhere"


@pytest.mark.parametrize("preset, noise", [("arl-table1", ("symmetric", 0.8, "exact")),
                                           ("arl-table2", ("asymmetric", 0.4, "pairflip"))])
def test_arl_table_presets_follow_the_papers_grid(preset: str, noise: tuple[str, float, str]) -> None:
    config = load_compare_config(preset=preset)
    assert {(g.name, g.heldout) for g in config.tasks} == {("seen-by-dr", False), ("novel", True)}
    assert {d for g in config.tasks for d in g.datasets} == {"cifar10", "cifar100", "fashion_mnist", "usps"}
    assert all(g.archs == ("vgg11", "resnet18") for g in config.tasks)
    assert {(n.type, n.rate, n.convention) for g in config.tasks for n in g.noise} == {noise}
    names = [m.name for m in config.methods]
    assert names[:9] == ["CE", "GCE", "SCE", "Bootstrap", "MAE", "Label-smooth", "NCE+MAE", "NFL+MAE", "Bi-Temper"]
    assert [m.kind for m in config.methods[9:]] == ["search", "search"] and config.compare.metric_rule == "last"


# --- tasks and jobs ------------------------------------------------------------------------------
def test_compare_tasks_share_budget_splits_and_carry_the_split() -> None:
    tasks = compare_tasks(parse_compare_config(BASE))
    assert [(t.task.key(), t.group, t.split) for t in tasks] == [
        ("digits/mlp2/symmetric0.8-exact/s0", "seen", "seen"), ("digits/mlp2/symmetric0.8-exact/s1", "seen", "seen"),
        ("digits/mlp2/asymmetric0.4-pairflip/s0", "held-out", "held-out")]
    assert {t.task.splits for t in tasks} == {Splits(val=0.2, test=0.2, meta_per_class=5, max_train=120)}
    assert {t.task.budget.epochs for t in tasks} == {1}


def test_jobs_group_losses_per_task_and_give_each_meta_method_its_own() -> None:
    task = CompareTask(Task(dataset="digits", arch="mlp2", budget=Budget(epochs=1), splits=Splits(max_train=100)),
                       "seen", "seen")
    methods = [
        ResolvedMethod(0, "ce", "loss", "hand-designed", specs=(LossSpec("ce"),)),
        ResolvedMethod(1, "t", "tuned", "hand-designed",
                       specs=(LossSpec("gce", {"q": 0.1}), LossSpec("gce", {"q": 0.9}))),
        ResolvedMethod(2, "broken", "plugin", "evolved", error="unresolved plugin: bad"),
        ResolvedMethod(3, "l2b", "trainer", "meta-learned", specs=(LossSpec("ce"),), trainer="l2b",
                       options={"variant": "alpha0"}),
    ]
    jobs, slots = make_compare_jobs([task, task], methods, "population")
    assert [j.job_id for j in jobs] == ["t0-losses", "t0-m3", "t1-losses", "t1-m3"]
    losses_job, meta_job = jobs[0], jobs[1]
    assert losses_job.trainer == "population" and losses_job.candidates == ("m0", "m1-p0", "m1-p1")
    assert [s.params.get("q") for s in losses_job.specs] == [None, 0.1, 0.9]
    assert meta_job.trainer == "l2b" and dict(meta_job.trainer_options) == {"variant": "alpha0"}
    assert meta_job.cost == META_COST_FACTOR * 1 * 1 * 100
    assert slots[("t1-losses", "m1-p1")] == Slot(task=1, method=1, point=1)
    assert slots[("t1-m3", "m3")] == Slot(task=1, method=3) and len(slots) == 2 * 4
    assert all(slot.method != 2 for slot in slots.values())  # the unresolved plugin has no job
    assert dict(losses_job.trainer_options) == {}
    compiled, _ = make_compare_jobs([task], methods, "population", loss_options={"compile": "off"})
    assert dict(compiled[0].trainer_options) == {"compile": "off"}  # train.compile reaches the loss job
    assert dict(compiled[1].trainer_options) == {"variant": "alpha0"}  # not the meta-learned methods'


# --- tuned selection (independent of any training) -----------------------------------------------
def _rec(status: str, val_last: float, val_best: float = math.nan, q: float = 0.5) -> dict[str, Any]:
    return {**EvalRecord(family="gce", params={"q": q}, status=status, val_acc_last=val_last,
                         val_acc_best=val_best, test_acc_last=val_last / 2).to_dict(), "candidate": "x"}


def test_select_tuned_takes_the_best_ok_finite_validation_score_ties_to_the_first() -> None:
    records = [_rec("ok", 0.50), _rec("diverged", 0.99), _rec("ok", 0.70), _rec("ok", math.nan), _rec("ok", 0.70),
               _rec("failed", 0.95)]
    assert select_tuned(records, "last") == 2
    best_rule = [_rec("ok", 0.9, 0.1), _rec("ok", 0.1, 0.8)]
    assert select_tuned(best_rule, "last") == 0 and select_tuned(best_rule, "best") == 1
    assert select_tuned([_rec("diverged", 0.9), _rec("ok", math.nan)], "last") is None


def test_tuned_record_reports_the_chosen_point_or_nothing() -> None:
    chosen = tuned_record([_rec("ok", 0.4, q=0.1), _rec("ok", 0.6, q=0.9)], "last")
    assert chosen["params"] == {"q": 0.9} and chosen["test_acc_last"] == 0.3
    assert chosen["extra"]["tuned"] == {"selected_on": "val_acc_last", "chosen": 1, "points": [{"q": 0.1}, {"q": 0.9}],
                                        "val": [0.4, 0.6], "status": ["ok", "ok"]}
    both_diverged = [dict(_rec("diverged", math.nan), error="loss is nan"), _rec("diverged", math.nan)]
    none = tuned_record(both_diverged, "last")
    assert none["status"] == "diverged" and math.isnan(none["test_acc_last"]) and "loss is nan" in none["error"]
    assert tuned_record([_rec("diverged", math.nan), _rec("failed", math.nan)], "last")["status"] == "failed"


# --- summary (formula written out here) ----------------------------------------------------------
def _row(candidate: int, method: str, group: str, seed: int, status: str, acc: float,
         error: str = "") -> dict[str, Any]:
    return {"candidate": candidate, "method": method, "method_kind": "hand-designed", "status": status, "seed": seed,
            "error": error, "test_acc_last": acc, "extra": json.dumps({"group": group, "split": "seen"})}


def test_summary_table_seed_means_sample_std_partial_and_failed_cells() -> None:
    rows = [_row(0, "ce", "a", 0, "ok", 0.50), _row(0, "ce", "a", 0, "ok", 0.70),  # seed 0: two tasks
            _row(0, "ce", "a", 1, "ok", 0.80), _row(0, "ce", "a", 1, "ok", 0.90),
            _row(0, "ce", "a", 2, "ok", 0.20), _row(0, "ce", "a", 2, "ok", 0.40),
            _row(0, "ce", "b", 0, "ok", 0.40), _row(0, "ce", "b", 1, "diverged", math.nan, "loss nan"),
            _row(1, "x", "a", 0, "failed", math.nan, "\nunresolved plugin: file gone\ntraceback"),
            _row(1, "x", "b", 0, "timeout", math.nan, "")]
    text = group_summary_table(rows, "last")
    seed_means = [statistics.mean([50.0, 70.0]), statistics.mean([80.0, 90.0]), statistics.mean([20.0, 40.0])]
    expected_a = f"{statistics.mean(seed_means):.2f} ± {statistics.stdev(seed_means):.2f}"
    lines = text.splitlines()
    assert lines[0].split() == ["method", "kind", "a", "[seen]", "b", "[seen]"]
    assert expected_a == "58.33 ± 27.54" and expected_a in lines[1] and "40.00 (1/2 ok)" in lines[1]
    assert "failed: unresolved plugin: file gone" in lines[2] and "timeout: no finite accuracy" in lines[2]
    assert lines[-1].startswith("(test_acc_last in %")


# --- one compare with every kind of method, some broken ------------------------------------------
def make_search_run(run_dir: Path, spec: LossSpec, fitness: float) -> None:
    """A complete one-generation search run whose best candidate is ``spec``."""
    config = SearchConfig(search=SearchSection(family=spec.family))
    create_run_dir(run_dir, config)
    task = Task(dataset="digits", arch="mlp2", noise=NoiseSpec("symmetric", 0.8, "exact"))
    rec = {**EvalRecord(family=spec.family, params=dict(spec.params), val_acc_last=fitness).to_dict(), "candidate": 0}
    row = record_to_row(rec, task, run_id=run_dir.name, generation=0, metric_rule="last")
    gen = {"run_id": run_dir.name, "generation": 0, "best_fitness": fitness, "mean_fitness": fitness,
           "median_fitness": fitness, "best_candidate": 0, "best_params": dict(spec.params), "sigma": 1.0,
           "evaluations": 1, "failed": 0, "evals_per_s": 1.0, "wall_s": 1.0, "grid_subset": [task.key()],
           "timestamp": dt.datetime.now(dt.timezone.utc)}
    store = ParquetStore(run_dir)
    store.append(0, [row], gen)
    store.save_state(0, {"generation": 0})


MIXED_NAMES = ["ce", "gce-0.1", "gce-0.9", "gce-tuned", "broken-plugin", "missing-run", "sce-plugin", "evolved-run",
               "nan-loss"]


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("mixed")
    (root / "broken").mkdir()
    (root / "broken" / "loss.json").write_text("{not json")
    plugin = export_plugin(LossSpec("sce", {"alpha": 0.5, "beta": 1.0}), root / "export", name="sce_plugin")
    make_search_run(root / "search-run", LossSpec("gce", {"q": 0.3}), fitness=0.42)
    data = {
        "compare": {"meta_per_class": 5},
        "train": {"epochs": 2, "max_train": 100},
        "methods": [
            {"name": "ce", "kind": "loss", "family": "ce"},
            {"name": "gce-0.1", "kind": "loss", "family": "gce", "params": {"q": 0.1}},
            {"name": "gce-0.9", "kind": "loss", "family": "gce", "params": {"q": 0.9}},
            {"name": "gce-tuned", "kind": "tuned", "family": "gce", "grid": {"q": [0.1, 0.9]}},
            {"name": "broken-plugin", "kind": "plugin", "path": str(root / "broken" / "loss.json")},
            {"name": "missing-run", "kind": "search", "run_dir": str(root / "no-such-run")},
            {"name": "sce-plugin", "kind": "plugin", "path": str(plugin / "loss.json")},
            {"name": "evolved-run", "kind": "search", "run_dir": str(root / "search-run")},
            {"name": "nan-loss", "kind": "loss", "family": NAN_FAMILY},
        ],
        "tasks": [{"name": "seen", "datasets": ["digits"], "noise": [SYM], "seeds": [0]},
                  {"name": "held-out", "heldout": True, "datasets": ["digits"], "noise": [ASYM], "seeds": [0]}],
    }
    config = parse_compare_config(data)
    store = MemoryStore()
    lines: list[str] = []
    summary = run_compare(config, InProcessPool(), store, run_id="mixed", progress=lines.append)
    rows = store.read()
    rows["extra"] = [json.loads(e) for e in rows["extra"]]
    return {"summary": summary, "store": store, "rows": rows, "lines": lines, "config": config}


def _method_rows(mixed: dict[str, Any], name: str):
    rows = mixed["rows"]
    return rows[rows["method"] == name]


def test_compare_writes_one_valid_row_per_method_and_task(mixed: dict[str, Any]) -> None:
    rows, store = mixed["rows"], mixed["store"]
    assert len(rows) == len(MIXED_NAMES) * 2 and store.generations_done() == [0]
    assert list(rows["method"][:len(MIXED_NAMES)]) == MIXED_NAMES
    assert list(rows["candidate"][:len(MIXED_NAMES)]) == list(range(len(MIXED_NAMES)))
    kinds = dict(zip(rows["method"], rows["method_kind"]))
    assert kinds["ce"] == kinds["gce-tuned"] == "hand-designed"
    assert kinds["sce-plugin"] == kinds["evolved-run"] == kinds["broken-plugin"] == "evolved"
    assert [e["split"] for e in rows["extra"]] == ["seen"] * len(MIXED_NAMES) + ["held-out"] * len(MIXED_NAMES)
    assert set(rows["generation"]) == {0} and set(rows["schema_version"]) == {SCHEMA_VERSION}
    per_task = rows.groupby("task_key")  # failed rows name the task's realised noise like the trained ones
    assert (per_task["noise_convention"].nunique() == 1).all() and (per_task["noise_rate_realised"].nunique() == 1).all()
    assert rows["noise_rate_realised"].notna().all()
    generation, state = store.load_state()
    assert generation == 0 and state["kind"] == "compare" and len(state["methods"]) == len(MIXED_NAMES)
    assert any("2/2 jobs" in line for line in mixed["lines"])  # 2 tasks × one population job


def test_unresolvable_methods_fail_with_their_reason_and_the_rest_runs(mixed: dict[str, Any]) -> None:
    broken, missing = _method_rows(mixed, "broken-plugin"), _method_rows(mixed, "missing-run")
    assert set(broken["status"]) == set(missing["status"]) == {"failed"}
    assert all("unresolved plugin:" in e and "is not valid JSON" in e for e in broken["error"])
    assert all("unresolved search:" in e and "does not exist" in e for e in missing["error"])
    for name in ("ce", "gce-0.1", "gce-tuned", "sce-plugin", "evolved-run"):
        ok = _method_rows(mixed, name)
        assert set(ok["status"]) == {"ok"} and ok["test_acc_last"].between(0, 1).all(), name
    assert set(mixed["summary"].unresolved) == {"broken-plugin", "missing-run"}


def test_a_diverging_loss_is_diverged_and_does_not_touch_its_job_mates(mixed: dict[str, Any]) -> None:
    nan = _method_rows(mixed, "nan-loss")
    assert set(nan["status"]) == {"diverged"} and all(e.strip() for e in nan["error"])
    assert mixed["summary"].statuses == {"diverged": 2, "failed": 4, "ok": 12}
    table = mixed["summary"].table
    nan_line = next(line for line in table.splitlines() if line.startswith("nan-loss"))
    assert nan_line.count("diverged:") == 2
    broken_line = next(line for line in table.splitlines() if line.startswith("broken-plugin"))
    assert broken_line.count("failed: unresolved") == 2


def test_evolved_methods_train_the_plugin_and_the_runs_best_candidate(mixed: dict[str, Any]) -> None:
    plugin, run = _method_rows(mixed, "sce-plugin"), _method_rows(mixed, "evolved-run")
    assert set(plugin["family"]) == {"sce"} and json.loads(plugin["params"].iloc[0])["alpha"] == 0.5
    assert set(run["family"]) == {"gce"} and json.loads(run["params"].iloc[0]) == {"q": 0.3}
    assert run["extra"].iloc[0]["source"]["fitness"] == 0.42


def test_tuned_baseline_reports_the_grid_point_best_on_clean_validation(mixed: dict[str, Any]) -> None:
    tuned = _method_rows(mixed, "gce-tuned")
    for (_, row) in tuned.iterrows():
        info = row["extra"]["tuned"]
        assert info["points"] == [{"q": 0.1}, {"q": 0.9}] and info["selected_on"] == "val_acc_last"
        best = max(range(2), key=lambda i: (info["val"][i], -i))
        assert info["chosen"] == best and json.loads(row["params"]) == info["points"][best]
        assert row["val_acc_last"] == max(info["val"])
        # the same loss listed as its own method trains the same network in the same population job
        twin = _method_rows(mixed, f"gce-{info['points'][best]['q']:g}")
        twin = twin[twin["task_key"] == row["task_key"]].iloc[0]
        assert abs(twin["val_acc_last"] - row["val_acc_last"]) < 0.01
        assert abs(twin["test_acc_last"] - row["test_acc_last"]) < 0.01


def test_resolve_method_never_raises_for_a_bad_plugin(tmp_path: Path) -> None:
    (tmp_path / "loss.json").write_text(json.dumps({"family": "gce", "params": {"q": 7}}))
    config = parse_compare_config(with_setting("methods.0", {"name": "p", "kind": "plugin",
                                                             "path": str(tmp_path / "loss.json")}))
    resolved = resolve_method(0, config.methods[0])
    assert resolved.specs == () and resolved.error.startswith("unresolved plugin:") and "'q'" in resolved.error


# --- the same seeded compare in a fresh process ----------------------------------------------------
_FRESH = """
import json, sys
from evoloss.results.store import MemoryStore
from evoloss.search.compare import run_compare
from evoloss.search.compare_config import load_compare_config
from evoloss.search.local_pool import InProcessPool
store = MemoryStore()
summary = run_compare(load_compare_config(sys.argv[1]), InProcessPool(), store, run_id="r")
df = store.read()
print(json.dumps({"table": summary.table,
                  "cells": df[["method", "task_key", "status", "val_acc_last", "test_acc_last"]].values.tolist()}))
"""


@pytest.mark.slow
def test_a_seeded_compare_reproduces_the_same_table_in_a_fresh_process(tmp_path: Path) -> None:
    config_file = tmp_path / "compare.toml"
    config_file.write_text(resolved_compare_toml(parse_compare_config(BASE)))
    store = MemoryStore()
    summary = run_compare(load_compare_config(config_file), InProcessPool(), store, run_id="r")
    df = store.read()
    here = {"table": summary.table,
            "cells": df[["method", "task_key", "status", "val_acc_last", "test_acc_last"]].values.tolist()}
    out = subprocess.run([sys.executable, "-c", _FRESH, str(config_file)], cwd=REPO_ROOT, capture_output=True,
                         text=True, check=True, timeout=600)
    fresh = json.loads(out.stdout.strip().splitlines()[-1])
    assert fresh == json.loads(json.dumps(here)) and set(df["status"]) == {"ok"}
