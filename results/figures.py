"""The report's PNG figures: learning curves, accuracy vs noise rate, search progress, loss shapes.

Everything draws on a matplotlib ``Figure`` with the Agg canvas (no pyplot, no global backend) and
is written to a temporary file beside the target, then renamed, so a failure leaves no file. Rows
are sorted before anything is averaged or drawn, so the same rows give the same pixels whatever
their order. Loss shapes are drawn by `results.loss_shapes` (gao-arl Fig. 2 style); this module
only chooses which losses: the hand-designed and evolved methods of a compare run (meta-learned
methods learn their loss during training and have no fixed shape).

Choices: curves and accuracies are in %, averaged over the ok runs of a cell; learning curves of
different lengths (early stop) are averaged epoch by epoch over the runs that reached that epoch;
clean tasks (noise type ``none``) are drawn at rate 0 in every noise panel of their dataset/arch.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from evoloss.losses import LossSpec
from evoloss.results.loss_shapes import loss_shape_curves, plot_loss_shapes
from evoloss.results.store import atomic_write
from evoloss.results.tables import method_kinds, method_order, task_order

_SORT = ["method", "task", "seed", "generation", "candidate"]
PanelKey = tuple[str, str, str, str]


def save_png(figure: Figure, out_png: str | os.PathLike[str]) -> Path:
    """Write ``figure`` to ``out_png`` through a temporary file and a rename; return the path."""
    out = Path(out_png)
    if out.suffix.lower() != ".png":
        raise ValueError(f"out_png must end in '.png'; got {str(out)!r}")
    atomic_write(out, lambda stream: figure.savefig(stream, format="png", dpi=100))
    return out


def _figure(panels: int, width: float = 4.2, height: float = 3.4, max_columns: int = 3) -> tuple[Figure, list[Any]]:
    """A figure with ``panels`` axes laid out in rows of at most ``max_columns``; unused axes hidden."""
    columns = min(panels, max_columns)
    rows = -(-panels // columns)
    figure = Figure(figsize=(width * columns, height * rows))
    FigureCanvasAgg(figure)
    axes = list(np.atleast_1d(figure.subplots(rows, columns, squeeze=False)).ravel())
    for ax in axes[panels:]:
        ax.set_visible(False)
    return figure, axes[:panels]


def method_colours(methods: Sequence[str]) -> dict[str, Any]:
    """A fixed colour per method, in method order (tab10, or tab20 beyond 10 methods)."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(methods) <= 10 else "tab20"]
    return {m: cmap(i % cmap.N) for i, m in enumerate(methods)}


def _ok_rows(df: pd.DataFrame, metric: str | None = None) -> pd.DataFrame:
    ok = df["status"] == "ok"
    if metric is not None:
        ok &= np.isfinite(df[metric].to_numpy(dtype=np.float64))
    return df[ok].sort_values([c for c in _SORT if c in df.columns], kind="stable")


def mean_curves(df: pd.DataFrame) -> dict[tuple[str, str], np.ndarray]:
    """``{(task, method): mean clean-validation curve in %}`` over the ok rows with a curve."""
    curves: dict[tuple[str, str], np.ndarray] = {}
    for (task, method), cell in _ok_rows(df).groupby(["task", "method"], sort=True):
        runs = [np.asarray(c, dtype=np.float64) for c in cell["curve_val"] if len(c)]
        if not runs:
            continue
        padded = np.full((len(runs), max(len(r) for r in runs)), np.nan)
        for i, run in enumerate(runs):
            padded[i, : len(run)] = run
        counts = np.isfinite(padded).sum(axis=0)
        curves[(task, method)] = 100.0 * np.nansum(padded, axis=0) / np.maximum(counts, 1)
    return curves


def plot_learning_curves(df: pd.DataFrame, out_png: str | os.PathLike[str]) -> Path:
    """One panel per task: clean validation accuracy (%) per epoch, one line per method (``curve_val``).

    Raises ValueError when no ok row has a learning curve.
    """
    curves = mean_curves(df)
    if not curves:
        raise ValueError("no ok evaluation row has a learning curve (curve_val is empty everywhere)")
    methods = method_order(df)
    colours = method_colours(methods)
    tasks = [t for t in task_order(df) if any((t, m) in curves for m in methods)]
    figure, axes = _figure(len(tasks))
    for ax, task in zip(axes, tasks):
        for m in methods:
            if (task, m) in curves:
                ys = curves[(task, m)]
                ax.plot(np.arange(1, len(ys) + 1), ys, label=m, color=colours[m], linewidth=1.6)
        ax.set_title(task, fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("clean val accuracy (%)")
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=7, loc="best")
    figure.tight_layout()
    return save_png(figure, out_png)


def noise_panels(df: pd.DataFrame) -> dict[PanelKey, list[float]]:
    """``{(dataset, arch, noise_type, convention): sorted rates}`` for panels with at least two rates."""
    clean = {(d, a) for d, a, t in zip(df["dataset"], df["arch"], df["noise_type"]) if t == "none"}
    rates: dict[PanelKey, set[float]] = {}
    for d, a, t, r, c in zip(df["dataset"], df["arch"], df["noise_type"], df["noise_rate"], df["noise_convention"]):
        if t != "none":
            rates.setdefault((d, a, t, c), set()).add(float(r))
    for (d, a, t, c), found in rates.items():
        if (d, a) in clean:
            found.add(0.0)
    return {key: sorted(found) for key, found in sorted(rates.items()) if len(found) >= 2}


