"""`evoloss report`: one Markdown report plus PNG figures of a compare run or a search run.

The kind of run is read from its rows (`run_kinds`): evaluation rows with ``method`` filled are a
compare run; rows with an empty ``method`` (or generation rows alone) are a search. A run may be
both; a run with neither is an error that names the path.

The report states the protocol first (run id, row counts, metric, noise conventions and realised
rates, seeds, dataset/arch grid, trainers, versions), all read from the rows; then, for a compare
run, the accuracy tables (`results.tables`: mean ± std over seeds in %, best in bold, average rank
as gao-arl Tables 1–2, split by ``extra["split"]`` seen / held-out when the rows say so), the failed
and partial cells, the cost per method and figures; for a search, the generation table, the best
candidate and figures (`results.figures`).

Metric of a compare run (our choice): clean *test* accuracy at the rows' ``metric_rule`` ("last" →
``test_acc_last``, gao-arl's accuracy at convergence; "best" → ``test_acc_best``, the test accuracy
at the best-validation epoch); ``metric=`` picks another column. A search reports the fitness its
generation rows recorded (``fitness_metric``, clean validation accuracy).

Reproducible: no timestamps or paths in ``report.md``, everything sorted, so the same rows give a
byte-identical file. Reading is read-only: Parquet parts are read directly (not through
``ParquetStore``, whose constructor creates folders and deletes in-flight temp files, which would
race a live coordinator). Writing goes to a temporary folder first; a failure writes nothing.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from evoloss.results.schema import EVAL_SCHEMA, GENERATION_SCHEMA, STATUSES
from evoloss.losses import LossSpec
from evoloss.results.figures import (
    mean_curves,
    noise_panels,
    plot_accuracy_vs_noise,
    plot_learning_curves,
    plot_method_loss_shapes,
    plot_search_progress,
    shape_problem,
)
from evoloss.results.loss_shapes import plot_loss_shapes
from evoloss.results.tables import (
    accuracy_markdown,
    average_rank_markdown,
    cell_stats,
    cost_markdown,
    NOT_RUN,
    markdown_table,
    method_order,
    resolve_metric,
    short_reason,
    summary_text,
    task_order,
    task_splits,
    with_tasks,
)

REPORT_NAME = "report.md"
FIGURE_NAMES = ("loss_shapes.png", "learning_curves.png", "accuracy_vs_noise.png", "search_progress.png",
                "best_loss_shape.png")
_PART = re.compile(r"^gen-(\d{6,})\.parquet$")


@dataclass(frozen=True)
class RunRows:
    """The rows of one run directory: evaluation rows and generation rows (results.schema)."""

    run_dir: Path
    evaluations: pd.DataFrame
    generations: pd.DataFrame


@dataclass(frozen=True)
class Report:
    """A built report: the Markdown text, the figure files it links, the run kinds and a summary."""

    markdown: str
    figures: tuple[str, ...]
    kinds: tuple[str, ...]
    summary: str


def _read_parts(directory: Path, schema: pa.Schema) -> pd.DataFrame:
    """Every ``gen-NNNNNN.parquet`` part of ``directory`` in generation order (an empty frame if none)."""
    found = ((_PART.match(p.name), p) for p in directory.glob("gen-*.parquet"))
    parts = sorted((int(m.group(1)), p) for m, p in found if m)
    tables = []
    for _, path in parts:
        try:
            tables.append(pq.read_table(path, schema=schema))
        except (pa.ArrowException, OSError) as exc:
            detail = " ".join(str(exc).split())
            raise ValueError(f"{str(path)!r} is not a readable part of this run ({detail}); move it aside") from None
    return (pa.concat_tables(tables) if tables else schema.empty_table()).to_pandas()


def read_run(run_dir: str | os.PathLike[str]) -> RunRows:
    """Read a run directory without changing it.

    Raises:
        FileNotFoundError: ``run_dir`` does not exist.
        ValueError: it is not a directory, or holds no evaluation and no generation rows.
    """
    path = Path(run_dir)
    if not path.exists():
        raise FileNotFoundError(
            f"run dir {str(path)!r} does not exist; pass a run directory (runs/<run-id>) written by "
            "'evoloss search' or 'evoloss compare'"
        )
    if not path.is_dir():
        raise ValueError(f"run dir {str(path)!r} is not a directory; pass a run directory (runs/<run-id>)")
    evaluations = _read_parts(path / "evaluations", EVAL_SCHEMA)
    rows = RunRows(path, evaluations, _read_parts(path / "generations", GENERATION_SCHEMA))
    if rows.evaluations.empty and rows.generations.empty:
        raise ValueError(
            f"run dir {str(path)!r} has no evaluation or generation rows (no evaluations/gen-*.parquet); "
            "run 'evoloss search' or 'evoloss compare' into it first"
        )
    return rows


def run_kinds(rows: RunRows) -> tuple[str, ...]:
    """``("compare",)``, ``("search",)`` or both, from the rows; ValueError when neither (names the path)."""
    methods = rows.evaluations["method"]
    kinds = []
    if (methods != "").any():
        kinds.append("compare")
    if (methods == "").any() or (rows.evaluations.empty and not rows.generations.empty):
        kinds.append("search")
    if not kinds:
        raise ValueError(f"run dir {str(rows.run_dir)!r} has no evaluation or generation rows to report")
    return tuple(kinds)


METRIC_TEXT = {
    "test_acc_last": "clean test accuracy after the last epoch",
    "test_acc_best": "clean test accuracy at the epoch of best clean validation accuracy",
    "test_acc_noisy": "clean test accuracy at the epoch of best noisy-validation accuracy (gao-arl Table 3)",
    "val_acc_last": "clean validation accuracy after the last epoch",
    "val_acc_best": "best clean validation accuracy over the epochs",
}
_SPLIT_TITLES = {"seen": "Seen tasks", "held-out": "Held-out tasks", "": "Unmarked tasks"}


def _joined(values: Iterable[object]) -> str:
    return ", ".join(str(v) for v in sorted(set(values))) or "none"


def _number(value: float, spec: str) -> str:
    return format(float(value), spec) if math.isfinite(value) else NOT_RUN


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _status_counts(df: pd.DataFrame) -> str:
    """``"32 ok, 1 diverged, 3 failed"`` in the schema's status order."""
    counts = df["status"].value_counts()
    return ", ".join(f"{int(counts[s])} {s}" for s in STATUSES if s in counts.index) or "none"


