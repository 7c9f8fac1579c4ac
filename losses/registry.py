"""The loss-family registry: `LossSpec`, `Param`, `Family`, and the one place families are named.

A *family* is a per-sample loss function ``fn(logits[B, C], targets[B], **params) -> [B]`` plus the
declaration of its parameters (names, valid ranges, defaults) and a genome codec that CMA-ES uses.
Family names are keys in Parquet rows and in exported plug-ins, so they are unique and stable: a
duplicate registration raises, and an unknown name lists the valid ones.

The family-definition contract (built-in families and users' own, `register_family`):

- ``fn(logits [B, C], targets [B], **params) -> [B]``: class-index targets (int64), one loss per row,
  differentiable in ``logits`` and in tensor parameters. Each parameter arrives as a Python float, a
  0-d tensor or a per-row ``[B]`` tensor (`losses.criterion.as_column` turns ``[B]`` into ``[B, 1]``).
  Keep the forward free of host synchronisation (no ``.item()``, ``int(tensor)``, ``torch.unique``,
  Python branches on tensor values) and of host-to-device copies (``torch.tensor(...)`` /
  ``torch.as_tensor(float)`` on the logits' device): the loss then compiles without graph breaks and
  runs inside CUDA graphs.
- ``label_table=`` (optional) ``table(logits [B, C], **params) -> [B, C]`` with entry ``[i, c]`` the
  loss of row i were its label c (``table.gather(1, y) == fn(logits, y)``). Class-probability
  targets and ``label_smoothing`` use it (`losses.criterion`: the expected loss under the target
  distribution); without it ``fn`` is evaluated once per class (C times the work).
- ``native=`` (optional) a function with ``F.cross_entropy``'s signature ``(input, target, weight,
  ignore_index, reduction, label_smoothing, **params)`` used instead of the generic rule (``ce``).
- ``soft_targets=False`` makes probability targets and ``label_smoothing`` a clear error.
- ``batch=True``: a row's loss may depend on the other rows of its batch (a batch statistic, as in
  ``relative_gce``). ``fn(logits [..., B, C], targets [..., B], mask=None, **params) -> [..., B]``:
  each leading index is one batch (the population trainer passes its members' batches as
  ``[g, B, C]``; everything else passes ``[B, C]``); parameters are floats, 0-d tensors or tensors of
  the targets' shape; ``mask`` (None: every row) is a float tensor of the targets' shape, 1 for the
  rows the statistic may read and 0 for rows it must not (``ignore_index`` rows, the compiled step's
  padding). A batch family has no label table and refuses probability targets and label smoothing
  (the loss of a row under another label would change the statistic).
- Portability: ``fn``, ``label_table``, ``native`` and the helpers listed in ``helpers=`` are module-level
  ``def`` functions (or classes) in an importable ``.py`` file, reading only ``torch``, ``math``, ``F``
  (``torch.nn.functional``), ``nn``, builtins, each other and `losses.criterion`'s functions — no module
  constants (write them as literals), closures or other imports: ``losses.plugin`` copies their source
  into the standalone plug-in module, so a user's family exports exactly as a built-in one does.
"""
from __future__ import annotations

import difflib
import fnmatch
import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable, Iterable, Mapping

import numpy as np
import torch

ParamValue = "float | torch.Tensor"

_FAMILIES: dict[str, "Family"] = {}


