"""Fitness rules (search/fitness.py): each score and aggregate against its formula, written here."""
from __future__ import annotations

import math

import numpy as np
import pytest

from evoloss.search.fitness import REF_FLOOR, FitnessRule, fitness, references_from_rows


def row(c, task, last, status="ok"):
    return {"candidate": c, "task_key": task, "status": status, "val_acc_last": last, "val_acc_best": last}


# three candidates on two tasks of very different scale: "easy" (~0.9) and "hard" (~0.2)
ROWS = [row(0, "easy", 0.90), row(1, "easy", 0.95), row(2, "easy", 0.80),
        row(0, "hard", 0.30), row(1, "hard", 0.10), row(2, "hard", 0.20)]


def test_accuracy_mean_is_gao_arl_eq2():
    got = fitness(ROWS, FitnessRule())
    assert got == pytest.approx({0: (0.90 + 0.30) / 2, 1: (0.95 + 0.10) / 2, 2: (0.80 + 0.20) / 2})


def test_relative_ce_divides_by_the_reference_with_a_floor():
    refs = {"easy": 0.85, "hard": 0.01}  # CE near zero on "hard": read as REF_FLOOR
    got = fitness(ROWS, FitnessRule(score="relative-ce"), references=refs)
    want = {c: (e / 0.85 + h / REF_FLOOR) / 2 for c, (e, h) in {0: (0.9, 0.3), 1: (0.95, 0.1), 2: (0.8, 0.2)}.items()}
    assert got == pytest.approx(want)


def test_rank_normalises_each_task_and_averages_ties():
    got = fitness(ROWS, FitnessRule(score="rank"))
    # easy: 2 > 0 > 1 best-to-worst is 1, 0, 2 -> ranks 1.0, 0.5, 0.0; hard: 0, 2, 1 -> 1.0, 0.5, 0.0
    assert got == pytest.approx({0: (0.5 + 1.0) / 2, 1: (1.0 + 0.0) / 2, 2: (0.0 + 0.5) / 2})
    tied = fitness([row(0, "t", 0.5), row(1, "t", 0.5), row(2, "t", 0.1)], FitnessRule(score="rank"))
    assert tied == pytest.approx({0: 0.75, 1: 0.75, 2: 0.0})
    assert fitness([row(4, "t", 0.3)], FitnessRule(score="rank")) == {4: 1.0}


def test_lower_quantile_uses_linear_interpolation():
    rows = [row(0, f"t{i}", v) for i, v in enumerate([0.1, 0.4, 0.5, 0.9])]
    got = fitness(rows, FitnessRule(aggregate="quantile", quantile=0.25))[0]
    # sorted values x0..x3, position q·(n−1) = 0.75 -> x0 + 0.75·(x1 − x0)
    assert got == pytest.approx(0.1 + 0.75 * (0.4 - 0.1))
    assert fitness(rows, FitnessRule(aggregate="quantile", quantile=0.0))[0] == pytest.approx(0.1)


def test_rules_can_disagree_with_the_plain_mean():
    """One big win outweighs two small losses in the mean, not in the ranks; a bad task sinks the worst case."""
    rows = [row(0, "a", 0.2), row(1, "a", 0.9), row(0, "b", 0.5), row(1, "b", 0.45), row(0, "c", 0.5),
            row(1, "c", 0.45)]
    mean, rank = fitness(rows, FitnessRule()), fitness(rows, FitnessRule(score="rank"))
    assert mean[1] > mean[0] and rank[0] > rank[1]
    rows = [row(0, "a", 0.9), row(0, "b", 0.1), row(1, "a", 0.45), row(1, "b", 0.45)]
    mean, worst = fitness(rows, FitnessRule()), fitness(rows, FitnessRule(aggregate="quantile", quantile=0.0))
    assert mean[0] > mean[1] and worst[1] > worst[0]


def test_failed_rows_are_left_out_diverged_count_and_nothing_counted_is_nan():
    rows = [row(0, "a", 0.6), row(0, "b", math.nan, "failed"), row(1, "a", math.nan, "diverged"),
            row(1, "b", 0.4), row(2, "a", math.nan, "timeout")]
    got = fitness(rows, FitnessRule(), candidates=range(4))
    assert got[0] == pytest.approx(0.6) and got[1] == pytest.approx(0.2)
    assert math.isnan(got[2]) and math.isnan(got[3])


def test_relative_ce_leaves_out_a_task_without_reference():
    got = fitness([row(0, "a", 0.6), row(0, "b", 0.2)], FitnessRule(score="relative-ce"), references={"a": 0.3})
    assert got[0] == pytest.approx(2.0)


def test_references_skip_failed_ce_runs():
    refs = references_from_rows([row(0, "a", 0.5), row(0, "b", math.nan, "failed"),
                                 row(0, "c", math.nan, "diverged")], "last")
    assert refs == {"a": 0.5, "c": 0.0}


def test_rule_names_and_bad_values():
    assert FitnessRule().name == "accuracy/mean"
    assert FitnessRule(score="rank", aggregate="quantile", quantile=0.25).name == "rank/q0.25"
    for bad in ({"score": "median"}, {"aggregate": "max"}, {"quantile": 1.5}, {"metric_rule": "first"}):
        with pytest.raises(ValueError):
            FitnessRule(**bad)


def test_dataframe_rows_are_accepted():
    import pandas as pd

    got = fitness(pd.DataFrame(ROWS), FitnessRule())
    assert got == pytest.approx(fitness(ROWS, FitnessRule()))
    assert np.isfinite(list(got.values())).all()


def test_near_chance_tasks_from_the_best_ok_row_per_task():
    """Below 1.5 / classes on every ok row of a task: named with its best score; a failed or diverged
    row is not a score here, and a dataset without a class count is not judged."""
    from evoloss.search.fitness import NEAR_CHANCE, near_chance_tasks

    rows = [dict(row(0, "a", 0.09), dataset="d10"), dict(row(1, "a", 0.14), dataset="d10"),
            dict(row(2, "a", 0.9, status="failed"), dataset="d10"),
            dict(row(0, "b", 0.12), dataset="d10"), dict(row(1, "b", 0.151), dataset="d10"),
            dict(row(0, "c", 0.3), dataset="d4"), dict(row(1, "c", 0.37), dataset="d4"),
            dict(row(0, "e", 0.01, status="diverged"), dataset="d10"),
            dict(row(0, "f", 0.05), dataset="unknown")]
    assert NEAR_CHANCE == 1.5
    assert near_chance_tasks(rows, "last", {"d10": 10, "d4": 4}) == {"a": (0.14, 10), "c": (0.37, 4)}
