from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from evoloss.losses import LossSpec, Param, create_loss, get_family, list_losses, register_family


def test_duplicate_name_raises():
    with pytest.raises(ValueError, match="already registered"):
        register_family("ce")(lambda logits, targets: logits[:, 0])


def test_unknown_name_lists_valid():
    with pytest.raises(ValueError, match=r"unknown loss family 'cee'.*Did you mean 'ce'.*Valid:"):
        get_family("cee")


def test_list_losses_pattern():
    assert "ce" in list_losses()
    assert list_losses("c*") == [n for n in list_losses() if n.startswith("c")]


def test_param_codec_bounded_open_ranges():
    p = Param("q", default=0.7, low=0.0, high=1.0, low_open=True)
    for z in (-1e6, -50.0, -1.0, 0.0, 3.0, 1e6):
        v = p.decode(z)
        assert p.contains(v), (z, v)
    for v in (0.01, 0.3, 0.7, 0.99):
        assert p.decode(p.encode(v)) == pytest.approx(v, rel=1e-9)
    with pytest.raises(ValueError, match="finite"):
        p.decode(math.nan)
    with pytest.raises(ValueError, match="outside"):
        p.encode(0.0)


def test_param_codec_half_and_unbounded():
    p = Param("d", default=2.0, low=1.0, low_open=True)
    for z in (-1e6, 0.0, 1e6):
        assert p.contains(p.decode(z))
    assert p.decode(p.encode(3.5)) == pytest.approx(3.5)
    u = Param("theta", default=0.0)
    assert u.decode(1e6) == 1e6 and u.encode(-2.5) == -2.5


def test_create_loss_ce_matches_torch():
    torch.manual_seed(0)
    logits = torch.randn(5, 3, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 1, 0])
    loss = create_loss(LossSpec("ce"))
    ref = torch.nn.functional.cross_entropy(logits, y)
    assert torch.allclose(loss(logits, y), ref)
    assert loss(logits, y, reduction="none").shape == (5,)


@pytest.mark.parametrize(
    "logits,targets,match",
    [
        (torch.randn(4), torch.zeros(4, dtype=torch.long), r"targets must have shape \(\) \(class indices\)"),
        (torch.randn(4, 3), torch.zeros(5, dtype=torch.long), "targets must have shape"),
        (torch.randn(4, 3), torch.zeros(4), r"class-probability targets must have the input's shape \(4, 3\)"),
        (torch.randn(4, 3), torch.zeros(4, dtype=torch.bool), "integer class indices"),
        (torch.tensor(1.0), torch.zeros((), dtype=torch.long), r"shape \[C\], \[N, C\] or \[N, C, d1, ...\]"),
        (torch.randn(4, 3), torch.full((4,), 3), r"targets must lie in \[0, 2\]"),
        (torch.randn(4, 1), torch.zeros(4, dtype=torch.long), "at least 2 classes"),
        (torch.randint(0, 3, (4, 3)), torch.zeros(4, dtype=torch.long), "floating-point"),
    ],
)
def test_bad_tensors_raise_clearly(logits, targets, match):
    with pytest.raises((ValueError, TypeError), match=match):
        create_loss("ce")(logits, targets)


def test_spec_roundtrip_and_hash():
    s = LossSpec("ce", {})
    assert LossSpec.from_dict(s.to_dict()) == s
    assert hash(s) == hash(LossSpec("ce"))
    with pytest.raises(ValueError, match="mapping"):
        LossSpec.from_dict({"params": {}})
    assert np.asarray(get_family("ce").encode({})).shape == (0,)


def test_private_families_are_creatable_but_not_listed(monkeypatch):
    from evoloss.losses import registry

    monkeypatch.setitem(registry._FAMILIES, "_probe", registry.Family("_probe", fn=lambda logits, targets: logits[:, 0]))
    assert "_probe" not in list_losses() and "_probe" in list_losses(include_private=True)
    assert get_family("_probe").name == "_probe"
