"""Report figures: real, non-blank PNGs, and the data behind them (curves, noise panels, loss specs)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from evoloss.losses import LossSpec
from evoloss.results.figures import (
    mean_curves,
    method_loss_specs,
    noise_panels,
    plot_accuracy_vs_noise,
    plot_learning_curves,
    plot_method_loss_shapes,
    plot_search_progress,
)
from evoloss.results.store import ParquetStore
from evoloss.results.tables import with_tasks
from tests.results.report_rows import base_row, compare_rows, write_search_run


@pytest.fixture()
def rows() -> pd.DataFrame:
    return with_tasks(pd.DataFrame(compare_rows()))


def assert_real_png(path: Path, min_std: float = 0.05) -> np.ndarray:
    """The PNG's pixels, after checking the file is a PNG with visible, varied content."""
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = imread(path)[..., :3]
    non_white = float((image < 0.9).any(axis=-1).mean())
    assert image.std() > min_std and 0.01 < non_white < 0.6, (image.std(), non_white)
    return image


def test_mean_curve_is_the_epochwise_mean_of_ok_runs(rows: pd.DataFrame) -> None:
    curves = mean_curves(rows)
    arl = rows[(rows["method"] == "arl") & (rows["task"] == "digits/mlp2/symmetric0.4-exact")]
    expected = 100 * np.mean(np.stack([np.asarray(c, dtype=np.float64) for c in arl["curve_val"]]), axis=0)
    assert np.allclose(curves[("digits/mlp2/symmetric0.4-exact", "arl")], expected, atol=1e-12)
    # failed rows have no curve; the diverged gce run is left out (ok rows only)
    assert ("mnist1d/cnn1d/symmetric0.8-exact", "mwnet") not in curves
    gce = rows[(rows["method"] == "gce") & (rows["task"] == "digits/mlp2/symmetric0.4-exact") & (rows["status"] == "ok")]
    assert len(curves[("digits/mlp2/symmetric0.4-exact", "gce")]) == 5 and len(gce) == 2


def test_curves_of_different_lengths_average_where_present() -> None:
    frame = with_tasks(pd.DataFrame([
        base_row(method="a", method_kind="hand-designed", curve_val=[0.1, 0.2, 0.3], seed=0),
        base_row(method="a", method_kind="hand-designed", curve_val=[0.3, 0.4], seed=1),
    ]))
    (curve,) = mean_curves(frame).values()
    assert np.allclose(curve, [20.0, 30.0, 30.0])


def test_learning_curves_png(tmp_path: Path, rows: pd.DataFrame) -> None:
    out = plot_learning_curves(rows, tmp_path / "curves.png")
    image = assert_real_png(out)
    assert image.shape[1] > image.shape[0]  # 3 panels side by side


def test_noise_panels_need_two_rates_and_take_clean_tasks_as_rate_zero(rows: pd.DataFrame) -> None:
    assert noise_panels(rows) == {("digits", "mlp2", "symmetric", "exact"): [0.4, 0.8]}
    clean = rows[rows["task"] == "digits/mlp2/symmetric0.4-exact"].assign(noise_type="none", noise_rate=0.0,
                                                                            noise_convention="")
    only_one_rate = pd.concat([rows[rows["task"] != "digits/mlp2/symmetric0.4-exact"], clean])
    assert noise_panels(only_one_rate) == {("digits", "mlp2", "symmetric", "exact"): [0.0, 0.8]}
    assert noise_panels(rows[rows["noise_rate"] == 0.8]) == {}


def test_accuracy_vs_noise_png(tmp_path: Path, rows: pd.DataFrame) -> None:
    assert_real_png(plot_accuracy_vs_noise(rows, "test_acc_last", tmp_path / "noise.png"))
    with pytest.raises(ValueError, match="needs at least two noise rates"):
        plot_accuracy_vs_noise(rows[rows["noise_rate"] == 0.8], "test_acc_last", tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()


def test_loss_specs_skip_meta_learned_and_bad_params(rows: pd.DataFrame) -> None:
    specs, notes = method_loss_specs(rows)
    assert specs == [
        ("ce", LossSpec("ce", {})),
        ("gce", LossSpec("gce", {"q": 0.7})),
        ("arl", LossSpec("taylor", {"theta2": -1.5, "theta3": 0.8, "theta6": -2.0})),
    ]
    assert notes == ["mwnet: meta-learned, no fixed shape"]
    broken = pd.concat([rows, with_tasks(pd.DataFrame([
        base_row(method="bad", method_kind="hand-designed", family="gce", params='{"q": 7.0}'),
        base_row(method="two", method_kind="evolved", family="gce", params='{"q": 0.3}'),
        base_row(method="two", method_kind="evolved", family="gce", params='{"q": 0.5}', seed=1),
    ]))])
    specs, notes = method_loss_specs(broken)
    assert [label for label, _ in specs] == ["ce", "gce", "arl", "two [1]", "two [2]"]
    assert notes[0].startswith("bad: ") and "'q'=7.0 is outside its valid range" in notes[0]


def test_method_loss_shapes_png(tmp_path: Path, rows: pd.DataFrame) -> None:
    out, notes = plot_method_loss_shapes(rows, tmp_path / "shapes.png")
    assert out == tmp_path / "shapes.png" and notes == ["mwnet: meta-learned, no fixed shape"]
    assert_real_png(out)
    nothing, notes = plot_method_loss_shapes(rows[rows["method"] == "mwnet"], tmp_path / "none.png")
    assert nothing is None and not (tmp_path / "none.png").exists() and notes


def test_search_progress_png(tmp_path: Path) -> None:
    gens = ParquetStore(write_search_run(tmp_path / "run")).read_generations()
    image = assert_real_png(plot_search_progress(gens, tmp_path / "search.png"))
    assert image.shape[1] > 2 * image.shape[0]  # fitness, sigma and evaluations/s panels
    with pytest.raises(ValueError, match="no generation rows"):
        plot_search_progress(gens.iloc[:0], tmp_path / "empty.png")


def test_a_nan_generation_is_drawn_as_a_gap(tmp_path: Path) -> None:
    gens = ParquetStore(write_search_run(tmp_path / "run")).read_generations()
    gens.loc[1, ["best_fitness", "mean_fitness"]] = math.nan
    assert_real_png(plot_search_progress(gens, tmp_path / "gap.png"))


def test_figures_are_byte_identical_when_redrawn(tmp_path: Path, rows: pd.DataFrame) -> None:
    a = plot_learning_curves(rows, tmp_path / "a.png").read_bytes()
    b = plot_learning_curves(rows.iloc[::-1], tmp_path / "b.png").read_bytes()
    assert a == b
