"""Accuracy tables, average ranks and cost per method from compare-run rows (gao-arl Tables 1–2 style).

gao-arl-taylor-loss-search, Tables 1–3 report, per (architecture, dataset) column, the accuracy
(%) of each loss as "mean ± std" over runs, the best of each column in bold, and summarise by the
average rank of each loss over the columns. Our choices where the paper says nothing:

- A *cell* is one method × one task (dataset/arch/noise, every seed of it). Only rows with status
  ``ok`` and a finite metric enter its mean; the rest are counted ("2/3 ok"). A cell with no ok row
  shows ``failed: <reason>`` (the first line of the first error, by seed, shortened to 40 chars).
- std is the *sample* standard deviation (ddof = 1) over the ok seeds; one ok seed shows no std.
- Ranks are per task, by mean, 1 = best, ties get the average of their ranks. Means are compared at
  the precision shown (2 decimals, in %), so two cells that print the same tie. A failed cell ranks
  last (failed cells tie among themselves); a cell that was never run is left out, and a method's
  average rank is the mean over the tasks it has a rank in. The paper's printed Avg.Rank equals
  ours minus 1 (its ranks start at 0): tests/results/test_tables.py checks both of its tables.
- Cost: mean wall seconds of an ok training run, and that mean divided by the one of the CE method
  (the hand-designed method of family ``ce``; the one named "ce" if there are several).
"""
from __future__ import annotations

import json
import math
import statistics
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

KIND_ORDER = {"hand-designed": 0, "evolved": 1, "meta-learned": 2, "": 3}
SPLITS = ("seen", "held-out")
METRICS = ("test_acc_last", "test_acc_best", "test_acc_noisy", "val_acc_last", "val_acc_best")
RANK_DECIMALS = 2
REASON_WIDTH = 40
GROUP_REASON_WIDTH = 60
"""Width of the failure reason in a `group_summary_table` cell."""
NOT_RUN = "—"
_TASK_FIELDS = ("dataset", "arch", "noise_type", "noise_rate", "noise_convention")


def task_label(dataset: str, arch: str, noise_type: str, noise_rate: float, noise_convention: str) -> str:
    """The task's name in tables: ``Task.key()`` without the seed, e.g. ``digits/mlp2/symmetric0.8-exact``."""
    if noise_type == "none":
        return f"{dataset}/{arch}/clean"
    return f"{dataset}/{arch}/{noise_type}{noise_rate:g}" + (f"-{noise_convention}" if noise_convention else "")


def _require(df: pd.DataFrame, columns: Iterable[str]) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"rows lack column(s) {missing}; pass evaluation rows (results.schema.EVAL_SCHEMA)")