@dataclass(frozen=True)
class Param:
    """One named loss hyperparameter, its valid range and its genome transform.

    The genome codec maps a real number ``z`` onto the range and back:
    both bounds finite -> ``low + (high - low) * sigmoid(z)``; only ``low`` finite ->
    ``low + softplus(z)``; unbounded -> identity. Open bounds (``low_open``/``high_open``) are kept
    open by nudging decoded values ``margin`` inside them, so decode always lands in the valid range.
    """

    name: str
    default: float
    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    margin: float = 1e-4
    doc: str = ""

    def __post_init__(self) -> None:
        if not self.low < self.high:
            raise ValueError(f"Param {self.name!r}: low={self.low} must be < high={self.high}")
        if not self.contains(self.default):
            raise ValueError(f"Param {self.name!r}: default {self.default} is outside {self.range_text()}")

    # --- range -------------------------------------------------------------------------------
    def range_text(self) -> str:
        lo = "(" if self.low_open else "["
        hi = ")" if self.high_open else "]"
        return f"{lo}{self.low:g}, {self.high:g}{hi}"

    def contains(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def _inner(self) -> tuple[float, float]:
        """The closed interval decode may return (open ends pulled in by `margin`)."""
        lo = self.low + self.margin * (1 if self.low_open else 0) if math.isfinite(self.low) else self.low
        hi = self.high - self.margin * (1 if self.high_open else 0) if math.isfinite(self.high) else self.high
        return lo, hi

    # --- codec -------------------------------------------------------------------------------
    def decode(self, z: float) -> float:
        if not math.isfinite(z):
            raise ValueError(f"genome entry for {self.name!r} is {z}: genomes must be finite real numbers")
        lo, hi = self._inner()
        if math.isfinite(self.low) and math.isfinite(self.high):
            s = 0.5 * (1.0 + math.tanh(0.5 * z))  # sigmoid without overflow
            value = self.low + (self.high - self.low) * s
        elif math.isfinite(self.low):
            value = self.low + (z if z > 30 else math.log1p(math.exp(z)))
        elif math.isfinite(self.high):
            value = self.high - (-z if -z > 30 else math.log1p(math.exp(-z)))
        else:
            value = z
        return float(min(max(value, lo), hi))

    def encode(self, value: float) -> float:
        if not self.contains(value):
            raise ValueError(f"parameter {self.name!r}={value} is outside its valid range {self.range_text()}")
        lo, hi = self._inner()
        value = min(max(value, lo), hi)
        if math.isfinite(self.low) and math.isfinite(self.high):
            s = (value - self.low) / (self.high - self.low)
            s = min(max(s, 1e-12), 1 - 1e-12)
            return float(math.log(s) - math.log1p(-s))
        if math.isfinite(self.low):
            x = max(value - self.low, 1e-12)
            return float(x if x > 30 else math.log(math.expm1(x)))
        if math.isfinite(self.high):
            x = max(self.high - value, 1e-12)
            return float(-(x if x > 30 else math.log(math.expm1(x))))
        return float(value)


@dataclass(frozen=True)
class Family:
    """A registered loss family: its per-sample function, parameters and genome codec."""

    name: str
    fn: Callable[..., torch.Tensor]
    params: tuple[Param, ...] = ()
    helpers: tuple[Callable, ...] = ()
    doc: str = ""
    # Families whose parameters are searched by CMA-ES (all with at least one parameter).
    searchable: bool = True
    # The loss under every label, [B, C] (see the module docstring); None: fn once per class.
    label_table: Callable[..., torch.Tensor] | None = None
    # A full F.cross_entropy-signature implementation replacing the generic rule (ce), or None.
    native: Callable[..., torch.Tensor] | None = None
    # False: class-probability targets and label_smoothing raise (the loss needs the label itself).
    soft_targets: bool = True
    # True: fn reads a statistic of its batch (the module docstring's batch contract).
    batch: bool = False

    @property
    def code(self) -> tuple[Callable, ...]:
        """Everything a standalone plug-in copies for this family: fn, label_table, native, helpers."""
        return tuple(c for c in (self.fn, self.label_table, self.native, *self.helpers) if c is not None)

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    @property
    def dim(self) -> int:
        return len(self.params)

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(unknown_name_message("parameter", name, self.param_names, f"of loss family {self.name!r}"))

    def defaults(self) -> dict[str, float]:
        return {p.name: p.default for p in self.params}

    def encode(self, params: Mapping[str, float]) -> np.ndarray:
        full = self.validate(params)
        return np.array([p.encode(float(full[p.name])) for p in self.params], dtype=np.float64)

    def decode(self, genome: Iterable[float]) -> dict[str, float]:
        z = np.asarray(list(genome), dtype=np.float64).reshape(-1)
        if z.shape[0] != self.dim:
            raise ValueError(
                f"genome for loss family {self.name!r} has {z.shape[0]} entries; expected {self.dim} "
                f"({', '.join(self.param_names)})"
            )
        return {p.name: p.decode(float(v)) for p, v in zip(self.params, z)}

    def validate(self, params: Mapping[str, object], *, fill_defaults: bool = True) -> dict[str, object]:
        """Check names and ranges; return the full parameter dict (defaults filled in).

        Scalars must be finite and inside the range; tensors must be finite and inside the range
        elementwise. Raises ValueError naming the parameter, the value and the valid range.
        """
        unknown = [k for k in params if k not in self.param_names]
        if unknown:
            raise ValueError(unknown_name_message("parameter", unknown[0], self.param_names, f"of loss family {self.name!r}"))
        out: dict[str, object] = {}
        for p in self.params:
            if p.name not in params:
                if not fill_defaults:
                    raise ValueError(f"loss family {self.name!r}: parameter {p.name!r} is missing")
                out[p.name] = p.default
                continue
            v = params[p.name]
            if isinstance(v, torch.Tensor):
                _check_tensor_param(self.name, p, v)
            else:
                if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)):
                    raise TypeError(
                        f"loss family {self.name!r}: parameter {p.name!r} must be a number or a tensor, "
                        f"got {type(v).__name__} {v!r}"
                    )
                v = float(v)
                if not p.contains(v):
                    raise ValueError(
                        f"loss family {self.name!r}: parameter {p.name!r}={v} is outside its valid range "
                        f"{p.range_text()}"
                    )
            out[p.name] = v
        return out


def _check_tensor_param(family: str, p: Param, v: torch.Tensor) -> None:
    if v.dim() > 1:
        raise ValueError(
            f"loss family {family!r}: parameter {p.name!r} has shape {tuple(v.shape)}; "
            "use a scalar or a per-sample tensor of shape [B]"
        )
    with torch.no_grad():
        vd = v.detach()
        if not torch.isfinite(vd).all():
            raise ValueError(f"loss family {family!r}: parameter {p.name!r} has non-finite entries")
        lo_ok = (vd > p.low) if p.low_open else (vd >= p.low)
        hi_ok = (vd < p.high) if p.high_open else (vd <= p.high)
        if not bool((lo_ok & hi_ok).all()):
            raise ValueError(
                f"loss family {family!r}: parameter {p.name!r} has entries outside its valid range "
                f"{p.range_text()} (min {vd.min().item():g}, max {vd.max().item():g})"
            )


