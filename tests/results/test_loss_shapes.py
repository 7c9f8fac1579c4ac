"""Loss-shape figure: the logit construction, the curves against formulas, a real non-blank PNG."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.image import imread

from evoloss.losses import LossSpec, get_family, list_losses
from evoloss.results.loss_shapes import loss_shape_curves, plot_loss_shapes, probability_grid, shape_logits


def test_grid_is_strictly_inside_the_unit_interval() -> None:
    grid = probability_grid(9)
    assert np.allclose(grid, np.arange(1, 10) / 10) and grid.shape == (9,)


@pytest.mark.parametrize("sweep,swept", [("label", 0), ("other", 1)])
def test_logits_put_the_swept_probability_on_one_class_and_spread_the_rest(sweep: str, swept: int) -> None:
    s = np.array([0.01, 0.3, 0.5, 0.99])
    logits, targets = shape_logits(s, num_classes=4, sweep=sweep)
    p = torch.softmax(logits, dim=1).numpy()
    assert logits.dtype == torch.float64 and targets.tolist() == [0, 0, 0, 0]
    assert np.allclose(p[:, swept], s, atol=1e-15)
    rest = np.delete(p, swept, axis=1)
    assert np.allclose(rest, ((1 - s) / 3)[:, None], atol=1e-15)


def test_ce_curves_match_the_formula() -> None:
    curves = loss_shape_curves(LossSpec("ce"), num_classes=10, points=49)
    s = np.linspace(0, 1, 51)[1:-1]
    assert np.allclose(curves["p"], s)
    assert np.allclose(curves["label"], [-math.log(v) for v in s], rtol=1e-12)
    assert np.allclose(curves["other"], [-math.log((1 - v) / 9) for v in s], rtol=1e-12)


@pytest.mark.skipif("mae" not in list_losses(), reason="the mae family has not landed yet")
def test_mae_curves_match_the_reduced_formula() -> None:
    curves = loss_shape_curves(LossSpec("mae"), num_classes=5, points=19)
    s = curves["p"]
    assert np.allclose(curves["label"], 1 - s, atol=1e-12)
    assert np.allclose(curves["other"], 1 - (1 - s) / 4, atol=1e-12)


@pytest.mark.parametrize("name", list_losses())
def test_every_family_has_finite_curves_at_its_defaults(name: str) -> None:
    curves = loss_shape_curves(LossSpec(name, get_family(name).defaults()), num_classes=10, points=25)
    assert all(np.isfinite(curves[key]).all() and curves[key].shape == (25,) for key in ("label", "other"))


def _non_white_fraction(png: Path) -> float:
    image = imread(png)
    return float((image[..., :3] < 0.9).any(axis=-1).mean())


def test_plot_writes_a_real_non_blank_png(tmp_path: Path) -> None:
    specs = [("CE", LossSpec("ce"))] + [(name, LossSpec(name)) for name in list_losses() if name != "ce"][:3]
    out = plot_loss_shapes(specs, tmp_path / "fig" / "shapes.png", num_classes=10, points=50)
    assert out == tmp_path / "fig" / "shapes.png"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = imread(out)
    assert image.shape[:2] == (420, 1000)
    assert image[..., :3].std() > 0.05 and 0.01 < _non_white_fraction(out) < 0.5
    assert sorted(p.name for p in out.parent.iterdir()) == ["shapes.png"]


@pytest.mark.parametrize(
    "specs,kwargs,error,match",
    [
        ([], {}, ValueError, "specs is empty"),
        ([("a", LossSpec("ce")), ("a", LossSpec("ce"))], {}, ValueError, "label 'a' is used twice"),
        ([("", LossSpec("ce"))], {}, ValueError, "label must be a non-empty string"),
        ([("ce", {"family": "ce"})], {}, TypeError, r"specs\[0\] must be a \(label, LossSpec\) pair"),
        ([LossSpec("ce")], {}, TypeError, r"specs\[0\] must be a \(label, LossSpec\) pair"),
        ([("ce", LossSpec("ce"))], {"num_classes": 1}, ValueError, "num_classes must be an integer >= 2; got 1"),
        ([("ce", LossSpec("ce"))], {"num_classes": 2.5}, ValueError, "num_classes must be an integer"),
        ([("ce", LossSpec("ce"))], {"points": 1}, ValueError, "points must be an integer >= 2"),
        ([("x", LossSpec("nope"))], {}, ValueError, "unknown loss family 'nope'"),
    ],
    ids=["empty", "duplicate", "blank-label", "dict-spec", "bare-spec", "one-class", "float-classes", "points",
         "unknown-family"],
)
def test_bad_arguments_raise_and_write_nothing(
    tmp_path: Path, specs: list, kwargs: dict, error: type, match: str
) -> None:
    with pytest.raises(error, match=match):
        plot_loss_shapes(specs, tmp_path / "shapes.png", **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_output_must_be_a_png(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"must end in '.png'; got '.*shapes.jpg'"):
        plot_loss_shapes([("ce", LossSpec("ce"))], tmp_path / "shapes.jpg")
