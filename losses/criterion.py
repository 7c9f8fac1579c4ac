"""The ``nn.CrossEntropyLoss`` contract of every evoloss loss module — the one implementation.

A loss family is a per-sample function ``fn(logits [M, C], targets [M], **params) -> [M]`` of class
indices (`losses.registry`); a *batch* family (``batch=True``: a row's loss reads its batch) is also
given ``mask=`` — 1 for the kept rows, 0 for ``ignore_index`` rows — so its statistic skips them.
`family_criterion` / `FamilyLoss` make it a drop-in for ``nn.CrossEntropyLoss``: the same constructor
arguments (``weight``, ``ignore_index``, ``reduction``, ``label_smoothing``) and call forms. The same
code serves `losses.create_loss` / `losses.load_loss` modules (`losses.module.Loss` subclasses
`FamilyLoss`), the trainers' loss objects and the generated standalone plug-ins, which copy this
module's functions verbatim (`CRITERION_CODE`).

Shapes: ``input`` is ``[C]`` (one sample; target a 0-d index or ``[C]`` probabilities), ``[N, C]`` or
``[N, C, d1, …]`` (target ``[N, d1, …]`` indices or ``[N, C, d1, …]`` probabilities). Rows are
flattened to ``[M, C]``, classes last; ``reduction="none"`` gives the target's index shape back.

With ``L[i, c] = ℓ(logits_i, c)`` — the loss of row i were its label c (the family's ``label_table``,
else ``fn`` evaluated once per class, C times the work) — class weights ``w`` (ones when None) and
``ε = label_smoothing``, a family's loss is its expected loss under the (smoothed) target
distribution, weighted as ``nn.CrossEntropyLoss`` weights (aten ``cross_entropy_loss_label_smoothing``
and the probability-target path):

    index targets y:    v_i = (1 − ε)·w_{y_i}·ℓ(logits_i, y_i) + (ε/C)·Σ_c w_c·L[i, c]
                        (v_i = 0 where y_i = ignore_index);  mean = Σ_i v_i / Σ_{i kept} w_{y_i}
    probabilities t:    v_i = Σ_c w_c·((1 − ε)·t_ic + ε/C)·L[i, c];  mean = Σ_i v_i / M
                        (as in CE, the weights do not divide here; an ignore_index ≥ 0 raises)
    sum = Σ_i v_i;  none = v reshaped to the target's shape.

For ``ce`` (``L = −log softmax``) these are PyTorch's formulas; the ``ce`` family passes ``native=``
(``F.cross_entropy`` itself), so its plug-in equals ``nn.CrossEntropyLoss`` exactly. A family
registered with ``soft_targets=False`` refuses probability targets and ``label_smoothing`` (a clear
ValueError); the adjusted loss refuses probability targets (its input is the labelled class's logit
margin) and gives label smoothing the base family's meaning with each row's hyperparameters.

No host synchronisation in the forward: shape and dtype checks are static; target *values* are
checked (`check_target_values`) only when ``validate`` is True, or, with ``validate=None`` (default),
for CPU targets outside ``torch.compile`` — so the forward has no ``.item()``, no data-dependent shape
and no host-to-device copy (zero graph breaks under ``torch._dynamo.explain``; capturable in CUDA
graphs). Under autocast, float16/bfloat16 logits are computed in float32, as ``F.cross_entropy`` is.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["CRITERION_CODE", "FamilyLoss", "as_column", "as_param", "check_criterion_options", "check_target_values",
           "family_criterion", "flatten_classes", "label_table_by_rows", "reduce_terms", "weighted_terms"]


def as_column(value: object) -> object:
    """A per-row parameter ``[M]`` as a column ``[M, 1]`` (broadcasts over classes); anything else unchanged."""
    if isinstance(value, torch.Tensor) and value.dim() == 1:
        return value.unsqueeze(1)
    return value


def as_param(value: object, like: torch.Tensor) -> torch.Tensor:
    """A parameter as a tensor of ``like``'s dtype and device; a float is filled in on the device
    (``new_full``: no host-to-device copy, so CUDA-graph capture and compilation keep working)."""
    if isinstance(value, torch.Tensor):
        return value.to(dtype=like.dtype, device=like.device)
    return like.new_full((), value)


def check_criterion_options(weight: object, size_average: object, reduce: object, reduction: object,
                            label_smoothing: object, soft_targets: bool = True, family: str = "") -> None:
    """Raise a ValueError/TypeError naming the constructor argument that ``nn.CrossEntropyLoss`` would refuse."""
    where = f"loss {family!r}: " if family else ""
    if size_average is not None or reduce is not None:
        raise ValueError(f"{where}size_average= and reduce= are deprecated in nn.CrossEntropyLoss and not "
                         "supported here; use reduction='mean' | 'sum' | 'none'")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"{where}reduction={reduction!r} is not one of ('mean', 'sum', 'none')")
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float)) \
            or not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{where}label_smoothing={label_smoothing!r} must be a number in [0, 1]")
    if label_smoothing > 0.0 and not soft_targets:
        raise ValueError(f"{where}label_smoothing={label_smoothing!r}: this loss needs the labelled class "
                         "itself and gives label smoothing no meaning; use label_smoothing=0.0")
    if weight is not None:
        if not isinstance(weight, torch.Tensor) or weight.dim() != 1 or not weight.is_floating_point():
            raise ValueError(f"{where}weight must be a 1-D floating-point tensor with one entry per class; "
                             f"got {type(weight).__name__} {getattr(weight, 'shape', '')}")


def flatten_classes(input: torch.Tensor, target: torch.Tensor, family: str = "") -> tuple:
    """``(logits [M, C], target rows, soft, shape)``: rows with classes last, static checks only.

    ``target rows`` are indices ``[M]`` or probabilities ``[M, C]`` (``soft``); ``shape`` is what
    ``reduction="none"`` returns. No value is read, so nothing synchronises with the device.
    """
    where = f"loss {family!r}: " if family else ""
    if not isinstance(input, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise TypeError(f"{where}loss inputs must be tensors; got input={type(input).__name__}, "
                        f"target={type(target).__name__}")
    if not input.is_floating_point():
        raise TypeError(f"{where}input (logits) must be a floating-point tensor; got dtype {input.dtype}")
    if input.dim() == 0:
        raise ValueError(f"{where}input must have shape [C], [N, C] or [N, C, d1, ...]; got a 0-d tensor")
    class_dim = 0 if input.dim() == 1 else 1
    classes = input.shape[class_dim]
    if classes < 2:
        raise ValueError(f"{where}input must have at least 2 classes (dimension {class_dim}); got {tuple(input.shape)}")
    index_shape = input.shape[:class_dim] + input.shape[class_dim + 1:]
    logits = input.movedim(class_dim, -1).reshape(-1, classes)
    soft = target.is_floating_point()
    if soft:
        if target.shape != input.shape:
            raise ValueError(f"{where}class-probability targets must have the input's shape {tuple(input.shape)}; "
                             f"got {tuple(target.shape)}")
        return logits, target.movedim(class_dim, -1).reshape(-1, classes), True, index_shape
    if target.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise TypeError(f"{where}targets must be integer class indices (int64) or floating-point class "
                        f"probabilities; got dtype {target.dtype}")
    if target.shape != index_shape:
        raise ValueError(f"{where}targets must have shape {tuple(index_shape)} (class indices) or "
                         f"{tuple(input.shape)} (class probabilities) for input {tuple(input.shape)}; "
                         f"got {tuple(target.shape)}")
    return logits, target.reshape(-1).long(), False, index_shape


def check_target_values(target: torch.Tensor, soft: bool, classes: int, ignore_index: int, family: str = "") -> None:
    """Raise a ValueError for index targets outside [0, C) (``ignore_index`` aside) or negative
    probabilities. Reads values: a host synchronisation on an accelerator (see `family_criterion`)."""
    where = f"loss {family!r}: " if family else ""
    if target.numel() == 0:
        return
    if soft:
        if not bool(torch.isfinite(target).all()) or bool((target < 0).any()):
            raise ValueError(f"{where}class-probability targets must be finite and non-negative")
        return
    low, high = torch.aminmax(target)  # one pass; the masked check only when something lies outside
    if int(low) >= 0 and int(high) < classes:
        return
    bad = (target != ignore_index) & ((target < 0) | (target >= classes))
    if bool(bad.any()):
        first = int(target[bad][0])
        raise ValueError(f"{where}targets must lie in [0, {classes - 1}] for {classes} classes (or equal "
                         f"ignore_index={ignore_index}); got {first}")


def label_table_by_rows(fn, logits: torch.Tensor, params: dict) -> torch.Tensor:
    """``L [M, C]``, ``L[i, c] = fn(logits_i, c)``: ``fn`` on every (row, class) pair (C times the work)."""
    rows, classes = logits.shape
    labels = torch.arange(classes, device=logits.device).repeat(rows)
    expanded = {k: v.repeat_interleave(classes) if isinstance(v, torch.Tensor) and v.dim() == 1 else v
                for k, v in params.items()}
    return fn(logits.repeat_interleave(classes, dim=0), labels, **expanded).reshape(rows, classes)


def weighted_terms(fn, params, logits: torch.Tensor, target: torch.Tensor, soft: bool, weight, ignore_index: int,
                   label_smoothing: float, label_table=None, batch: bool = False) -> tuple:
    """``(v [M], denominator)`` of the module docstring's rules; ``denominator`` None means M.

    ``params`` is a dict, or a function of ``(logits [M, C], class indices [M])`` giving it (the
    adjusted loss's per-row hyperparameters). ``batch``: ``fn`` is a batch family, given
    ``mask=`` (1 for the kept rows, 0 for ``ignore_index`` rows) so its statistic skips ignored rows.
    """
    classes = logits.shape[1]
    weight = None if weight is None else weight.to(logits.dtype)
    if soft:
        table = label_table(logits, **params) if label_table is not None else label_table_by_rows(fn, logits, params)
        mass = target.to(logits.dtype)
        if label_smoothing > 0.0:
            mass = mass * (1.0 - label_smoothing) + label_smoothing / classes
        if weight is not None:
            mass = mass * weight
        return (mass * table).sum(dim=1), None
    keep = target != ignore_index
    safe = torch.where(keep, target, torch.zeros_like(target))
    values = params(logits, safe) if callable(params) else params
    row_weight = None if weight is None else weight.index_select(0, safe)
    if label_smoothing > 0.0:
        table = label_table(logits, **values) if label_table is not None else label_table_by_rows(fn, logits, values)
        own = table.gather(1, safe.unsqueeze(1)).squeeze(1)
        spread = (table if weight is None else table * weight).sum(dim=1)
        own = own if row_weight is None else own * row_weight
        terms = (1.0 - label_smoothing) * own + (label_smoothing / classes) * spread
    else:
        mask = {"mask": keep.to(logits.dtype)} if batch else {}  # a batch family's statistic skips ignored rows
        terms = fn(logits, safe, **mask, **values)
        terms = terms if row_weight is None else terms * row_weight
    terms = torch.where(keep, terms, torch.zeros_like(terms))
    if row_weight is None:
        return terms, keep.sum()
    return terms, torch.where(keep, row_weight, torch.zeros_like(row_weight)).sum()


def reduce_terms(terms: torch.Tensor, denominator, reduction: str, shape) -> torch.Tensor:
    """``reduction`` of the per-row terms: their sum, sum / denominator (``mean``) or ``terms`` in ``shape``."""
    if reduction == "none":
        return terms.reshape(shape)
    total = terms.sum()
    if reduction == "sum":
        return total
    return total / (terms.shape[0] if denominator is None else denominator)


def family_criterion(fn, params, input: torch.Tensor, target: torch.Tensor, weight=None, ignore_index: int = -100,
                     reduction: str = "mean", label_smoothing: float = 0.0, *, label_table=None, native=None,
                     soft_targets: bool = True, validate=None, family: str = "", batch: bool = False) -> torch.Tensor:
    """The loss of family ``fn`` (with ``params``) under ``F.cross_entropy``'s arguments (module docstring).

    ``native`` (a function with ``F.cross_entropy``'s signature plus ``**params``) replaces the
    generic rule; ``validate``: True (check target values; a host sync on accelerators), False
    (never), None (only for CPU targets outside ``torch.compile``).
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction={reduction!r} is not one of ('mean', 'sum', 'none')")
    logits, rows, soft, shape = flatten_classes(input, target, family)
    classes = logits.shape[1]
    if weight is not None and weight.shape != (classes,):
        raise ValueError(f"loss {family!r}: weight has shape {tuple(weight.shape)}; expected ({classes},), "
                         "one per class")
    if soft and not soft_targets:
        raise ValueError(f"loss {family!r}: class-probability targets are not supported (the loss needs the "
                         "labelled class itself); pass class indices")
    if soft and ignore_index >= 0:
        raise ValueError(f"loss {family!r}: ignore_index={ignore_index} is not supported for class-probability "
                         "targets (as in nn.CrossEntropyLoss); leave it at -100")
    if validate or (validate is None and rows.device.type == "cpu" and not torch.compiler.is_compiling()):
        check_target_values(rows, soft, classes, ignore_index, family)
    if native is not None:
        return native(input, target, weight, ignore_index, reduction, label_smoothing, **params)
    if torch.is_autocast_enabled(logits.device.type):
        with torch.autocast(logits.device.type, enabled=False):  # computed in float32, as F.cross_entropy is
            wide = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
            terms, denominator = weighted_terms(fn, params, wide, rows, soft, weight, ignore_index,
                                                label_smoothing, label_table, batch)
            return reduce_terms(terms, denominator, reduction, shape)
    terms, denominator = weighted_terms(fn, params, logits, rows, soft, weight, ignore_index, label_smoothing,
                                        label_table, batch)
    return reduce_terms(terms, denominator, reduction, shape)


class FamilyLoss(nn.Module):
    """A per-sample loss family as an ``nn.CrossEntropyLoss`` drop-in (see `family_criterion`).

    ``FamilyLoss(fn, params, weight=None, size_average=None, ignore_index=-100, reduce=None,
    reduction="mean", label_smoothing=0.0, *, label_table=None, native=None, soft_targets=True,
    validate=None, family="", batch=False)``; ``weight`` is a buffer (it follows ``.to(device)``), as in CE.
    ``forward(input, target, reduction=None)``: ``reduction`` overrides the constructor's for one call.
    """

    def __init__(self, fn, params=None, weight=None, size_average=None, ignore_index: int = -100, reduce=None,
                 reduction: str = "mean", label_smoothing: float = 0.0, *, label_table=None, native=None,
                 soft_targets: bool = True, validate=None, family: str = "", batch: bool = False) -> None:
        super().__init__()
        check_criterion_options(weight, size_average, reduce, reduction, label_smoothing, soft_targets, family)
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
            raise TypeError(f"loss {family!r}: ignore_index must be an int; got {ignore_index!r}")
        if validate is not None and not isinstance(validate, bool):
            raise TypeError(f"loss {family!r}: validate must be True, False or None; got {validate!r}")
        self.fn, self.params, self.label_table, self.native = fn, dict(params or {}), label_table, native
        self.register_buffer("weight", weight)
        self.ignore_index, self.reduction, self.label_smoothing = ignore_index, reduction, float(label_smoothing)
        self.soft_targets, self.validate, self.family_name, self.batch = soft_targets, validate, family, batch

    def forward(self, input: torch.Tensor, target: torch.Tensor, reduction: str | None = None) -> torch.Tensor:
        return family_criterion(self.fn, self.params, input, target, self.weight, self.ignore_index,
                                self.reduction if reduction is None else reduction, self.label_smoothing,
                                label_table=self.label_table, native=self.native, soft_targets=self.soft_targets,
                                validate=self.validate, family=self.family_name, batch=self.batch)

    def extra_repr(self) -> str:
        shown = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}=tensor{tuple(v.shape)}"
                          if isinstance(v, torch.Tensor) else f"{k}={v!r}" for k, v in self.params.items())
        options = [f"family={self.family_name!r}", shown, f"reduction={self.reduction!r}"]
        if self.ignore_index != -100:
            options.append(f"ignore_index={self.ignore_index}")
        if self.label_smoothing:
            options.append(f"label_smoothing={self.label_smoothing:g}")
        return ", ".join(x for x in options if x)


CRITERION_CODE = (as_column, as_param, check_criterion_options, flatten_classes, check_target_values,
                  label_table_by_rows, weighted_terms, reduce_terms, family_criterion, FamilyLoss)
"""What every standalone plug-in copies from here (`losses.plugin.source.portable_sources`)."""
