"""The inner-trainer interface and its registry.

A trainer trains networks on one `Task` with one or more candidate losses and returns one
`EvalRecord` per candidate, in order: ``fit(task, specs, device) -> list[EvalRecord]``.
It never raises for a bad run (NaN loss, diverged weights): the record says ``diverged`` or
``failed`` with the reason. It raises only for bad input (unknown dataset, architecture, spec).

Implementations register by name (``standard``, ``population``, the meta-learned methods) so that
configs, records and reports refer to them by the same stable key.
"""
from __future__ import annotations

import difflib
from typing import Callable, Protocol, Sequence, runtime_checkable

from evoloss.losses import LossSpec
from evoloss.workers.records import EvalRecord
from evoloss.workers.task import Task, TaskData


@runtime_checkable
class Trainer(Protocol):
    name: str

    def fit(
        self,
        task: Task,
        specs: Sequence[LossSpec],
        device: str = "cpu",
        data: TaskData | None = None,
    ) -> list[EvalRecord]:
        """Train one network per spec on ``task`` (``data`` = its materialised tensors, if cached)."""
        ...


_TRAINERS: dict[str, Callable[..., Trainer]] = {}


def register_trainer(name: str) -> Callable[[Callable[..., Trainer]], Callable[..., Trainer]]:
    """Decorator registering a trainer factory (usually the class) under ``name``."""

    def deco(factory: Callable[..., Trainer]) -> Callable[..., Trainer]:
        if name in _TRAINERS:
            raise ValueError(f"trainer {name!r} is already registered")
        _TRAINERS[name] = factory
        return factory

    return deco


def list_trainers() -> list[str]:
    return sorted(_TRAINERS)


def create_trainer(name: str, **options) -> Trainer:
    """Build the trainer registered as ``name`` with its options (keyword arguments)."""
    if name not in _TRAINERS:
        close = difflib.get_close_matches(str(name), list(_TRAINERS), n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"unknown trainer {name!r}.{hint} Valid: {', '.join(sorted(_TRAINERS))}")
    return _TRAINERS[name](**options)