def with_tasks(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` with a ``task`` column (`task_label` of each row)."""
    _require(df, _TASK_FIELDS)
    out = df.copy()
    out["task"] = [task_label(*fields) for fields in zip(*(df[c] for c in _TASK_FIELDS))]
    return out


def task_order(df: pd.DataFrame) -> list[str]:
    """Task labels sorted by dataset, arch, noise type, noise rate and convention."""
    keys = {tuple(fields): task_label(*fields) for fields in zip(*(df[c] for c in _TASK_FIELDS))}
    return [keys[k] for k in sorted(keys)]


def _extra_split(value: Any, where: str) -> str | None:
    """The ``split`` key of one row's ``extra`` JSON (None when absent), validated."""
    extra = json.loads(value) if isinstance(value, str) and value else value
    split = extra.get("split") if isinstance(extra, Mapping) else None
    if split is not None and split not in SPLITS:
        raise ValueError(f"{where}: extra['split']={split!r} is not valid; use 'seen' or 'held-out' (or leave it out)")
    return split


def task_splits(df: pd.DataFrame) -> dict[str, str]:
    """``{task: "seen" | "held-out" | ""}`` from the rows' JSON ``extra`` key ``"split"``.

    results.schema has no split column, so the rows say it in ``extra`` (``{"split": "seen"}``); rows
    without the key say nothing. Raises ValueError for another value or a task marked both ways.
    """
    _require(df, ("task", "extra"))
    found: dict[str, set[str]] = {task: set() for task in df["task"]}
    for i, (task, extra) in enumerate(zip(df["task"], df["extra"])):
        split = _extra_split(extra, f"row {i} (task {task!r})")
        if split is not None:
            found[task].add(split)
    for task, values in found.items():
        if len(values) > 1:
            raise ValueError(f"task {task!r} is marked both {sorted(values)} in extra['split']; mark each task once")
    return {task: (next(iter(v)) if v else "") for task, v in sorted(found.items())}


def resolve_metric(df: pd.DataFrame, metric: str | None = None) -> str:
    """The column a compare table reads: ``metric`` if given, else test accuracy at the rows' rule.

    Default: ``test_acc_last`` when the rows' ``metric_rule`` is "last" (gao-arl: accuracy at
    convergence), ``test_acc_best`` (test accuracy at the best-validation epoch) when it is "best",
    ``test_acc_noisy`` (at the best noisy-validation epoch, gao-arl Table 3) when it is "noisy".
    Raises ValueError for an unknown metric or rows that mix rules.
    """
    if metric is not None:
        if metric not in METRICS:
            raise ValueError(f"metric={metric!r} is not one of {METRICS}; pick one of those columns")
        return metric
    _require(df, ("metric_rule",))
    rules = sorted(set(df["metric_rule"]))
    if len(rules) != 1:
        raise ValueError(f"rows use metric_rule values {rules}; pass metric= one of {', '.join(METRICS)}")
    return f"test_acc_{rules[0]}"


def method_kinds(df: pd.DataFrame) -> dict[str, str]:
    """``{method: method_kind}``; a method recorded with two kinds is a ValueError."""
    kinds: dict[str, str] = {}
    for (method, kind), _ in df.groupby(["method", "method_kind"], sort=True):
        if method in kinds and kinds[method] != kind:
            raise ValueError(
                f"method {method!r} has rows of method_kind {kinds[method]!r} and {kind!r}; give each method one kind"
            )
        kinds[method] = kind
    return kinds


def method_order(df: pd.DataFrame) -> list[str]:
    """Methods sorted hand-designed, evolved, meta-learned, then by name."""
    kinds = method_kinds(df)
    return sorted(kinds, key=lambda m: (KIND_ORDER.get(kinds[m], len(KIND_ORDER)), m))


def short_reason(error: str, status: str, width: int = REASON_WIDTH) -> str:
    """The first non-empty line of ``error`` (or the status when empty), cut to ``width`` chars with '…'."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[0] if lines else status
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


def cell_stats(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per (method, task): runs, ok, mean and sample std of ``metric`` in %, reason if none ok."""
    _require(df, ("method", "method_kind", "status", "error", "seed", metric))
    frame = df if "task" in df.columns else with_tasks(df)
    kinds = method_kinds(frame)
    records = []
    for (method, task), cell in frame.sort_values(["seed"], kind="stable").groupby(["method", "task"], sort=True):
        values = cell[metric].to_numpy(dtype=np.float64)
        ok = (cell["status"] == "ok").to_numpy() & np.isfinite(values)
        accs = [100.0 * float(v) for v in values[ok]]
        bad = cell[~ok]
        reason = "" if accs else short_reason(bad["error"].iloc[0], _status_reason(bad["status"].iloc[0], metric))
        records.append(dict(
            method=method, kind=kinds[method], task=task, runs=len(cell), ok=len(accs),
            mean=statistics.fmean(accs) if accs else math.nan,
            std=statistics.stdev(accs) if len(accs) >= 2 else math.nan, reason=reason,
        ))
    return pd.DataFrame.from_records(records, columns=["method", "kind", "task", "runs", "ok", "mean", "std", "reason"])


def _status_reason(status: str, metric: str) -> str:
    return f"no {metric} recorded" if status == "ok" else status


def means_matrix(stats: pd.DataFrame, tasks: Sequence[str], methods: Sequence[str]) -> pd.DataFrame:
    """methods × tasks of cell means (%): NaN where never run, −inf where run but no ok row."""
    matrix = pd.DataFrame(math.nan, index=list(methods), columns=list(tasks), dtype=np.float64)
    for row in stats.itertuples(index=False):
        if row.method in matrix.index and row.task in matrix.columns:
            matrix.loc[row.method, row.task] = row.mean if row.ok else -math.inf
    return matrix


def as_displayed(values: pd.DataFrame | pd.Series) -> pd.DataFrame | pd.Series:
    """Each number rounded exactly as the tables print it (``f"{v:.2f}"``), so what prints equal ties."""
    return values.map(lambda v: float(f"{v:.{RANK_DECIMALS}f}"))


def rank_methods(means: pd.DataFrame) -> pd.DataFrame:
    """Rank per task (column), 1 = highest mean, ties averaged; means compared at 2 decimals.

    −inf (failed) ranks last, NaN (not run) gets no rank (gao-arl Tables 1–2, 1-based).
    """
    return as_displayed(means).rank(axis=0, ascending=False, method="average", na_option="keep")


def average_rank(means: pd.DataFrame) -> pd.Series:
    """Mean over tasks of `rank_methods` (tasks without a rank for the method are left out)."""
    return rank_methods(means).mean(axis=1, skipna=True)


# --- text -------------------------------------------------------------------------------------
def escape_cell(text: str) -> str:
    """Text safe inside a Markdown table cell (pipes escaped, newlines flattened)."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> str:
    """A GitHub Markdown table; ``align`` has one letter per column, 'l' or 'r'."""
    marks = {"l": "---", "r": "---:"}
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(marks[a] for a in align) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def format_cell(cell: Mapping[str, Any] | None, best: bool) -> str:
    """``"mean ± std"`` (bold when ``best``), ``" (k/n ok)"`` on partial failure, ``"failed: …"``, or "—"."""
    if cell is None:
        return NOT_RUN
    if not cell["ok"]:
        return escape_cell(f"failed: {cell['reason']}")
    text = f"{cell['mean']:.2f}" + (f" ± {cell['std']:.2f}" if cell["ok"] >= 2 else "")
    text = f"**{text}**" if best else text
    return text + (f" ({cell['ok']}/{cell['runs']} ok)" if cell["ok"] < cell["runs"] else "")


def _best_flags(values: pd.Series, highest: bool) -> pd.Series:
    """True where the value (rounded as displayed) is the best finite one of the column."""
    shown = as_displayed(values).replace(-math.inf, math.nan)
    if shown.isna().all():
        return pd.Series(False, index=values.index)
    target = shown.max() if highest else shown.min()
    return shown == target


def _rank_text(rank: float, best: bool) -> str:
    if math.isnan(rank):
        return NOT_RUN
    return f"**{rank:.2f}**" if best else f"{rank:.2f}"


def accuracy_markdown(stats: pd.DataFrame, tasks: Sequence[str], methods: Sequence[str]) -> str:
    """The accuracy table: rows = methods, columns = ``tasks`` then the average rank over them.

    Methods with no row in any of ``tasks`` are left out; best cell per column and best rank in bold.
    """
    cells = {(r["method"], r["task"]): r for r in stats.to_dict("records") if r["task"] in tasks}
    shown = [m for m in methods if any((m, t) in cells for t in tasks)]
    means = means_matrix(stats, tasks, shown)
    ranks = average_rank(means)
    best = {t: _best_flags(means[t], highest=True) for t in tasks}
    best_rank = _best_flags(ranks, highest=False)
    kinds = dict(zip(stats["method"], stats["kind"]))
    rows = []
    for m in shown:
        rank = _rank_text(ranks[m], best_rank[m])
        shown_cells = [format_cell(cells.get((m, t)), bool(best[t][m])) for t in tasks]
        rows.append([escape_cell(m), kinds.get(m, ""), *shown_cells, rank])
    header = ["method", "kind", *(escape_cell(t) for t in tasks), "avg rank"]
    return markdown_table(header, rows, "ll" + "r" * (len(tasks) + 1))


def average_rank_markdown(stats: pd.DataFrame, groups: Mapping[str, Sequence[str]], methods: Sequence[str]) -> str:
    """Average rank per method within each group of tasks (e.g. seen / held-out / all), best in bold."""
    ranks = pd.DataFrame({name: average_rank(means_matrix(stats, tasks, methods)) for name, tasks in groups.items()})
    best = {name: _best_flags(ranks[name], highest=False) for name in groups}
    kinds = dict(zip(stats["method"], stats["kind"]))
    rows = []
    for m in methods:
        rows.append([escape_cell(m), kinds.get(m, ""), *(_rank_text(ranks.loc[m, g], best[g][m]) for g in groups)])
    return markdown_table(["method", "kind", *groups], rows, "ll" + "r" * len(groups))


def reference_method(df: pd.DataFrame) -> str | None:
    """The CE baseline: a hand-designed method whose rows are all family ``ce`` (named "ce" first)."""
    candidates = [
        method for (method, kind), rows in df.groupby(["method", "method_kind"], sort=True)
        if kind == "hand-designed" and set(rows["family"]) == {"ce"}
    ]
    named = [m for m in candidates if m.lower() == "ce"]
    return (named or candidates or [None])[0]


def cost_per_method(df: pd.DataFrame) -> pd.DataFrame:
    """Per method: runs, ok runs, mean wall s of an ok run, × the CE method's mean, total wall s of all runs,
    and the mean clean labels a run consumed (``clean_labels_used``: meta set, clean validation rows
    read for selection or fitness; 0 when the rows predate the column)."""
    _require(df, ("method", "method_kind", "family", "status", "wall_s"))
    reference = reference_method(df)
    records = []
    for method in method_order(df):
        rows = df[df["method"] == method]
        ok = rows[(rows["status"] == "ok") & np.isfinite(rows["wall_s"].to_numpy(dtype=np.float64))]
        records.append(dict(
            method=method, kind=rows["method_kind"].iloc[0], runs=len(rows), ok=int((rows["status"] == "ok").sum()),
            mean_wall_s=float(ok["wall_s"].mean()) if len(ok) else math.nan,
            total_wall_s=float(np.nansum(rows["wall_s"].to_numpy(dtype=np.float64))),
            clean_labels=float(rows["clean_labels_used"].mean()) if "clean_labels_used" in rows else 0.0,
        ))
    cost = pd.DataFrame.from_records(records, columns=["method", "kind", "runs", "ok", "mean_wall_s", "total_wall_s",
                                                       "clean_labels"])
    base = cost.loc[cost["method"] == reference, "mean_wall_s"]
    base_value = float(base.iloc[0]) if len(base) else math.nan
    cost.insert(5, "vs_ce", cost["mean_wall_s"] / base_value if base_value > 0 else math.nan)
    return cost


def _number(value: float, spec: str = ".2f") -> str:
    return NOT_RUN if not math.isfinite(value) else format(value, spec)


def cost_markdown(df: pd.DataFrame) -> str:
    """The cost table (`cost_per_method`) in Markdown, followed by a line saying what its columns mean."""
    cost = cost_per_method(df)
    columns = ["method", "kind", "runs", "ok", "mean_wall_s", "vs_ce", "total_wall_s", "clean_labels"]
    rows = [[escape_cell(m), k, str(r), str(o), _number(w), _number(v), f"{t:.1f}", _number(c, ".0f")]
            for m, k, r, o, w, v, t, c in cost[columns].itertuples(index=False)]
    reference = reference_method(df)
    relative = f"× CE is relative to `{reference}`" if reference else "no hand-designed CE method ran, so no × CE"
    header = ["method", "kind", "runs", "ok", "mean s/run", "× CE", "total s", "clean labels"]
    return (markdown_table(header, rows, "llrrrrrr") + "\n\n"
            f"Mean wall seconds of an `ok` training run; {relative}; total s counts every run, failed ones included; "
            "clean labels = mean `clean_labels_used` per run (meta set, clean validation rows read to select a "
            "grid point or an epoch, or by an evolved loss's search fitness).")


def summary_text(df: pd.DataFrame, metric: str | None = None) -> str:
    """A short fixed-width summary of a compare run (for printing at the end of ``evoloss compare``).

    One line per method: kind, average rank over every task, mean accuracy over the tasks it did not
    fail (mean of the cell means, %), ok runs, mean wall s per ok run and × CE; a footer says which
    metric was read. Raises ValueError when ``df`` holds no compare rows (``method`` empty).
    """
    _require(df, ("method",))
    rows = with_tasks(df[df["method"] != ""])
    if rows.empty:
        raise ValueError("summary_text: no compare rows (every 'method' is empty); this is not a compare run")
    metric = resolve_metric(rows, metric)
    stats = cell_stats(rows, metric)
    methods, tasks = method_order(rows), task_order(rows)
    ranks = average_rank(means_matrix(stats, tasks, methods))
    cost = cost_per_method(rows).set_index("method")
    table = [["method", "kind", "avg rank", "mean acc %", "ok runs", "s/run", "× CE"]]
    for m in methods:
        ok_cells = stats[(stats["method"] == m) & (stats["ok"] > 0)]
        mean_acc = float(ok_cells["mean"].mean()) if len(ok_cells) else math.nan
        c = cost.loc[m]
        table.append([m, str(c["kind"]), _number(ranks[m]), _number(mean_acc), f"{c['ok']}/{c['runs']}",
                      _number(c["mean_wall_s"]), _number(c["vs_ce"])])
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in table]
    reference = reference_method(rows)
    ce_note = f"× CE = mean s/run vs {reference}" if reference else "× CE: no hand-designed CE method in this run"
    lines.append(f"({metric} in %, mean over seeds; avg rank over {len(tasks)} tasks; {ce_note})")
    return "\n".join(lines)


# --- the compare's printed summary: method × task group ------------------------------------------
def _group_frame(rows: pd.DataFrame | Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The rows with ``extra`` decoded and its ``group`` and ``split`` as columns."""
    df = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    df["extra"] = [json.loads(e) if isinstance(e, str) else dict(e or {}) for e in df["extra"]]
    df["group"] = [e.get("group", "") for e in df["extra"]]
    df["split"] = [e.get("split", "") for e in df["extra"]]
    return df


def _group_cell(part: pd.DataFrame, column: str) -> str:
    """One method × group cell: seed means' mean ± sample std in %, or the first failure's reason."""
    ok = part[(part["status"] == "ok") & np.isfinite(part[column].astype(float))]
    if ok.empty:
        first = part[part["status"] != "ok"].iloc[0] if (part["status"] != "ok").any() else part.iloc[0]
        lines = [line.strip() for line in str(first["error"]).splitlines() if line.strip()]
        reason = lines[0] if lines else "no finite accuracy"
        reason = reason if len(reason) <= GROUP_REASON_WIDTH else reason[: GROUP_REASON_WIDTH - 1] + "…"
        return f"{first['status']}: {reason}"
    seed_means = 100.0 * ok.assign(value=ok[column].astype(float)).groupby("seed")["value"].mean().to_numpy()
    text = f"{seed_means.mean():.2f}" + (f" ± {seed_means.std(ddof=1):.2f}" if len(seed_means) > 1 else "")
    return text + (f" ({len(ok)}/{len(part)} ok)" if len(ok) < len(part) else "")


def group_summary_table(rows: pd.DataFrame | Sequence[Mapping[str, Any]], metric_rule: str) -> str:
    """The compare's summary as fixed-width text: per method (candidate order) × task group (``extra``
    ``group``, first-seen order), the test accuracy at ``metric_rule`` in %.

    A cell is the mean ± sample std (ddof 1) over seeds of the group's per-seed mean over its ok runs
    (a group mixes datasets, so a std over its runs would measure the datasets, not the seeds);
    "(k/n ok)" when some runs were not ok, "<status>: <first error line>" when none was.
    """
    df = _group_frame(rows)
    column = f"test_acc_{metric_rule}"
    groups = list(dict.fromkeys(df["group"]))
    splits = dict(zip(df["group"], df["split"]))
    table = [["method", "kind", *(f"{g} [{splits[g]}]" for g in groups)]]
    for candidate in sorted(set(df["candidate"])):
        part = df[df["candidate"] == candidate]
        table.append([str(part["method"].iloc[0]), str(part["method_kind"].iloc[0]),
                      *(_group_cell(part[part["group"] == g], column) for g in groups)])
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in table]
    lines.append(f"({column} in %: mean ± sample std over seeds of each group's mean over its tasks)")
    return "\n".join(lines)
