"""Properties every registered loss family must have, parametrised over `list_losses()` so a new family
is picked up automatically: gradcheck, finite values and gradients at the extremes, batch-size
invariance, per-sample parameters, the genome codec, and the plug-in source contract."""
from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch

from evoloss.losses import LossSpec, create_loss, get_family, list_losses

ALL = list_losses()
WITH_PARAMS = [n for n in ALL if get_family(n).dim > 0]
# Batch families (a row's loss reads its batch: `losses.registry`) are not per-sample by design, so the
# per-sample properties below skip them; their own tests check them against their formulas.
PER_SAMPLE = [n for n in ALL if not get_family(n).batch]
PER_SAMPLE_WITH_PARAMS = [n for n in WITH_PARAMS if not get_family(n).batch]
# relative_gce's value is a surrogate (its weights carry no gradient): gradcheck of the value does not
# apply; tests/losses/test_relative_gce.py checks its gradient against the formula instead.
GRADCHECKED = [n for n in ALL if n != "relative_gce"]

EXPECTED_PARAMS = {
    "ce": (), "mae": (), "gce": ("q",), "sce": ("alpha", "beta", "A"), "nce_mae": ("alpha", "beta"),
    "nfl_mae": ("alpha", "beta", "gamma"), "polysoft": ("lam", "d"), "bitempered": ("t1", "t2"),
    "js": ("pi1",), "label_smoothing": ("eps",), "bootstrap": ("beta",), "focal": ("gamma",),
    "taylor": tuple(f"theta{i}" for i in range(12)), "relative_gce": ("q", "a"),
}