def _noise_lines(df: pd.DataFrame) -> list[str]:
    """One line per (noise type, convention): its nominal rates and the mean realised rate of each."""
    lines = []
    for (kind, convention), group in df.groupby(["noise_type", "noise_convention"], sort=True):
        if kind == "none":
            lines.append("- Noise: none (clean labels)")
            continue
        rates = []
        for rate, cell in group.groupby("noise_rate", sort=True):
            realised = cell["noise_rate_realised"].to_numpy(dtype=np.float64)
            realised = realised[np.isfinite(realised)]
            rates.append(f"rate {rate:g} (realised {realised.mean():.3f})" if len(realised) else f"rate {rate:g}")
        how = f"convention `{convention}`" if convention else "convention not recorded"
        lines.append(f"- Noise: {kind} ({how}): {', '.join(rates)}")
    return lines


def protocol_lines(evals: pd.DataFrame, gens: pd.DataFrame, metric: str | None, kinds: Sequence[str]) -> list[str]:
    """The protocol bullets, every one read from the rows (``evals`` carries the ``task`` column)."""
    run_ids = _joined(f"`{r}`" for r in set(evals["run_id"]) | set(gens["run_id"]))
    lines = [f"- Run: {run_ids} ({' and '.join(kinds)})",
             f"- Rows: {len(evals)} evaluations: {_status_counts(evals)}; {_plural(len(gens), 'generation row')}"]
    compare, search = evals[evals["method"] != ""], evals[evals["method"] == ""]
    if "compare" in kinds:
        rules = _joined(compare["metric_rule"])
        lines.append(
            f"- Metric: `{metric}`, {METRIC_TEXT[metric]}, in % (rows' metric_rule `{rules}`): "
            "mean ± sample std over the ok seeds of a task; only runs with status `ok` enter a mean (the others "
            "are counted, e.g. \"2/3 ok\"); average rank as gao-arl Tables 1–2: 1 = best per task, ties averaged, "
            "a failed cell ranks last"
        )
        marked = [s for s in task_splits(compare).values() if s]
        if marked:
            lines.append(f"- Split (rows' extra['split']): {marked.count('seen')} seen, "
                         f"{_plural(marked.count('held-out'), 'held-out task')}")
    if "search" in kinds and not search.empty:
        fitness = _joined(search["fitness_metric"])
        rules = _joined(search["metric_rule"])
        lines.append(f"- Fitness (search): `{fitness}`, {METRIC_TEXT.get(fitness, 'as recorded')} (metric_rule "
                     f"`{rules}`), a candidate's mean over its tasks as the search recorded it")
    if not evals.empty:
        ok = evals[evals["status"] == "ok"]
        pairs = _joined(f"{d}/{a}" for d, a in zip(evals["dataset"], evals["arch"]))
        lines += _noise_lines(evals)
        lines += [
            f"- Seeds: {_joined(int(s) for s in evals['seed'])}",
            f"- Grid: {pairs}; {evals['task'].nunique()} tasks",
            f"- Trainers: {_joined(evals['trainer'])}; devices: {_joined(evals['device'])}; "
            f"epochs run (ok rows): {_joined(int(e) for e in ok['epochs_run'])}",
            f"- Versions: evoloss {_joined(evals['evoloss_version'])}; torch {_joined(evals['torch_version'])}; "
            f"schema {_joined(int(v) for v in evals['schema_version'])}",
        ]
    return lines


