"""`MetaTrainer`: the `Trainer` protocol for meta-learned methods (options, specs, one run per spec).

Every meta trainer takes the same keyword options (``create_trainer(name, **options)``):

- ``lookahead``: ``"sgd"`` (plain virtual step, default) or ``"optimizer"`` (live SGD momentum and
  weight decay; SGD-trained architectures only);
- ``head_only``: virtually update only the classifier head (≈1.4× a plain step instead of 3–7×);
- ``meta_every``: T_meta, meta step every that many steps (default: the method's, 1 except NARL's 10);
- ``meta_batch_size``: meta mini-batch size (default: the budget's batch size, capped at the meta set);
- ``max_steps``: cap on optimiser steps (the run ends after the epoch that reaches it);
  ``eval_every``: evaluate every that many epochs; ``deterministic``: as the standard trainer;
- ``meta_source``: ``"meta"`` (the task's clean meta split, default) or ``"val"`` (the clean
  validation split is the meta set: equal-clean-budget compares);
- ``protocol``: ``"default"`` (the task's budget) or ``"paper"`` (the method's paper's optimiser,
  schedule, clipping, warm-up and meta optimiser, `workers.meta.paper_protocols`); every record
  carries ``protocol`` and ``clean_labels_used`` (its meta set's size; 0 for a method without one);

plus the method's own options (documented on each trainer class).
"""
from __future__ import annotations

import abc
from typing import Sequence

from evoloss.losses import LossSpec, get_family
from evoloss.workers.meta.lookahead import LookaheadConfig
from evoloss.workers.meta.method import MetaMethod
from evoloss.workers.meta.paper_protocols import PaperProtocol, check_protocol, merge_method_options, paper_protocol
from evoloss.workers.meta.training import RunOptions, fit_runs
from evoloss.workers.records import EvalRecord
from evoloss.workers.task import Task, TaskData


class MetaTrainer(abc.ABC):
    """Base of the meta-learned trainers: shared options, spec handling and `fit`."""

    name: str = ""
    default_every: int = 1
    paper_key: str = ""  # row of `paper_protocols.PAPER_PROTOCOLS`

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
        meta_source: str = "meta",
        protocol: str = "default",
    ) -> None:
        self.protocol = check_protocol(protocol)
        self.paper: PaperProtocol | None = paper_protocol(self.paper_key) if protocol == "paper" else None
        if self.paper is not None and lookahead != self.paper.lookahead:
            if lookahead != "sgd":
                raise ValueError(f"trainer {self.name!r}: protocol='paper' looks ahead with "
                                 f"{self.paper.lookahead!r} ({self.paper.paper}); drop lookahead={lookahead!r} "
                                 "or use protocol='default'")
            lookahead = self.paper.lookahead
        self.lookahead = LookaheadConfig(
            mode=lookahead, head_only=head_only, every=self.default_every if meta_every is None else meta_every
        )
        milestones = tuple(float(f) for f in self.paper.milestones) if self.paper else ()
        self.options = RunOptions(meta_batch_size=meta_batch_size, max_steps=max_steps, eval_every=eval_every,
                                  deterministic=deterministic, meta_source=meta_source, protocol=protocol,
                                  lr_milestones=milestones, lr_gamma=self.paper.gamma if self.paper else 1.0)

    def protocol_options(self, given: dict[str, object], defaults: dict[str, object]) -> dict[str, object]:
        """The method options ``given`` with the paper protocol's values filled in (``protocol="paper"``)."""
        return dict(given) if self.paper is None else merge_method_options(self.name, self.paper, given, defaults)

    def protocol_task(self, task: Task) -> Task:
        """``task`` with the paper protocol's budget (``protocol="paper"``), else unchanged."""
        return task if self.paper is None else self.paper.task(task)

    def stamp(self, records: list[EvalRecord]) -> list[EvalRecord]:
        """Write the protocol settings used into every record's ``extra`` (``protocol`` is set by the run)."""
        for record in records:
            record.protocol = self.protocol
            if self.paper is not None:
                record.extra["protocol_settings"] = self.paper.as_dict()
        return records

    def fit(
        self, task: Task, specs: Sequence[LossSpec], device: str = "cpu", data: TaskData | None = None
    ) -> list[EvalRecord]:
        """One run (and one `EvalRecord`) per spec; see `resolve_specs` for what the specs mean."""
        resolved = self.resolve_specs(specs)
        methods = [self.make_method(spec) for spec in resolved]  # validates every spec before training
        return self.stamp(fit_runs(self.name, self.protocol_task(task), resolved, methods, device=device,
                                   data=data, options=self.options))

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
