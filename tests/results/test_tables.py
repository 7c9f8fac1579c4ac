"""Accuracy tables, ranks and costs against values worked out by hand (and gao-arl Tables 1–2)."""
from __future__ import annotations

import math
import re
import statistics

import pandas as pd
import pytest

from evoloss.results.tables import (
    accuracy_markdown,
    average_rank,
    cell_stats,
    cost_per_method,
    method_order,
    rank_methods,
    resolve_metric,
    short_reason,
    summary_text,
    task_label,
    task_splits,
    with_tasks,
)
from tests.results.report_rows import METHODS, TASK_LABELS, TEST_ACC, base_row, compare_rows

INF = math.inf

# gao-arl Table 1 (80% symmetric) and Table 2 (40% asymmetric): means of the 8 columns, and Avg.Rank.
PAPER_TABLE_1 = {
    "CE": ([18.38, 4.25, 20.55, 51.42, 18.44, 8.86, 21.92, 57.05], 6.87),
    "GCE": ([16.56, 1.04, 25.10, 63.45, 31.69, 11.98, 42.62, 79.52], 5.63),
    "SCE": ([28.61, 2.31, 36.64, 63.68, 45.34, 8.16, 59.93, 58.35], 4.63),
    "FW": ([16.97, 1.41, 22.57, 53.66, 10.15, 1.16, 13.18, 42.80], 9.38),
    "Bootstrap": ([17.58, 4.18, 20.40, 64.58, 12.10, 8.67, 22.36, 72.17], 6.38),
    "MAE": ([14.20, 1.01, 63.40, 30.94, 22.95, 0.82, 68.20, 37.17], 8.13),
    "Label-smooth": ([17.74, 4.47, 21.19, 54.26, 17.67, 7.66, 20.99, 59.94], 6.86),
    "Huber": ([10.28, 1.30, 19.66, 23.92, 13.56, 1.14, 17.59, 24.61], 11.00),
    "NCE+MAE": ([40.47, 2.06, 48.40, 70.75, 33.57, 5.72, 48.65, 71.25], 4.50),
    "NFL+MAE": ([41.91, 2.54, 45.06, 69.36, 37.66, 6.03, 54.43, 72.25], 3.50),
    "Bi-Temper": ([10.44, 3.23, 15.00, 17.67, 40.41, 9.35, 30.06, 26.91], 7.75),
    "ARL-AR": ([41.36, 5.63, 70.16, 78.71, 29.50, 14.94, 71.96, 68.80], 1.63),
    "ARL-DR": ([31.12, 5.04, 67.29, 77.34, 35.23, 13.36, 71.97, 70.17], 1.75),
}
PAPER_TABLE_2 = {
    "CE": ([56.43, 30.20, 50.34, 77.74, 58.69, 44.14, 58.68, 73.84], 6.25),
    "GCE": ([56.42, 22.39, 53.57, 78.72, 57.90, 40.76, 58.51, 80.77], 6.25),
    "SCE": ([78.23, 25.33, 64.47, 85.50, 63.22, 40.90, 59.63, 81.57], 3.63),
    "FW": ([54.42, 5.21, 45.18, 76.41, 48.40, 3.83, 49.46, 46.04], 10.13),
    "Bootstrap": ([57.69, 31.07, 53.23, 77.81, 57.69, 45.78, 54.60, 75.67], 5.75),
    "MAE": ([49.06, 0.96, 49.02, 62.38, 55.67, 1.02, 56.31, 70.05], 10.50),
    "Label-smooth": ([57.76, 20.64, 51.12, 77.49, 59.69, 39.92, 57.53, 78.97], 6.88),
    "Huber": ([38.28, 5.18, 75.57, 73.44, 56.11, 4.14, 77.50, 79.37], 7.38),
    "NCE+MAE": ([66.22, 2.06, 69.83, 87.05, 60.51, 45.00, 63.00, 81.81], 4.00),
    "NFL+MAE": ([65.55, 2.59, 69.51, 89.24, 62.51, 44.84, 58.55, 82.96], 4.25),
    "Bi-Temper": ([10.12, 34.22, 18.02, 17.89, 17.74, 45.36, 19.44, 27.85], 9.13),
    "ARL-AR": ([74.30, 22.50, 87.23, 90.67, 86.70, 44.47, 89.24, 91.17], 1.25),
    "ARL-DR": ([79.09, 18.30, 81.18, 89.78, 68.88, 31.47, 88.22, 89.59], 2.63),
}


@pytest.fixture()
def rows() -> pd.DataFrame:
    return pd.DataFrame(compare_rows())


def _means(table: dict[str, list[float]]) -> pd.DataFrame:
    return pd.DataFrame.from_dict(table, orient="index")