def _accuracy_lines(
    stats: pd.DataFrame, tasks: list[str], splits: dict[str, str], methods: list[str]
) -> list[str]:
    """One accuracy table per split (seen, held-out, unmarked) and, with several, an average-rank table."""
    groups = {s: [t for t in tasks if splits[t] == s] for s in ("seen", "held-out", "")}
    groups = {s: members for s, members in groups.items() if members}
    if list(groups) == [""]:
        return [accuracy_markdown(stats, tasks, methods)]
    lines: list[str] = []
    for split, members in groups.items():
        lines += [f"### {_SPLIT_TITLES[split]}", "", accuracy_markdown(stats, members, methods), ""]
    columns = {(split or "unmarked"): members for split, members in groups.items()}
    columns["all"] = tasks
    return lines + ["### Average rank", "", average_rank_markdown(stats, columns, methods)]


def _failure_lines(df: pd.DataFrame, metric: str, methods: list[str], tasks: list[str]) -> list[str]:
    """One bullet per cell with a run that is not ok: ok count, what went wrong, the first error line."""
    values = df[metric].to_numpy(dtype=np.float64)
    what = df["status"].where(df["status"] != "ok", f"no {metric}")
    bad = df.assign(what=what)[(df["status"] != "ok") | ~np.isfinite(values)]
    if bad.empty:
        return ["None: every run finished `ok` with a metric."]
    totals = df.groupby(["method", "task"]).size()
    lines = []
    cells = bad.sort_values("seed", kind="stable").groupby(["method", "task"])
    for (method, task), cell in sorted(cells, key=lambda item: (methods.index(item[0][0]), tasks.index(item[0][1]))):
        runs = int(totals[(method, task)])
        counts = cell["what"].value_counts()
        order = [s for s in STATUSES if s in counts.index] + sorted(s for s in counts.index if s not in STATUSES)
        reason = short_reason(cell["error"].iloc[0], cell["what"].iloc[0], width=160)
        detail = ", ".join(f"{int(counts[s])} {s}" for s in order)
        lines.append(f"- `{method}` on `{task}`: {runs - len(cell)}/{runs} ok ({detail}): {reason}")
    return lines


def _compare_figures(
    df: pd.DataFrame, metric: str, fig_dir: Path, num_classes: int
) -> tuple[list[str], list[str]]:
    """Loss shapes, learning curves and (with several noise rates) accuracy vs noise rate."""
    lines = ["", "## Figures", "", "### Loss shapes", ""]
    shapes, notes = plot_method_loss_shapes(df, fig_dir / "loss_shapes.png", num_classes)
    figures = [shapes.name] if shapes else []
    if shapes:
        lines += ["![loss shapes](loss_shapes.png)", ""]
    skipped = f" Not drawn: {'; '.join(notes)}." if notes else ""
    lines.append(f"Loss vs predicted probability of the hand-designed and evolved methods, C = {num_classes} "
                 f"classes (gao-arl Fig. 2 style).{skipped}")
    lines += ["", "### Learning curves", ""]
    if mean_curves(df):
        figures.append(plot_learning_curves(df, fig_dir / "learning_curves.png").name)
        lines += ["![learning curves](learning_curves.png)", "",
                  "Clean validation accuracy per epoch (`curve_val`), mean over the ok seeds of each task."]
    else:
        lines.append("No ok run recorded a learning curve (`curve_val`).")
    if noise_panels(df):
        figures.append(plot_accuracy_vs_noise(df, metric, fig_dir / "accuracy_vs_noise.png").name)
        lines += ["", "### Accuracy vs noise rate", "", "![accuracy vs noise rate](accuracy_vs_noise.png)", "",
                  f"`{metric}` (%), mean ± sample std over the ok seeds; clean tasks drawn at rate 0."]
    return lines, figures


