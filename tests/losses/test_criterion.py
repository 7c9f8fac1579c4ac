"""The nn.CrossEntropyLoss contract (losses/criterion.py) of every exported loss.

- The ``ce`` plug-in (its standalone module and `load_loss`) against ``nn.CrossEntropyLoss``, bit for
  bit, over the whole option grid in float32 and float64; the generic rule (what every other family
  uses) on ``ce`` against ``nn.CrossEntropyLoss`` too, with the family's label table and without.
- Per family, in float64, from the definitions (each expected value is built from the family's plain
  per-sample loss of index targets, one label at a time — not from the criterion code): ignored rows
  contribute nothing; weights follow CE's weighted mean; one-hot probability targets equal index
  targets; probability targets and label smoothing are the expected loss under the target
  distribution; ``[N, C, d]`` and ``[C]`` inputs are rows of ``[N, C]``; float32 under autocast.
"""
from __future__ import annotations

import importlib.util
import itertools
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from evoloss import losses
from evoloss.losses.criterion import FamilyLoss
from evoloss.losses.plugin import export_plugin, load_loss
from evoloss.losses.registry import LossSpec, get_family, list_losses

ALL = list_losses()
SOFT = [n for n in ALL if get_family(n).soft_targets]  # the others refuse probability targets and smoothing
CLASSES = 5


def standalone(out: Path, name: str) -> type:
    """The plug-in class of the exported ``<name>.py`` in ``out``, imported from the file."""
    spec = importlib.util.spec_from_file_location(name, out / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, module.__all__[0])


def random_spec(name: str) -> LossSpec:
    family = get_family(name)
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    return LossSpec(name, family.decode(rng.normal(size=family.dim)))


def make_case(shape: str, soft: bool, dtype: torch.dtype, ignore: int | None, seed: int = 0):
    """(logits, target) of ``shape`` ("2d" [6, C], "4d" [3, C, 2, 2], "1d" [C]); index targets use
    class 2 as ``ignore`` on some rows when given; probability targets are random distributions."""
    g = torch.Generator().manual_seed(seed)
    dims = {"2d": (6, CLASSES), "4d": (3, CLASSES, 2, 2), "1d": (CLASSES,)}[shape]
    logits = (2.0 * torch.randn(dims, generator=g)).to(dtype)
    class_dim = 0 if shape == "1d" else 1
    if soft:
        target = torch.softmax(torch.randn(dims, generator=g), dim=class_dim).to(dtype)
    else:
        index_shape = dims[:class_dim] + dims[class_dim + 1:]
        target = torch.randint(0, CLASSES, index_shape, generator=g)
        if ignore is not None and shape != "1d":
            target.view(-1)[::3] = ignore
    return logits, target


def value_and_grad(loss, logits: torch.Tensor, target: torch.Tensor):
    x = logits.clone().requires_grad_(True)
    value = loss(x, target)
    (grad,) = torch.autograd.grad(value.sum(), x)
    return value.detach(), grad


WEIGHT = torch.tensor([0.5, 2.0, 1.0, 3.0, 0.25], dtype=torch.float64)
GRID = [case for case in itertools.product(("2d", "4d", "1d"), (False, True), (False, True), (None, 2),
                                           ("none", "mean", "sum"), (0.0, 0.2))
        if not (case[1] and case[3] is not None)]  # CE refuses ignore_index >= 0 with probabilities (tested below)


@pytest.fixture(scope="module")
def ce_plugin(tmp_path_factory: pytest.TempPathFactory) -> tuple[type, Path]:
    out = export_plugin(LossSpec("ce"), tmp_path_factory.mktemp("ce") / "p", name="ce_plugin")
    return standalone(out, "ce_plugin"), out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_ce_plugin_equals_cross_entropy_over_the_option_grid(ce_plugin: tuple, dtype: torch.dtype) -> None:
    plugin_class, out = ce_plugin
    for shape, soft, weighted, ignore, reduction, smoothing in GRID:
        logits, target = make_case(shape, soft, dtype, ignore)
        options = {"weight": WEIGHT.to(dtype) if weighted else None, "reduction": reduction,
                   "label_smoothing": smoothing, **({"ignore_index": ignore} if ignore is not None else {})}
        want = value_and_grad(torch.nn.CrossEntropyLoss(**options), logits, target)
        for loss in (plugin_class(**options), load_loss(out, **options)):
            got = value_and_grad(loss, logits, target)
            case = (shape, soft, weighted, ignore, reduction, smoothing)
            assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1]), case


