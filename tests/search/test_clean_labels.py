"""``clean_labels_used`` on compare rows, and ``compare.clean_budget`` holding it equal across methods."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from evoloss.results.store import MemoryStore
from evoloss.results.tables import cost_markdown
from evoloss.search.clean_labels import (
    fitness_clean_labels,
    row_clean_labels,
    search_clean_labels,
    val_indices,
    val_rows,
)
from evoloss.search.compare import run_compare
from evoloss.search.compare_config import parse_compare_config
from evoloss.search.config import GridSection, SearchConfig, TrainSection
from evoloss.search.local_pool import InProcessPool
from evoloss.search.run_dir import create_run_dir
from evoloss.workers.materialize import materialize
from evoloss.workers.task import NoiseSpec, Splits, Task

SYM = {"type": "symmetric", "rate": 0.6, "convention": "exact"}
TASK = Task(dataset="digits", arch="mlp2", noise=NoiseSpec("symmetric", 0.6, "exact"),
            splits=Splits(val=40.0, max_train=100), seed=3)


def test_val_indices_are_the_rows_materialize_puts_in_the_validation_split():
    data = materialize(TASK)
    from evoloss.workers.datasets import load_dataset

    pool = load_dataset("digits")
    idx = val_indices(TASK)
    assert len(idx) == val_rows(TASK) == 40 == len(data.y_val)
    np.testing.assert_array_equal(pool.y_train.numpy()[idx], data.y_val.numpy())
    np.testing.assert_array_equal(pool.x_train[idx].numpy(), data.x_val.numpy())


def test_row_rules_fixed_tuned_search_and_meta():
    meta = {"clean_labels_used": 50}
    rules = dict(task=TASK, meta_is_val=False)
    assert row_clean_labels("loss", {}, metric_rule="last", **rules) == 0
    assert row_clean_labels("loss", {}, metric_rule="best", **rules) == 40  # the epoch is picked on clean val
    assert row_clean_labels("tuned", {}, metric_rule="last", **rules) == 40
    assert row_clean_labels("search", {}, metric_rule="last", search_labels=100, **rules) == 100
    assert row_clean_labels("trainer", meta, metric_rule="last", **rules) == 50
    assert row_clean_labels("trainer", meta, metric_rule="best", **rules) == 90
    assert row_clean_labels("trainer", {"clean_labels_used": 40}, task=TASK, metric_rule="best", meta_is_val=True) == 40
    assert row_clean_labels("trainer", {"clean_labels_used": 0}, metric_rule="last", **rules) == 0  # Dynamic Loss


def test_search_clean_labels_counts_distinct_validation_rows(tmp_path: Path):
    train = TrainSection(val=30.0, max_train=100)
    one_split = SearchConfig(grid=GridSection(archs=("mlp2", "mlp3"), seeds=(0,)), train=train)
    create_run_dir(tmp_path / "one", one_split)
    assert search_clean_labels(tmp_path / "one") == 30  # both architectures read the same split
    two = dataclasses.replace(one_split, grid=dataclasses.replace(one_split.grid, seeds=(0, 1)))
    create_run_dir(tmp_path / "two", two)
    union = set(val_indices(dataclasses.replace(TASK, splits=Splits(val=30.0, max_train=100), seed=0)).tolist())
    union |= set(val_indices(dataclasses.replace(TASK, splits=Splits(val=30.0, max_train=100), seed=1)).tolist())
    assert search_clean_labels(tmp_path / "two") == len(union) > 30


def _compare(extra: dict) -> dict[str, list[int]]:
    data = {
        "compare": {"meta_per_class": 3, **extra},
        "train": {"epochs": 1, "max_train": 100},
        "methods": [
            {"name": "ce", "kind": "loss", "family": "ce"},
            {"name": "gce-tuned", "kind": "tuned", "family": "gce", "grid": {"q": [0.3, 0.9]}},
            {"name": "mwnet", "kind": "trainer", "trainer": "mwnet", "options": {"max_steps": 2}},
        ],
        "tasks": [{"name": "seen", "datasets": ["digits"], "noise": [SYM], "seeds": [0]}],
    }
    store = MemoryStore()
    run_compare(parse_compare_config(data), InProcessPool(), store, run_id="clean")
    rows = store.read()
    assert set(rows["status"]) == {"ok"}, rows["error"].tolist()
    assert "clean labels" in cost_markdown(rows)
    return {m: rows.loc[rows["method"] == m, "clean_labels_used"].tolist() for m in ("ce", "gce-tuned", "mwnet")}


def test_compare_rows_record_clean_labels_and_the_budget_can_be_held_equal():
    default = _compare({})
    pool_val = val_rows(Task(dataset="digits", arch="mlp2", splits=Splits(val=0.2, meta_per_class=3, max_train=100)))
    assert default == {"ce": [0], "gce-tuned": [pool_val], "mwnet": [30]}  # 3 per class × 10 classes
    equal = _compare({"clean_budget": 25, "metric_rule": "best"})
    assert equal == {"ce": [25], "gce-tuned": [25], "mwnet": [25]}  # one set of 25: val = meta set


@pytest.mark.parametrize("bad", [-1, 1.5])
def test_clean_budget_must_be_a_whole_number(bad):
    from evoloss.search.config_fields import ConfigError

    with pytest.raises(ConfigError, match="clean_budget"):
        parse_compare_config({"compare": {"clean_budget": bad},
                              "methods": [{"name": "ce", "kind": "loss", "family": "ce"}],
                              "tasks": [{"name": "t", "datasets": ["digits"], "noise": [SYM]}]})



# --- gao-arl Table 3: early stopping on a noisy validation split (metric rule "noisy") -------------
def test_noisy_rule_reads_no_clean_label():
    rules = dict(task=TASK, meta_is_val=False)
    assert row_clean_labels("tuned", {}, metric_rule="noisy", **rules) == 0  # selected on noisy labels
    assert row_clean_labels("loss", {}, metric_rule="noisy", **rules) == 0
    assert row_clean_labels("trainer", {"clean_labels_used": 50}, metric_rule="noisy", **rules) == 50  # meta set only
    assert fitness_clean_labels(TASK, "noisy") == 0 and fitness_clean_labels(TASK, "last") == 40


def test_noisy_rule_needs_a_noisy_split_and_the_search_grid_carries_it(tmp_path: Path):
    from evoloss.search.config import load_config
    from evoloss.search.config_fields import ConfigError
    from evoloss.search.fitness import metric_column
    from evoloss.search.grid import grid_from_config

    with pytest.raises(ConfigError, match=r"grid\.metric_rule.*train\.noisy_val"):
        load_config(None, "quick", {"grid.metric_rule": "noisy"})
    config = load_config(None, "quick", {"grid.metric_rule": "noisy", "train.noisy_val": 0.1})
    task = grid_from_config(config).tasks()[0]
    assert task.splits.noisy_val == 0.1 and metric_column("noisy") == "noisy_val_acc_best"
    create_run_dir(tmp_path / "noisy", config)
    assert search_clean_labels(tmp_path / "noisy") == 0


def test_noisy_rule_compare_reports_test_acc_at_the_best_noisy_epoch():
    data = {
        "compare": {"metric_rule": "noisy"},
        "train": {"epochs": 3, "max_train": 100, "noisy_val": 40},
        "methods": [{"name": "ce", "kind": "loss", "family": "ce"},
                    {"name": "gce-tuned", "kind": "tuned", "family": "gce", "grid": {"q": [0.3, 0.9]}}],
        "tasks": [{"name": "seen", "datasets": ["digits"], "noise": [SYM], "seeds": [0]}],
    }
    store = MemoryStore()
    run_compare(parse_compare_config(data), InProcessPool(), store, run_id="noisy")
    rows = store.read()
    assert set(rows["status"]) == {"ok"} and set(rows["metric_rule"]) == {"noisy"}, rows["error"].tolist()
    assert set(rows["clean_labels_used"]) == {0}
    for _, row in rows.iterrows():  # the reported column is the test accuracy at the best noisy-val epoch
        extra = json.loads(row["extra"])
        assert row["test_acc_noisy"] == extra["test_acc_at_noisy_val_best"]
    generations = store.read_generations()
    assert generations["best_fitness"].iloc[0] == max(rows.groupby("method")["test_acc_noisy"].mean())
    with pytest.raises(Exception, match="noisy_val"):
        parse_compare_config({**data, "train": {"epochs": 1}})
