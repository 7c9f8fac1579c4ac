"""Differentiable maps from an unconstrained real onto a loss parameter's valid range.

Meta-learned hyperparameters must stay inside their family's range while their gradients flow,
so they are bounded by parameterisation, never by ``clamp`` (clamp kills
meta-gradients). The range comes from the family's registered `losses.Param`; open ends are
pulled inside by the parameter's ``margin`` so that a saturated sigmoid or an underflowing
softplus still lands strictly inside (e.g. PolySoft's d > 1 never reaches d = 1).

    both ends finite:  value = lo + (hi − lo) · σ(z)
    only lo finite:    value = lo + softplus(z)
    only hi finite:    value = hi − softplus(−z)
    unbounded:         value = z

`Bounds.project` is the other way to stay inside: the Euclidean projection onto ``[low, high]``
applied *after* a step taken directly on the value (shu Eq. 8 on Λ itself, `workers.meta.adaptive`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from evoloss.losses import Param


@dataclass(frozen=True)
class Bounds:
    """The closed interval a learned parameter lives in (open family bounds already pulled in)."""

    name: str
    low: float = -math.inf
    high: float = math.inf

    def __post_init__(self) -> None:
        if not self.low < self.high:
            raise ValueError(f"Bounds for {self.name!r}: low={self.low} must be < high={self.high}")

    @classmethod
    def of(cls, param: Param) -> "Bounds":
        """The inner interval of a family parameter: open ends moved ``param.margin`` inside."""
        low = param.low + (param.margin if param.low_open else 0.0) if math.isfinite(param.low) else -math.inf
        high = param.high - (param.margin if param.high_open else 0.0) if math.isfinite(param.high) else math.inf
        return cls(param.name, low, high)

    @property
    def width(self) -> float:
        return self.high - self.low

    def value(self, z: torch.Tensor) -> torch.Tensor:
        """The parameter value for raw ``z`` (elementwise, differentiable, always inside)."""
        if math.isfinite(self.low) and math.isfinite(self.high):
            return self.low + self.width * torch.sigmoid(z)
        if math.isfinite(self.low):
            return self.low + F.softplus(z)
        if math.isfinite(self.high):
            return self.high - F.softplus(-z)
        return z

    def check(self, value: float) -> float:
        """``value`` as a float after checking it is finite and inside ``[low, high]`` (ValueError otherwise)."""
        if not math.isfinite(value):
            raise ValueError(f"initial value of {self.name!r} is {value}; it must be a finite number")
        if not self.low <= value <= self.high:
            raise ValueError(
                f"initial value {self.name}={value} is outside the learnable range [{self.low:g}, {self.high:g}]"
            )
        return float(value)

    def project(self, value: torch.Tensor) -> torch.Tensor:
        """The nearest point of ``[low, high]`` to ``value`` (in place on a leaf, under ``no_grad``)."""
        low = self.low if math.isfinite(self.low) else None
        high = self.high if math.isfinite(self.high) else None
        if low is None and high is None:
            return value
        with torch.no_grad():
            return value.clamp_(min=low, max=high)

    def raw(self, value: float) -> float:
        """The raw ``z`` whose `value` is ``value`` (inverse map; values at a bound are nudged inside)."""
        if not math.isfinite(value):
            raise ValueError(f"initial value of {self.name!r} is {value}; it must be a finite number")
        if not self.low <= value <= self.high:
            raise ValueError(
                f"initial value {self.name}={value} is outside the learnable range [{self.low:g}, {self.high:g}]"
            )
        if math.isfinite(self.low) and math.isfinite(self.high):
            s = min(max((value - self.low) / self.width, 1e-6), 1 - 1e-6)
            return math.log(s) - math.log1p(-s)
        if math.isfinite(self.low):
            return _softplus_inverse(max(value - self.low, 1e-6))
        if math.isfinite(self.high):
            return -_softplus_inverse(max(self.high - value, 1e-6))
        return float(value)


def _softplus_inverse(x: float) -> float:
    """z with softplus(z) = x > 0."""
    return x if x > 30 else math.log(math.expm1(x))