def _compare_section(
    df: pd.DataFrame, metric: str, fig_dir: Path, num_classes: int
) -> tuple[list[str], list[str]]:
    """Accuracy tables, failed cells, cost per method and figures of a compare run."""
    stats = cell_stats(df, metric)
    methods, tasks = method_order(df), task_order(df)
    lines = ["", "## Accuracy (%)", ""] + _accuracy_lines(stats, tasks, task_splits(df), methods)
    lines += ["", "## Failed and partial cells", ""] + _failure_lines(df, metric, methods, tasks)
    lines += ["", "## Cost per method", "", cost_markdown(df)]
    figure_lines, figures = _compare_figures(df, metric, fig_dir, num_classes)
    return lines + figure_lines, figures


def _best_candidate(evals: pd.DataFrame, gens: pd.DataFrame) -> dict | None:
    """The generation row with the highest finite best fitness (earliest on a tie), with its family."""
    finite = gens[np.isfinite(gens["best_fitness"].to_numpy(dtype=np.float64))]
    if finite.empty:
        return None
    row = finite.loc[finite["best_fitness"].idxmax()]
    g, c = int(row["generation"]), int(row["best_candidate"])
    family = evals.loc[(evals["generation"] == g) & (evals["candidate"] == c), "family"]
    return dict(generation=g, candidate=c, fitness=float(row["best_fitness"]),
                params=json.loads(row["best_params"]), family=str(family.iloc[0]) if len(family) else None)


def _natural(name: str) -> list[object]:
    """Sort key that puts theta2 before theta10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _params_text(params: dict) -> str:
    """``name=value`` pairs in natural name order, numbers with 4 significant digits."""
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, (int, float)) else f"{k}={v}"
                     for k, v in sorted(params.items(), key=lambda kv: _natural(kv[0]))) or "none"


def _generation_table(gens: pd.DataFrame) -> str:
    """One row per generation: fitness in %, sigma, evaluations, failures, throughput, wall time."""
    rows = [
        [str(int(r.generation)),
         *(_number(100.0 * v, ".2f") for v in (r.best_fitness, r.mean_fitness, r.median_fitness)),
         _number(r.sigma, ".4g"), str(int(r.evaluations)), str(int(r.failed)), _number(r.evals_per_s, ".2f"),
         _number(r.wall_s, ".2f")]
        for r in gens.itertuples(index=False)
    ]
    header = ["generation", "best %", "mean %", "median %", "sigma", "evaluations", "failed", "evals/s", "wall s"]
    return markdown_table(header, rows, "r" * len(header))


def _best_shape_lines(best: dict, fig_dir: Path, num_classes: int) -> tuple[list[str], list[str]]:
    """The best candidate's loss shape next to CE, or a note saying why it is not drawn."""
    spec = LossSpec(best["family"], best["params"])
    problem = shape_problem(spec, num_classes)
    if problem is not None:
        return ["", "### Best loss shape", "", f"Not drawn: {problem}."], []
    entries = [(f"best (generation {best['generation']}, candidate {best['candidate']})", spec)]
    entries += [("ce", LossSpec("ce"))] if best["family"] != "ce" else []
    plot_loss_shapes(entries, fig_dir / "best_loss_shape.png", num_classes=num_classes)
    caption = f"The best candidate's loss next to CE, C = {num_classes} classes (gao-arl Fig. 2 style)."
    lines = ["", "### Best loss shape", "", "![best loss shape](best_loss_shape.png)", "", caption]
    return lines, ["best_loss_shape.png"]


def _search_section(
    evals: pd.DataFrame, gens: pd.DataFrame, fig_dir: Path, num_classes: int
) -> tuple[list[str], list[str]]:
    """The search summary bullets, the generation table, its progress figure and the best loss shape."""
    gens = gens.sort_values("generation", kind="stable").reset_index(drop=True)
    per_gen = evals.groupby("generation")["candidate"].nunique()
    counts = _joined(int(n) for n in per_gen) if len(per_gen) else "none recorded"
    done = sorted(set(int(g) for g in gens["generation"]) | set(int(g) for g in evals["generation"]))
    span = f"generations {done[0]}–{done[-1]}" if len(done) > 1 else f"generation {done[0]}"
    not_ok = int((evals["status"] != "ok").sum())
    lines = ["", "## Search", "", f"- Family searched: {_joined(f'`{f}`' for f in evals['family'])}",
             f"- Candidates per generation: {counts}; {span}; {len(evals)} evaluations, {not_ok} not ok"]
    best = _best_candidate(evals, gens)
    if best is None:
        lines.append("- Best: no candidate finished" + (" (no generation rows yet)" if gens.empty else ""))
    else:
        family = f"family `{best['family']}`" if best["family"] else "family not recorded"
        lines += [f"- Best: generation {best['generation']}, candidate {best['candidate']}, fitness "
                  f"{100 * best['fitness']:.2f} % ({family})", f"- Best parameters: {_params_text(best['params'])}"]
    figures: list[str] = []
    if not gens.empty:
        lines += [f"- Throughput: {_number(gens['evals_per_s'].mean(), '.2f')} evaluations/s on average; "
                  f"{gens['wall_s'].sum():.1f} s of generation wall time", "", _generation_table(gens), "",
                  "![search progress](search_progress.png)"]
        figures.append(plot_search_progress(gens, fig_dir / "search_progress.png").name)
    if best is not None and best["family"]:
        shape_lines, drawn = _best_shape_lines(best, fig_dir, num_classes)
        lines += shape_lines
        figures += drawn
    return lines, figures