def unknown_name_message(kind: str, name: object, valid: Iterable[str], where: str = "") -> str:
    """The error text for an unknown ``kind`` ``name`` (``where`` qualifies it): close matches, valid names."""
    valid = list(valid)
    close = difflib.get_close_matches(str(name), valid, n=3)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    return f"unknown {kind} {name!r}{(' ' + where) if where else ''}.{hint} Valid: {', '.join(valid)}"


def register_family(
    name: str,
    params: Iterable[Param] = (),
    *,
    helpers: Iterable[Callable] = (),
    searchable: bool | None = None,
    label_table: Callable[..., torch.Tensor] | None = None,
    native: Callable[..., torch.Tensor] | None = None,
    soft_targets: bool = True,
    batch: bool = False,
) -> Callable[[Callable[..., torch.Tensor]], Callable[..., torch.Tensor]]:
    """Decorator: register ``fn(logits, targets, **params) -> [B]`` as loss family ``name``.

    ``label_table``, ``native``, ``soft_targets``, ``batch`` and ``helpers``: see the module docstring.

    Raises:
        ValueError: ``name`` is already registered, or is not a lower-case identifier; a ``batch``
            family with a ``label_table`` or ``native`` implementation.
    """

    def deco(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        if not name.replace("_", "").isalnum() or name.lower() != name:  # "_name": private (see list_losses)
            raise ValueError(f"loss family name {name!r} must be lower-case letters, digits and '_'")
        if name in _FAMILIES:
            raise ValueError(f"loss family {name!r} is already registered (by {_FAMILIES[name].fn.__module__})")
        if batch and (label_table is not None or native is not None):
            raise ValueError(f"loss family {name!r}: a batch family has no label_table= or native= (a row's loss "
                             "under another label would change the batch statistic); drop them")
        ps = tuple(params)
        _FAMILIES[name] = Family(
            name=name,
            fn=fn,
            params=ps,
            helpers=tuple(helpers),
            doc=(fn.__doc__ or "").strip(),
            searchable=bool(ps) if searchable is None else searchable,
            label_table=label_table,
            native=native,
            soft_targets=bool(soft_targets) and not batch,
            batch=bool(batch),
        )
        return fn

    return deco


def unregister_family(name: str) -> None:
    """Remove the family ``name`` (e.g. to register a changed version in a notebook, or after a test)."""
    if name not in _FAMILIES:
        raise ValueError(unknown_name_message("loss family", name, sorted(_FAMILIES)))
    del _FAMILIES[name]


def get_family(name: str) -> Family:
    if not isinstance(name, str) or name not in _FAMILIES:
        raise ValueError(unknown_name_message("loss family", name, sorted(_FAMILIES)))
    return _FAMILIES[name]


def list_losses(pattern: str = "*", *, include_private: bool = False) -> list[str]:
    """Registered family names matching a glob ``pattern``, sorted.

    Names that start with ``_`` are private (test fixtures, experiments): they can be created by
    name but are listed only with ``include_private=True``, so registry-wide loops (tests, reports,
    the CLI's valid-name lists) see the product's families only.
    """
    return sorted(n for n in _FAMILIES
                  if fnmatch.fnmatch(n, pattern) and (include_private or not n.startswith("_")))


@dataclass(frozen=True)
class LossSpec:
    """An immutable loss description: a family name and its named parameters.

    Parameters are floats (searched, exported) or tensors (per-sample ``[B]`` or 0-d, used by the
    meta-learned trainers). Missing parameters take the family's defaults in `create_loss`.
    """

    family: str
    params: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    def resolved(self) -> "LossSpec":
        """The same spec with every default written out (validated)."""
        return LossSpec(self.family, get_family(self.family).validate(self.params))

    def to_dict(self) -> dict:
        out = {}
        for k, v in self.params.items():
            if isinstance(v, torch.Tensor):
                raise TypeError(f"LossSpec.to_dict: parameter {k!r} is a tensor; only float parameters serialise")
            out[k] = float(v)
        return {"family": self.family, "params": out}

    @classmethod
    def from_dict(cls, d: Mapping) -> "LossSpec":
        if not isinstance(d, Mapping) or "family" not in d:
            raise ValueError(f"a loss spec must be a mapping with 'family' (and 'params'); got {d!r}")
        params = d.get("params", {})
        if not isinstance(params, Mapping):
            raise ValueError(f"loss spec 'params' must be a mapping of name -> number; got {params!r}")
        return cls(str(d["family"]), dict(params))

    def __hash__(self) -> int:  # hashable when all params are floats
        return hash((self.family, tuple(sorted((k, float(v)) for k, v in self.params.items()))))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LossSpec):
            return NotImplemented
        return self.family == other.family and dict(self.params) == dict(other.params)