# --- ranks ------------------------------------------------------------------------------------
@pytest.mark.parametrize("paper", [PAPER_TABLE_1, PAPER_TABLE_2], ids=["table1-sym80", "table2-asym40"])
def test_average_rank_reproduces_gao_arl_tables_offset_by_one(paper: dict) -> None:
    # The paper's Avg.Rank column equals our 1-based average rank minus 1 (its ranks start at 0),
    # up to its rounding to 2 decimals: CE 7.875 - 1 = 6.875 is printed 6.87.
    ranks = average_rank(_means({name: values for name, (values, _) in paper.items()}))
    for name, (_, printed) in paper.items():
        assert ranks[name] - 1 == pytest.approx(printed, abs=0.0151), name


def test_ties_share_the_average_of_their_ranks() -> None:
    ranks = rank_methods(_means({"a": [50.0, 70.0], "b": [50.0, 60.0], "c": [40.0, 70.0]}))
    assert ranks.loc["a"].tolist() == [1.5, 1.5]
    assert ranks.loc["b"].tolist() == [1.5, 3.0]
    assert ranks.loc["c"].tolist() == [3.0, 1.5]
    assert average_rank(_means({"a": [50.0, 70.0], "b": [50.0, 60.0], "c": [40.0, 70.0]})).to_dict() == {
        "a": 1.5, "b": 2.25, "c": 2.25}


def test_means_tie_at_the_displayed_precision() -> None:
    ranks = rank_methods(_means({"a": [52.000000001], "b": [51.999999999], "c": [52.01]}))
    assert ranks[0].to_dict() == {"a": 2.5, "b": 2.5, "c": 1.0}
    # 0.015 prints as 0.01 (its binary value is below 0.015), so it ties with 0.01, not with 0.02
    printed = rank_methods(_means({"a": [0.015], "b": [0.02], "c": [0.01]}))
    assert [f"{v:.2f}" for v in (0.015, 0.02, 0.01)] == ["0.01", "0.02", "0.01"]
    assert printed[0].to_dict() == {"a": 2.5, "b": 1.0, "c": 2.5}


def test_failed_cells_rank_last_and_missing_cells_are_left_out() -> None:
    failed = rank_methods(_means({"a": [-INF], "b": [-INF], "c": [10.0]}))
    assert failed[0].to_dict() == {"a": 2.5, "b": 2.5, "c": 1.0}
    avg = average_rank(_means({"a": [math.nan, 50.0], "b": [60.0, 40.0]}))
    assert avg.to_dict() == {"a": 1.0, "b": 1.5}


# --- cells ------------------------------------------------------------------------------------
def test_task_label_follows_task_key_without_the_seed() -> None:
    assert task_label("digits", "mlp2", "symmetric", 0.8, "exact") == "digits/mlp2/symmetric0.8-exact"
    assert task_label("digits", "mlp2", "asymmetric", 0.4, "") == "digits/mlp2/asymmetric0.4"
    assert task_label("digits", "cnn4", "none", 0.0, "") == "digits/cnn4/clean"


def test_cell_stats_mean_and_sample_std_in_percent(rows: pd.DataFrame) -> None:
    stats = cell_stats(rows, "test_acc_last").set_index(["method", "task"])
    for (method, t), outcomes in TEST_ACC.items():
        cell = stats.loc[(method, TASK_LABELS[t])]
        ok = [100 * v for v in outcomes if not isinstance(v, str)]
        assert (cell["runs"], cell["ok"]) == (3, len(ok))
        if len(ok) >= 2:
            assert cell["mean"] == pytest.approx(statistics.fmean(ok), abs=1e-9)
            assert cell["std"] == pytest.approx(statistics.stdev(ok), abs=1e-9)
        else:
            assert math.isnan(cell["mean"]) and cell["reason"].startswith("RuntimeError: meta set is empty")


def test_default_metric_is_test_accuracy_at_the_rows_rule(rows: pd.DataFrame) -> None:
    assert resolve_metric(rows) == "test_acc_last"
    assert resolve_metric(rows.assign(metric_rule="best")) == "test_acc_best"
    assert resolve_metric(rows, "val_acc_best") == "val_acc_best"
    with pytest.raises(ValueError, match=r"metric='accuracy' is not one of .*test_acc_last"):
        resolve_metric(rows, "accuracy")
    mixed = rows.assign(metric_rule=["best"] + ["last"] * (len(rows) - 1))
    with pytest.raises(ValueError, match=r"metric_rule values \['best', 'last'\].*pass metric="):
        resolve_metric(mixed)