def search_summary(evals: pd.DataFrame, gens: pd.DataFrame) -> str:
    """One line on a search: its best fitness, where it was found, and how many generations ran."""
    best = _best_candidate(evals, gens)
    n = gens["generation"].nunique()
    if best is None:
        return f"search: no candidate finished; {_plural(n, 'generation')}"
    return (f"search: best fitness {100 * best['fitness']:.2f} % at generation {best['generation']}, "
            f"candidate {best['candidate']} ({best['family'] or 'family not recorded'}); {_plural(n, 'generation')}")


def _validate(rows: RunRows, metric: str | None, num_classes: int) -> tuple[tuple[str, ...], str | None]:
    """The run kinds and the compare metric, after every check that needs no drawing (so a bad run
    or option fails before anything is written)."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2; got {num_classes!r}")
    kinds = run_kinds(rows)
    if metric is not None:
        resolve_metric(rows.evaluations, metric)  # an unknown name is an error for a search too
    if "compare" not in kinds:
        return kinds, None
    compare = with_tasks(rows.evaluations[rows.evaluations["method"] != ""])
    task_splits(compare)
    method_order(compare)
    return kinds, resolve_metric(compare, metric)


def build_report(
    rows: RunRows, figure_dir: str | os.PathLike[str], *, metric: str | None = None, num_classes: int = 10
) -> Report:
    """Build the report of ``rows``, drawing its figures into ``figure_dir`` (created if missing).

    Raises ValueError for rows the report cannot read (mixed metric rules without ``metric``, an
    unknown ``metric``, a bad ``extra["split"]``).
    """
    kinds, chosen = _validate(rows, metric, num_classes)
    evals = with_tasks(rows.evaluations)
    compare, search = evals[evals["method"] != ""], evals[evals["method"] == ""]
    fig_dir = Path(figure_dir)
    fig_dir.mkdir(parents=True, exist_ok=True)
    run_ids = sorted(set(rows.evaluations["run_id"]) | set(rows.generations["run_id"]))
    lines = [f"# evoloss report: run {', '.join(f'`{r}`' for r in run_ids)}", "", "## Protocol", ""]
    lines += protocol_lines(evals, rows.generations, chosen, kinds)
    figures: list[str] = []
    summary = []
    if "compare" in kinds:
        section, drawn = _compare_section(compare, chosen, fig_dir, num_classes)
        lines += section
        figures += drawn
        summary.append(summary_text(compare, chosen))
    if "search" in kinds:
        section, drawn = _search_section(search, rows.generations, fig_dir, num_classes)
        lines += section
        figures += drawn
        summary.append(search_summary(search, rows.generations))
    markdown = "\n".join(lines).rstrip("\n") + "\n"
    return Report(markdown=markdown, figures=tuple(figures), kinds=kinds, summary="\n\n".join(summary))


def write_report(
    run_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    *,
    metric: str | None = None,
    num_classes: int = 10,
) -> tuple[Path, Report]:
    """Write ``report.md`` and its figures into ``out_dir`` (default ``RUN_DIR/report``); return both.

    Everything is built in a temporary folder beside ``out_dir`` and moved in at the end, so bad
    input writes nothing; figures of an earlier report that this one does not draw are removed.
    """
    rows = read_run(run_dir)
    _validate(rows, metric, num_classes)
    out = Path(out_dir) if out_dir is not None else Path(run_dir) / "report"
    if out.exists() and not out.is_dir():
        raise ValueError(f"report folder {str(out)!r} exists and is not a directory; give a directory for the report")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        report = build_report(rows, staging, metric=metric, num_classes=num_classes)
        (staging / REPORT_NAME).write_bytes(report.markdown.encode("utf-8"))
        out.mkdir(exist_ok=True)
        for name in FIGURE_NAMES:
            if name not in report.figures:
                (out / name).unlink(missing_ok=True)
        for name in (*report.figures, REPORT_NAME):
            os.replace(staging / name, out / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out, report
