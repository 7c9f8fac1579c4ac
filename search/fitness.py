"""Fitness rules: how a candidate's per-task accuracies become one number CMA-ES ranks (gao-arl Eq. 2).

gao-arl Eq. 2 scores a candidate loss by the mean clean-validation accuracy over its task grid. Mixed
grids (several datasets × architectures × noise types) make that mean a poor signal: a task where
every loss scores 90% and one where every loss scores 20% are weighted by their scale, not by what a
loss changes there. A rule here has two steps, recorded in the ``fitness_rule`` column as
``SCORE/AGGREGATE`` (e.g. ``rank/q0.25``):

1. a **score per task** (``score``):

   - ``accuracy``: the task's metric as it is (gao-arl's Eq. 2 when aggregated by the mean);
   - ``relative-ce``: the metric over CE's metric on the same task, ``acc / max(acc_CE, REF_FLOOR)``
     (> 1: better than CE there). CE's accuracy per task is the *reference*, trained once per task
     (same seed, split, noise draw and budget) and kept in the search state (`search.coordinator`);
   - ``rank``: the candidate's rank among the generation's candidates on that task, normalised to
     [0, 1] (1 = best, ties share their average rank, one candidate alone scores 1);

2. an **aggregate over tasks** (``aggregate``): the ``mean``, or the lower ``quantile`` q (numpy's
   linear interpolation; q = 0 is the worst task) for worst-case transfer.

Which rows count is one rule for every score (`row_score`): ``ok`` and ``diverged`` rows count
(a diverged run without a metric scores 0.0, the accuracy of nothing: the loss broke training),
``failed`` and ``timeout`` rows are left out (infrastructure), and a candidate with no counted row
has no fitness (NaN; `search.strategy` ranks it last).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np
from scipy.stats import rankdata

SCORES = ("accuracy", "relative-ce", "rank")
AGGREGATES = ("mean", "quantile")
METRIC_COLUMNS = {"last": "val_acc_last", "best": "val_acc_best", "noisy": "noisy_val_acc_best"}
REF_FLOOR = 0.05  # a CE reference below 5% accuracy is read as 5%: no division by (near) zero
COUNTED = ("ok", "diverged")
LEFT_OUT = ("failed", "timeout")


def metric_column(metric_rule: str) -> str:
    """The evaluation column a fitness reads for ``metric_rule`` ("last" | "best" | "noisy": gao-arl Table 3,
    the best accuracy on a validation split that keeps its noisy labels — no clean label read)."""
    if metric_rule not in METRIC_COLUMNS:
        raise ValueError(f"metric_rule={metric_rule!r} is not one of {tuple(METRIC_COLUMNS)}")
    return METRIC_COLUMNS[metric_rule]


@dataclass(frozen=True, kw_only=True)
class FitnessRule:
    """A score per task and an aggregate over tasks (module docstring); ``quantile`` only for "quantile"."""

    score: str = "accuracy"
    aggregate: str = "mean"
    quantile: float = 0.25
    metric_rule: str = "last"

    def __post_init__(self) -> None:
        if self.score not in SCORES:
            raise ValueError(f"FitnessRule.score={self.score!r} is not one of {SCORES}")
        if self.aggregate not in AGGREGATES:
            raise ValueError(f"FitnessRule.aggregate={self.aggregate!r} is not one of {AGGREGATES}")
        q = self.quantile
        if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0.0 <= q <= 1.0:
            raise ValueError(f"FitnessRule.quantile={q!r} must be a number in [0, 1], e.g. 0.25")
        metric_column(self.metric_rule)

    @property
    def name(self) -> str:
        """What the ``fitness_rule`` column records: ``accuracy/mean``, ``rank/q0.25``, ..."""
        agg = "mean" if self.aggregate == "mean" else f"q{self.quantile:g}"
        return f"{self.score}/{agg}"

    @property
    def needs_reference(self) -> bool:
        """True when the rule divides by CE's accuracy on each task."""
        return self.score == "relative-ce"


def row_score(row: Mapping[str, Any], column: str, index: int) -> float | None:
    """A row's metric as it counts (module docstring), or None when the row is left out."""
    status = row["status"]
    if status in LEFT_OUT:
        return None
    if status not in COUNTED:
        raise ValueError(f"rows[{index}]['status']={status!r} is not one of {COUNTED + LEFT_OUT}")
    value = row[column]
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"rows[{index}][{column!r}]={value!r} must be a number (NaN allowed)")
    value = float(value)
    if math.isfinite(value):
        return value
    return 0.0 if status == "diverged" else None


def _as_records(rows: Iterable[Mapping[str, Any]] | Any) -> list[Mapping[str, Any]]:
    if hasattr(rows, "to_dict") and not isinstance(rows, Mapping):
        return rows.to_dict("records")
    return list(rows)