def _random_params(name: str, seed: int, dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
    """Interior parameter values: a standard-normal genome decoded (seeded)."""
    fam = get_family(name)
    genome = np.random.default_rng(seed).normal(size=fam.dim)
    return {k: torch.tensor(v, dtype=dtype) for k, v in fam.decode(genome).items()}


def _batch(seed: int, batch: int = 6, classes: int = 4, dtype: torch.dtype = torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, classes, generator=g, dtype=dtype) * 2.0, torch.randint(0, classes, (batch,), generator=g)


def test_registry_holds_every_family_with_the_agreed_parameter_names():
    assert set(EXPECTED_PARAMS) <= set(ALL)
    for name, params in EXPECTED_PARAMS.items():
        assert get_family(name).param_names == params, name


@pytest.mark.parametrize("name", ALL)
def test_function_signature_defaults_match_param_defaults(name):
    fam = get_family(name)
    sig = inspect.signature(fam.fn)
    assert list(sig.parameters)[2:] == (["mask"] if fam.batch else []) + list(fam.param_names)
    for p in fam.params:
        assert sig.parameters[p.name].default == p.default, p.name


@pytest.mark.parametrize("name", ALL)
def test_source_uses_only_torch_math_F_and_its_helpers(name):
    """The plug-in exporter copies fn + helpers: they may reference nothing else at module level."""
    fam = get_family(name)
    allowed = {"torch", "math", "F"} | {h.__name__ for h in fam.code}
    for func in fam.code:  # fn, label_table, native and helpers
        referenced = set(inspect.getclosurevars(func).globals)
        assert referenced <= allowed, (func.__name__, referenced - allowed)
        assert func.__closure__ is None and func.__qualname__ == func.__name__


@pytest.mark.parametrize("name", GRADCHECKED)
def test_gradcheck_logits(name):
    logits, targets = _batch(1)
    params = {k: float(v) for k, v in _random_params(name, 2).items()}
    fn = get_family(name).fn
    logits.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda z: fn(z, targets, **params), (logits,), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", WITH_PARAMS)
def test_gradcheck_scalar_and_per_sample_params(name):
    logits, targets = _batch(3, batch=3)
    fam = get_family(name)
    scalars = _random_params(name, 4)
    names = list(scalars)
    per_sample = {k: v.repeat(logits.shape[0]) + 1e-3 * torch.linspace(-1, 1, logits.shape[0], dtype=v.dtype)
                  for k, v in scalars.items()}
    fam.validate(per_sample)
    for values in (scalars, per_sample):
        inputs = tuple(values[k].clone().requires_grad_(True) for k in names)
        assert torch.autograd.gradcheck(
            lambda *ps: fam.fn(logits, targets, **dict(zip(names, ps))), inputs, eps=1e-6, atol=1e-6
        )


def _extreme_logits(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    logits = torch.tensor(
        [[1e4, -1e4, 0.0], [-1e4, 1e4, 0.0], [40.0, -40.0, 0.0], [-40.0, 40.0, 0.0], [0.0, 0.0, 0.0], [1e4, 1e4, -1e4]],
        dtype=dtype,
    )
    return logits, torch.tensor([0, 0, 0, 0, 1, 1])  # p_y ≈ 1, ≈ 0, ≈ 1, ≈ 0, uniform, tie


def _param_settings(name: str) -> list[dict[str, float]]:
    fam = get_family(name)
    return [fam.defaults(), fam.decode([1e6] * fam.dim), fam.decode([-1e6] * fam.dim), fam.decode([0.0] * fam.dim)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", ALL)
def test_finite_values_and_gradients_at_extremes(name, dtype):
    for setting in _param_settings(name):
        logits, targets = _extreme_logits(dtype)
        logits.requires_grad_(True)
        params = {k: torch.tensor(v, dtype=dtype, requires_grad=True) for k, v in setting.items()}
        out = get_family(name).fn(logits, targets, **params)
        assert out.shape == targets.shape and torch.isfinite(out).all(), (setting, out)
        out.sum().backward()
        assert torch.isfinite(logits.grad).all(), (setting, logits.grad)
        for k, v in params.items():
            assert v.grad is not None and torch.isfinite(v.grad).all(), (k, setting)


@pytest.mark.parametrize("name", PER_SAMPLE)
def test_batch_size_invariance(name):
    logits, targets = _batch(5, batch=11)
    params = _random_params(name, 6)
    per_sample = {k: v + torch.zeros(11, dtype=v.dtype) for k, v in params.items()}
    loss = create_loss(LossSpec(name, per_sample))
    whole = loss(logits, targets)
    parts = []
    for lo, hi in ((0, 4), (4, 5), (5, 11)):
        part = create_loss(LossSpec(name, {k: v[lo:hi] for k, v in per_sample.items()}), reduction="none")
        parts.append(part(logits[lo:hi], targets[lo:hi]))
    torch.testing.assert_close(whole, torch.cat(parts).mean(), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(whole, create_loss(LossSpec(name, params))(logits, targets), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", PER_SAMPLE_WITH_PARAMS)
def test_per_sample_params_equal_separate_scalar_calls(name):
    batch = 5
    logits, targets = _batch(7, batch=batch)
    rows = [_random_params(name, 100 + i) for i in range(batch)]
    stacked = {k: torch.stack([r[k] for r in rows]).requires_grad_(True) for k in rows[0]}
    fn = get_family(name).fn
    together = fn(logits, targets, **stacked)
    separate = torch.cat([fn(logits[i:i + 1], targets[i:i + 1], **{k: float(v) for k, v in rows[i].items()})
                          for i in range(batch)])
    torch.testing.assert_close(together, separate, rtol=1e-12, atol=1e-13)
    zero_d = torch.cat([fn(logits[i:i + 1], targets[i:i + 1], **rows[i]) for i in range(batch)])
    torch.testing.assert_close(together, zero_d, rtol=1e-12, atol=1e-13)
    together.sum().backward()
    for k, v in stacked.items():
        assert v.grad is not None and torch.isfinite(v.grad).all(), k
    assert any(bool((v.grad != 0).any()) for v in stacked.values())


@pytest.mark.parametrize("name", WITH_PARAMS)
def test_codec_round_trip_and_extreme_genomes_stay_valid(name):
    fam = get_family(name)
    decoded = fam.decode(fam.encode(fam.defaults()))
    for k, v in fam.defaults().items():
        assert decoded[k] == pytest.approx(v, rel=1e-9, abs=1e-9), k
    rng = np.random.default_rng(11)
    genomes = [np.full(fam.dim, 1e6), np.full(fam.dim, -1e6), *rng.normal(0, 5, size=(20, fam.dim))]
    genomes.append(np.where(np.arange(fam.dim) % 2 == 0, 1e6, -1e6))
    logits, targets = _batch(8)
    for genome in genomes:
        params = fam.decode(genome)
        fam.validate(params)
        again = fam.decode(fam.encode(params))
        assert all(fam.param(k).contains(v) for k, v in again.items())
        assert torch.isfinite(create_loss(LossSpec(name, params))(logits, targets))


@pytest.mark.parametrize("name", WITH_PARAMS)
def test_out_of_range_parameter_is_rejected_naming_it(name):
    fam = get_family(name)
    for p in fam.params:
        bad = p.high + 1.0 if math.isfinite(p.high) else p.low - 1.0
        with pytest.raises(ValueError, match=p.name):
            create_loss(LossSpec(name, {p.name: bad}))
        with pytest.raises(ValueError, match=p.name):
            create_loss(LossSpec(name, {p.name: torch.tensor([p.default, bad])}))