@pytest.mark.parametrize("table", ["label_table", "by_rows"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_generic_rule_on_ce_equals_cross_entropy(dtype: torch.dtype, table: str) -> None:
    ce = get_family("ce")
    for shape, soft, weighted, ignore, reduction, smoothing in GRID:
        logits, target = make_case(shape, soft, dtype, ignore)
        options = {"weight": WEIGHT.to(dtype) if weighted else None, "reduction": reduction,
                   "label_smoothing": smoothing, **({"ignore_index": ignore} if ignore is not None else {})}
        want = value_and_grad(torch.nn.CrossEntropyLoss(**options), logits, target)
        generic = FamilyLoss(ce.fn, {}, label_table=ce.label_table if table == "label_table" else None, **options)
        got = value_and_grad(generic, logits, target)
        torch.testing.assert_close(got, want, msg=lambda m: f"{(shape, soft, weighted, ignore, reduction)}: {m}")


# --- per-family semantics, from each family's plain index-target loss ----------------------------------
def plain(name: str):
    """The family's per-sample loss of index targets with the test's parameters: [M, C], [M] -> [M]."""
    family, params = get_family(name), dict(random_spec(name).resolved().params)
    return lambda logits, labels: family.fn(logits, labels, **params)


def every_label(name: str, logits: torch.Tensor) -> torch.Tensor:
    """[M, C]: the plain loss of each row under each label, one constant label at a time."""
    fn = plain(name)
    return torch.stack([fn(logits, torch.full((len(logits),), c)) for c in range(logits.shape[1])], dim=1)


@pytest.mark.parametrize("name", ALL)
def test_ignored_rows_contribute_nothing(name: str) -> None:
    logits, target = make_case("2d", False, torch.float64, ignore=-1, seed=1)
    keep = target != -1
    loss = losses.create_loss(random_spec(name), ignore_index=-1)
    per_row = plain(name)(logits[keep], target[keep])
    torch.testing.assert_close(loss(logits, target, reduction="none")[keep], per_row)
    assert torch.all(loss(logits, target, reduction="none")[~keep] == 0)
    torch.testing.assert_close(loss(logits, target), per_row.mean())
    torch.testing.assert_close(loss(logits, target, reduction="sum"), per_row.sum())
    _, grad = value_and_grad(loss, logits, target)
    assert torch.all(grad[~keep] == 0) and torch.isfinite(grad).all()


@pytest.mark.parametrize("name", ALL)
def test_weights_follow_the_weighted_mean_of_cross_entropy(name: str) -> None:
    logits, target = make_case("2d", False, torch.float64, ignore=None, seed=2)
    loss = losses.create_loss(random_spec(name), weight=WEIGHT)
    w = WEIGHT[target]
    per_row = plain(name)(logits, target)
    torch.testing.assert_close(loss(logits, target, reduction="none"), w * per_row)
    torch.testing.assert_close(loss(logits, target), (w * per_row).sum() / w.sum())
    torch.testing.assert_close(loss(logits, target, reduction="sum"), (w * per_row).sum())


@pytest.mark.parametrize("name", SOFT)
def test_one_hot_probability_targets_equal_index_targets(name: str) -> None:
    logits, target = make_case("2d", False, torch.float64, ignore=None, seed=3)
    one_hot = F.one_hot(target, CLASSES).double()
    for options in ({}, {"reduction": "sum"}, {"reduction": "none", "weight": WEIGHT}):
        loss = losses.create_loss(random_spec(name), **options)
        torch.testing.assert_close(value_and_grad(loss, logits, one_hot), value_and_grad(loss, logits, target))


@pytest.mark.parametrize("name", SOFT)
def test_probability_targets_and_smoothing_are_the_expected_loss(name: str) -> None:
    logits, probs = make_case("2d", True, torch.float64, ignore=None, seed=4)
    table = every_label(name, logits)
    loss = losses.create_loss(random_spec(name), reduction="none", weight=WEIGHT)
    torch.testing.assert_close(loss(logits, probs), (WEIGHT * probs * table).sum(1))
    target = probs.argmax(dim=1)
    smooth = losses.create_loss(random_spec(name), label_smoothing=0.3, weight=WEIGHT)
    w = WEIGHT[target]
    rows = 0.7 * w * table.gather(1, target[:, None])[:, 0] + 0.3 / CLASSES * (WEIGHT * table).sum(1)
    torch.testing.assert_close(smooth(logits, target), rows.sum() / w.sum())


@pytest.mark.parametrize("name", SOFT)
def test_label_table_is_the_loss_under_every_label(name: str) -> None:
    family = get_family(name)
    logits, _ = make_case("2d", False, torch.float64, ignore=None, seed=5)
    params = dict(random_spec(name).resolved().params)
    torch.testing.assert_close(family.label_table(logits, **params), every_label(name, logits))
    per_row = {k: torch.linspace(0.3, 0.7, len(logits), dtype=torch.float64) * 0 + v for k, v in params.items()}
    torch.testing.assert_close(family.label_table(logits, **per_row), every_label(name, logits))


@pytest.mark.parametrize("name", ALL)
def test_image_shaped_and_unbatched_inputs_are_rows(name: str) -> None:
    logits, target = make_case("4d", False, torch.float64, ignore=None, seed=6)
    loss = losses.create_loss(random_spec(name), reduction="none")
    rows = plain(name)(logits.movedim(1, -1).reshape(-1, CLASSES), target.reshape(-1))
    got = loss(logits, target)
    assert got.shape == target.shape
    torch.testing.assert_close(got.reshape(-1), rows)
    single, label = make_case("1d", False, torch.float64, ignore=None, seed=7)
    got = loss(single, label)
    assert got.shape == ()
    torch.testing.assert_close(got, plain(name)(single[None], label[None])[0])


@pytest.mark.parametrize("name", ALL)
def test_autocast_computes_in_float32_like_cross_entropy(name: str) -> None:
    logits, target = make_case("2d", False, torch.float32, ignore=None, seed=8)
    low = logits.bfloat16()
    loss = losses.create_loss(random_spec(name))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = loss(low, target)
        assert F.cross_entropy(low, target).dtype == torch.float32  # what CE does
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, loss(low.float(), target))


def test_target_values_are_checked_on_cpu_and_when_asked() -> None:
    loss = losses.create_loss("gce")
    logits, target = make_case("2d", False, torch.float64, ignore=None)
    with pytest.raises(ValueError, match=r"targets must lie in \[0, 4\].*got 7"):
        loss(logits, torch.full_like(target, 7))
    with pytest.raises(ValueError, match="non-negative"):
        losses.create_loss("gce", validate=True)(logits, -F.one_hot(target, CLASSES).double())
    assert torch.isfinite(losses.create_loss("gce", ignore_index=9)(logits, torch.full_like(target, 9), "sum"))


@pytest.mark.parametrize(
    "options,match",
    [({"reduction": "avg"}, "reduction='avg'"), ({"label_smoothing": 1.5}, r"label_smoothing=1.5 must be .*\[0, 1\]"),
     ({"weight": torch.ones(2, 5)}, "weight must be a 1-D"), ({"ignore_index": 1.0}, "ignore_index must be an int")],
    ids=["reduction", "smoothing", "weight-2d", "ignore-float"],
)
def test_bad_options_raise_naming_them(options: dict, match: str) -> None:
    with pytest.raises((TypeError, ValueError), match=match):
        losses.create_loss("ce", **options)


def test_weight_of_the_wrong_length_and_legacy_arguments_raise(ce_plugin: tuple) -> None:
    plugin_class, _ = ce_plugin
    logits, target = make_case("2d", False, torch.float64, ignore=None)
    with pytest.raises(ValueError, match=r"weight has shape \(3,\); expected \(5,\)"):
        losses.create_loss("mae", weight=torch.ones(3, dtype=torch.float64))(logits, target)
    with pytest.raises(ValueError, match="size_average= and reduce= are deprecated"):
        plugin_class(size_average=False)
    probs = F.one_hot(target, CLASSES).double()
    with pytest.raises(RuntimeError, match="ignore_index is not supported for floating point target"):
        F.cross_entropy(logits, probs, ignore_index=2)
    with pytest.raises(ValueError, match="ignore_index=2 is not supported for class-probability targets"):
        losses.create_loss("gce", ignore_index=2)(logits, probs)


@pytest.mark.parametrize("name", ALL)
def test_trainer_loss_objects_are_the_same_implementation(name: str) -> None:
    """The standard trainer's per-step loss (`workers.standard.batch_loss` of its `create_loss` module)
    and the population trainer's per-member loss are the generic rule's default-option value, bit for
    bit (the module's own, except for ``ce``, whose module is F.cross_entropy: equal to rounding)."""
    from evoloss.workers.population.loss import MemberLosses
    from evoloss.workers.standard import batch_loss

    spec = random_spec(name)
    module, family = losses.create_loss(spec), get_family(name)
    generic = FamilyLoss(family.fn, dict(spec.resolved().params), label_table=family.label_table)
    logits, target = make_case("2d", False, torch.float32, ignore=None, seed=9)
    want = value_and_grad(generic, logits, target)
    torch.testing.assert_close(value_and_grad(module, logits, target), want)
    assert all(torch.equal(a, b) for a, b in zip(value_and_grad(batch_loss(module), logits, target), want))
    stacked = torch.stack([logits, logits])
    for grouping in ("family", "member"):
        values = MemberLosses([spec, spec], grouping=grouping)(stacked, target)
        assert torch.equal(values[0], want[0]) and torch.equal(values[1], want[0])


def test_a_family_without_soft_targets_refuses_them_clearly() -> None:
    from evoloss.losses import registry

    def label_only(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return -F.log_softmax(logits, dim=1).gather(1, targets[:, None])[:, 0]

    registry.register_family("_test_label_only", soft_targets=False)(label_only)
    try:
        logits, target = make_case("2d", False, torch.float64, ignore=None)
        loss = losses.create_loss("_test_label_only")
        torch.testing.assert_close(loss(logits, target), F.cross_entropy(logits, target))
        with pytest.raises(ValueError, match="class-probability targets are not supported"):
            loss(logits, F.one_hot(target, CLASSES).double())
        with pytest.raises(ValueError, match="gives label smoothing no meaning"):
            losses.create_loss("_test_label_only", label_smoothing=0.1)
    finally:
        registry.unregister_family("_test_label_only")