def task_metrics(rows: Iterable[Mapping[str, Any]] | Any, metric_rule: str) -> dict[int, dict[str, float]]:
    """``{candidate: {task_key: metric}}`` of the counted rows (a candidate with none maps to ``{}``)."""
    column = metric_column(metric_rule)
    out: dict[int, dict[str, float]] = {}
    for i, row in enumerate(_as_records(rows)):
        missing = [k for k in ("candidate", "status", column) if k not in row]
        if missing:
            raise ValueError(f"rows[{i}] lacks {missing}; pass evaluation rows (results.schema)")
        score = row_score(row, column, i)
        bucket = out.setdefault(int(row["candidate"]), {})
        if score is not None:
            bucket[str(row.get("task_key", ""))] = score
    return out


def _relative(metrics: dict[int, dict[str, float]], references: Mapping[str, float]) -> dict[int, dict[str, float]]:
    """acc / max(acc_CE, REF_FLOOR) per task; a task without a reference (its CE run failed) is left out."""
    return {c: {t: v / max(float(references[t]), REF_FLOOR) for t, v in per_task.items() if t in references}
            for c, per_task in metrics.items()}


def _ranks(metrics: dict[int, dict[str, float]]) -> dict[int, dict[str, float]]:
    """Per task: (rank − 1) / (n − 1) among the candidates scored there, 1 = best, ties averaged."""
    out: dict[int, dict[str, float]] = {c: {} for c in metrics}
    tasks = sorted({t for per_task in metrics.values() for t in per_task})
    for t in tasks:
        cands = [c for c in sorted(metrics) if t in metrics[c]]
        ranks = rankdata([metrics[c][t] for c in cands], method="average")  # 1 = lowest
        n = len(cands)
        for c, r in zip(cands, ranks):
            out[c][t] = 1.0 if n == 1 else float((r - 1.0) / (n - 1.0))
    return out


def aggregate(values: Iterable[float], rule: FitnessRule) -> float:
    """The mean or the lower ``rule.quantile`` of a candidate's task scores (NaN when there are none)."""
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0:
        return math.nan
    return float(v.mean()) if rule.aggregate == "mean" else float(np.quantile(v, rule.quantile))


def fitness(rows: Iterable[Mapping[str, Any]] | Any, rule: FitnessRule, candidates: Iterable[int] | None = None,
            references: Mapping[str, float] | None = None) -> dict[int, float]:
    """Fitness per candidate under ``rule``.

    Args:
        rows: one generation's evaluation rows (dicts or a DataFrame) with ``candidate``, ``status``,
            ``task_key`` and the metric column.
        rule: the score and aggregate.
        candidates: every candidate of the generation; those without rows get NaN too.
        references: ``{task_key: CE's metric}`` (the "relative-ce" score needs one per scored task).

    Returns:
        ``{candidate: fitness}`` sorted by candidate, NaN where nothing counted.
    """
    metrics = task_metrics(rows, rule.metric_rule)
    for c in candidates or ():
        metrics.setdefault(int(c), {})
    if rule.score == "relative-ce":
        metrics = _relative(metrics, references or {})
    elif rule.score == "rank":
        metrics = _ranks(metrics)
    return {c: aggregate(metrics[c].values(), rule) for c in sorted(metrics)}


NEAR_CHANCE = 1.5  # a task whose best candidate scores below 1.5 / classes gives the fitness no signal


def near_chance_tasks(rows: Iterable[Mapping[str, Any]] | Any, metric_rule: str,
                      classes: Mapping[str, int]) -> dict[str, tuple[float, int]]:
    """``{task_key: (best metric, classes)}`` of the tasks on which every counted candidate stayed below
    ``NEAR_CHANCE / classes`` (``classes`` maps a row's ``dataset`` to its class count; datasets not in
    it are not judged). On such a task — a network that does not learn within the budget — every loss
    scores alike, so the task adds noise to the fitness, not signal (with a lower-quantile aggregate it
    can be the quantile itself)."""
    column = metric_column(metric_rule)
    best: dict[str, tuple[float, int]] = {}
    for i, row in enumerate(_as_records(rows)):
        c = classes.get(str(row.get("dataset", "")))
        score = row_score(row, column, i) if c and row.get("status") == "ok" else None
        if score is None:
            continue
        key = str(row.get("task_key", ""))
        best[key] = (max(score, best.get(key, (-math.inf, 0))[0]), int(c))
    return {k: v for k, v in best.items() if v[0] < NEAR_CHANCE / v[1]}


def references_from_rows(rows: Iterable[Mapping[str, Any]] | Any, metric_rule: str) -> dict[str, float]:
    """``{task_key: metric}`` of CE reference rows, one per task; a ``failed``/``timeout`` CE run gives
    no reference (the task is referenced again next time it is drawn)."""
    column = metric_column(metric_rule)
    out: dict[str, float] = {}
    for i, row in enumerate(_as_records(rows)):
        score = row_score(row, column, i)
        if score is not None:
            out[str(row["task_key"])] = score
    return out