def _panel_points(
    df: pd.DataFrame, metric: str, key: PanelKey, method: str
) -> tuple[list[float], list[float], list[float]]:
    """Rates, mean and std (%) of ``method``'s ok runs on the tasks of one noise panel."""
    d, a, t, c = key
    rows = df[(df["method"] == method) & (df["dataset"] == d) & (df["arch"] == a)]
    rows = rows[((rows["noise_type"] == t) & (rows["noise_convention"] == c)) | (rows["noise_type"] == "none")]
    xs, means, stds = [], [], []
    for rate, cell in rows.groupby(rows["noise_rate"].where(rows["noise_type"] != "none", 0.0), sort=True):
        values = 100.0 * cell[metric].to_numpy(dtype=np.float64)
        xs.append(float(rate))
        means.append(float(values.mean()))
        stds.append(float(values.std(ddof=1)) if len(values) > 1 else 0.0)
    return xs, means, stds


def plot_accuracy_vs_noise(df: pd.DataFrame, metric: str, out_png: str | os.PathLike[str]) -> Path:
    """Accuracy (%, mean ± sample std over ok seeds) against noise rate, one panel per dataset/arch/noise type.

    Raises ValueError when no dataset/arch/noise type has at least two noise rates.
    """
    panels = noise_panels(df)
    if not panels:
        raise ValueError("accuracy vs noise rate needs at least two noise rates for one dataset/arch/noise type")
    ok = _ok_rows(df, metric)
    methods = method_order(df)
    colours = method_colours(methods)
    figure, axes = _figure(len(panels))
    for ax, key in zip(axes, panels):
        for m in methods:
            xs, means, stds = _panel_points(ok, metric, key, m)
            if xs:
                ax.errorbar(xs, means, yerr=stds, label=m, color=colours[m], marker="o", capsize=3, linewidth=1.4)
        ax.set_title(f"{key[0]}/{key[1]}/{key[2]}" + (f" ({key[3]})" if key[3] else ""), fontsize=9)
        ax.set_xlabel(f"{key[2]} noise rate")
        ax.set_ylabel(f"{metric} (%)")
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=7, loc="best")
    figure.tight_layout()
    return save_png(figure, out_png)


def plot_search_progress(gens: pd.DataFrame, out_png: str | os.PathLike[str]) -> Path:
    """Three panels per generation: best/mean/median fitness (%), CMA-ES sigma, evaluations/s.

    NaN values (a generation where every candidate failed) are left as gaps. Raises ValueError
    when ``gens`` is empty.
    """
    if gens.empty:
        raise ValueError("no generation rows to draw; the search has not finished a generation yet")
    gens = gens.sort_values("generation", kind="stable")
    x = gens["generation"].to_numpy()
    figure, (fit, sig, speed) = _figure(3, width=4.6, height=3.4)
    for column, style in (("best_fitness", "-o"), ("mean_fitness", "-s"), ("median_fitness", "--")):
        fit.plot(x, 100.0 * gens[column].to_numpy(dtype=np.float64), style, label=column.split("_")[0], markersize=3)
    fit.set_ylabel("fitness (%)")
    fit.legend(fontsize=8)
    sigma = gens["sigma"].to_numpy(dtype=np.float64)
    sig.plot(x, sigma, "-o", color="tab:purple", markersize=3)
    if np.all(sigma[np.isfinite(sigma)] > 0) and np.isfinite(sigma).any():
        sig.set_yscale("log")
    sig.set_ylabel("CMA-ES sigma")
    speed.bar(x, gens["evals_per_s"].to_numpy(dtype=np.float64), color="tab:green")
    speed.set_ylabel("evaluations / s")
    for ax, title in ((fit, "fitness"), (sig, "step size"), (speed, "throughput")):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("generation")
        ax.set_title(title, fontsize=10)
        ax.grid(True, alpha=0.3)
    figure.tight_layout()
    return save_png(figure, out_png)


def _params(value: Any) -> dict[str, Any]:
    return json.loads(value) if isinstance(value, str) else dict(value)


def shape_problem(spec: LossSpec, num_classes: int = 10) -> str | None:
    """Why ``spec`` cannot be drawn (it does not validate, or is not finite on the grid), else None."""
    try:
        loss_shape_curves(spec, num_classes=num_classes, points=25)
    except (ValueError, TypeError) as exc:
        return str(exc)
    return None


def method_loss_specs(df: pd.DataFrame, num_classes: int = 10) -> tuple[list[tuple[str, LossSpec]], list[str]]:
    """``(label, LossSpec)`` of every hand-designed and evolved method, and notes on what was skipped.

    A method whose rows carry several parameter sets gets one entry each (``"name [k]"``). A spec
    that does not validate or is not finite on the shape grid is skipped with a note.
    """
    kinds = method_kinds(df)
    specs: list[tuple[str, LossSpec]] = []
    notes: list[str] = []
    for method in method_order(df):
        if kinds[method] == "meta-learned":
            notes.append(f"{method}: meta-learned, no fixed shape")
            continue
        rows = df[df["method"] == method]
        distinct = sorted({(f, json.dumps(_params(p), sort_keys=True)) for f, p in zip(rows["family"], rows["params"])})
        for k, (family, params) in enumerate(distinct, start=1):
            label = method if len(distinct) == 1 else f"{method} [{k}]"
            spec = LossSpec(family, json.loads(params))
            problem = shape_problem(spec, num_classes)
            if problem is None:
                specs.append((label, spec))
            else:
                notes.append(f"{label}: {problem}")
    return specs, notes


def plot_method_loss_shapes(
    df: pd.DataFrame, out_png: str | os.PathLike[str], num_classes: int = 10
) -> tuple[Path | None, list[str]]:
    """Loss shapes of a compare run's hand-designed and evolved methods; None when there is none to draw."""
    specs, notes = method_loss_specs(df, num_classes)
    if not specs:
        return None, notes
    return plot_loss_shapes(specs, out_png, num_classes=num_classes), notes