def test_markdown_cells_bold_partial_and_failed(rows: pd.DataFrame) -> None:
    stats = cell_stats(rows, "test_acc_last")
    text = accuracy_markdown(stats, list(TASK_LABELS), method_order(rows))
    split = [[c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]] for line in text.splitlines()[2:]]
    lines = {cells[0]: cells[1:] for cells in split}
    assert list(lines) == ["ce", "gce", "arl", "mwnet"]  # hand-designed, evolved, meta-learned
    assert lines["ce"] == ["hand-designed", "82.00 ± 2.00", "32.00 ± 2.00", "52.00 ± 2.00", "3.50"]
    assert lines["gce"] == ["hand-designed", "87.00 ± 1.41 (2/3 ok)", "42.00 ± 2.00", "52.00 ± 2.65", "2.50"]
    assert lines["arl"] == ["evolved", "**91.00 ± 1.00**", "**62.00 ± 2.00**", "**60.00 ± 2.00**", "**1.00**"]
    assert lines["mwnet"] == ["meta-learned", "85.00 ± 0.00", "46.00 ± 1.00",
                              "failed: RuntimeError: meta set is empty \\| check…", "3.00"]
    assert text.splitlines()[0].startswith("| method | kind | digits/mlp2/symmetric0.4-exact |")


def test_every_best_of_a_tie_is_bold_and_a_single_seed_has_no_std() -> None:
    frame = pd.DataFrame([
        base_row(method="a", method_kind="hand-designed", test_acc_last=0.5, seed=0),
        base_row(method="b", method_kind="hand-designed", test_acc_last=0.5, seed=0),
        base_row(method="c", method_kind="evolved", test_acc_last=0.4, seed=0),
        base_row(method="c", method_kind="evolved", status="timeout", error="", seed=1),
    ])
    text = accuracy_markdown(cell_stats(frame, "test_acc_last"), ["digits/mlp2/symmetric0.8-exact"], ["a", "b", "c"])
    cells = [line.split("|")[3].strip() for line in text.splitlines()[2:]]
    assert cells == ["**50.00**", "**50.00**", "40.00 (1/2 ok)"]


def test_short_reason_first_line_shortened_or_the_status() -> None:
    assert short_reason("ValueError: bad\nTraceback ...", "failed") == "ValueError: bad"
    assert short_reason("", "timeout") == "timeout"
    long = "x" * 100
    assert short_reason(long, "failed") == "x" * 39 + "…"


def test_splits_come_from_extra_and_conflicts_are_errors(rows: pd.DataFrame) -> None:
    assert task_splits(with_tasks(rows)) == dict(zip(TASK_LABELS, ("seen", "seen", "held-out")))
    assert set(task_splits(with_tasks(rows.assign(extra="{}"))).values()) == {""}
    bad = rows.assign(extra='{"split": "train"}')
    with pytest.raises(ValueError, match=r"extra\['split'\]='train'.*'seen' or 'held-out'"):
        task_splits(with_tasks(bad))
    clash = rows.copy()
    clash.loc[0, "extra"] = '{"split": "held-out"}'
    with pytest.raises(ValueError, match=r"task 'digits/mlp2/symmetric0.4-exact' is marked both"):
        task_splits(with_tasks(clash))


# --- cost and summary ---------------------------------------------------------------------------
def test_cost_per_method_relative_to_ce(rows: pd.DataFrame) -> None:
    cost = cost_per_method(rows).set_index("method")
    expected = {  # runs, ok, mean wall of ok runs, × CE, total wall of every run
        "ce": (9, 9, 2.0, 1.0, 18.0),
        "gce": (9, 8, 2.2, 1.1, 8 * 2.2 + 1.0),
        "arl": (9, 9, 2.4, 1.2, 21.6),
        "mwnet": (9, 6, 7.0, 3.5, 6 * 7.0 + 3 * 0.5),
    }
    assert list(cost.index) == list(expected)
    for method, (runs, ok, mean, rel, total) in expected.items():
        got = cost.loc[method]
        assert (got["runs"], got["ok"]) == (runs, ok)
        assert got["mean_wall_s"] == pytest.approx(mean) and got["vs_ce"] == pytest.approx(rel)
        assert got["total_wall_s"] == pytest.approx(total)
    without_ce = cost_per_method(rows[rows["method"] != "ce"])
    assert without_ce["vs_ce"].isna().all()


def test_summary_text_one_line_per_method(rows: pd.DataFrame) -> None:
    text = summary_text(rows)
    lines = text.splitlines()
    assert lines[0].split() == ["method", "kind", "avg", "rank", "mean", "acc", "%", "ok", "runs", "s/run", "×", "CE"]
    body = {line.split()[0]: line.split()[1:] for line in lines[1:-1]}
    assert list(body) == list(METHODS)
    # mean acc = mean over tasks of the cell means (failed cells left out)
    assert body["arl"] == ["evolved", "1.00", f"{statistics.fmean([91, 62, 60]):.2f}", "9/9", "2.40", "1.20"]
    assert body["mwnet"] == ["meta-learned", "3.00", f"{statistics.fmean([85, 46]):.2f}", "6/9", "7.00", "3.50"]
    assert lines[-1] == "(test_acc_last in %, mean over seeds; avg rank over 3 tasks; × CE = mean s/run vs ce)"
