"""`MetaTrainer`: the `Trainer` protocol for meta-learned methods (options, specs, one run per spec).

Every meta trainer takes the same keyword options (``create_trainer(name, **options)``):

- ``lookahead``: ``"sgd"`` (plain virtual step, default) or ``"optimizer"`` (live SGD momentum and
  weight decay; SGD-trained architectures only);
- ``head_only``: virtually update only the classifier head (≈1.4× a plain step instead of 3–7×);
- ``meta_every``: T_meta, meta step every that many steps (default: the method's, 1 except NARL's 10);
- ``meta_batch_size``: meta mini-batch size (default: the budget's batch size, capped at the meta set);
- ``max_steps``: cap on optimiser steps (the run ends after the epoch that reaches it);
  ``eval_every``: evaluate every that many epochs; ``deterministic``: as the standard trainer;

plus the method's own options (documented on each trainer class).
"""
from __future__ import annotations

import abc
from typing import Sequence

from evoloss.losses import LossSpec, get_family
from evoloss.workers.meta.lookahead import LookaheadConfig
from evoloss.workers.meta.method import MetaMethod
from evoloss.workers.meta.training import RunOptions, fit_runs
from evoloss.workers.records import EvalRecord
from evoloss.workers.task import Task, TaskData


class MetaTrainer(abc.ABC):
    """Base of the meta-learned trainers: shared options, spec handling and `fit`."""

    name: str = ""
    default_every: int = 1

    def __init__(
        self,
        *,
        lookahead: str = "sgd",
        head_only: bool = False,
        meta_every: int | None = None,
        meta_batch_size: int | None = None,
        max_steps: int | None = None,
        eval_every: int = 1,
        deterministic: bool = True,
    ) -> None:
        self.lookahead = LookaheadConfig(
            mode=lookahead, head_only=head_only, every=self.default_every if meta_every is None else meta_every
        )
        self.options = RunOptions(meta_batch_size=meta_batch_size, max_steps=max_steps, eval_every=eval_every,
                                  deterministic=deterministic)

    def fit(
        self, task: Task, specs: Sequence[LossSpec], device: str = "cpu", data: TaskData | None = None
    ) -> list[EvalRecord]:
        """One run (and one `EvalRecord`) per spec; see `resolve_specs` for what the specs mean."""
        resolved = self.resolve_specs(specs)
        methods = [self.make_method(spec) for spec in resolved]  # validates every spec before training
        return fit_runs(self.name, task, resolved, methods, device=device, data=data, options=self.options)

    def resolve_specs(self, specs: Sequence[LossSpec]) -> list[LossSpec]:
        """The specs to run: as given (validated), or the default spec when none is given."""
        specs = list(specs)
        for spec in specs:
            if not isinstance(spec, LossSpec):
                raise TypeError(f"trainer {self.name!r}: specs must be LossSpec objects; got {type(spec).__name__}")
            get_family(spec.family).validate(spec.params)
        return specs or [self.default_spec()]

    def default_spec(self) -> LossSpec:
        """The spec used when ``fit`` gets none: cross entropy as the base loss."""
        return LossSpec("ce")

    @abc.abstractmethod
    def make_method(self, spec: LossSpec) -> MetaMethod:
        """The method object of one run with ``spec``."""


def require_float_params(trainer: str, spec: LossSpec) -> dict[str, float]:
    """The spec's parameters with defaults filled in, all plain floats (tensors are refused)."""
    full = get_family(spec.family).validate(spec.params)
    for name, value in full.items():
        if not isinstance(value, float):
            raise TypeError(
                f"trainer {trainer!r}: parameter {name!r} of {spec.family!r} must be a float, got "
                f"{type(value).__name__}; meta trainers learn tensor-valued parameters themselves"
            )
    return dict(full)
