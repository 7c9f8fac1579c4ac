"""The ``population`` inner trainer: K candidate losses trained at once, parameters stacked ``[K, ...]``.

A search scores thousands of candidates on the same task; training them one model at a time is bound
by per-step overhead, not arithmetic (REFERENCE §6). Here the K networks of one task are one stacked
network (`workers.population.stack`): one kernel per layer for all members, a hand-written backward
for MLPs, and stacked SGD/Adam (`workers.population.optim`).

Semantics: member k reproduces the ``standard`` trainer's run of ``specs[k]`` (workers/standard.py)
— same initial weights (``create_arch(..., seed=init_seed(task.seed, member_seeds[k]))``), the same
mini-batches for every member (``protocol.batches(..., seed=task.seed)``), the same lr schedule,
optimiser, gradient clipping (per member), ``max_steps`` and ``eval_every`` rules, the same
divergence check after each epoch (non-finite summed loss or weights) and the same records
(`workers.evaluation.RunHistory`), up to float rounding (one wide matmul sums in another order).

Per-member outcomes: a member whose epoch loss or weights go non-finite is recorded ``diverged`` and
leaves the stack at the end of that epoch; one whose loss function raises is recorded ``failed``
and leaves at once; the others go on unaffected (no computation mixes members).
An error not attributable to one member fails every member still training.

Execution (the record's ``execution`` / ``execution_note``): ``stacked-compiled`` — the step under
``torch.compile`` (`workers.population.compiled`: K padded to a power-of-two bucket of masked slots,
the last batch padded and masked, so a search never recompiles); ``stacked`` — the eager stacked step
(the note says why not compiled: ``compile`` off, ``auto`` on CPU, a layer the compiled step does not
take, or "compile failed: <error>", after which the run continues eagerly from its initial state);
``one-by-one`` — architectures that cannot be stacked (custom ``forward``, active dropout, a user
model with another layer) train through the ``standard`` trainer (note: "architecture not stackable:
<which layer>"); non-default ``member_seeds`` then raise ValueError, since ``standard`` seeds every
run with the task seed.

Choices: ``wall_s`` of each record is the population's wall time divided by K (the amortised cost of
one candidate, compile warm-up included); ``extra`` adds ``population_size``, ``population_wall_s``,
``population_backend``, ``member_seed`` and, when compiled, ``compile_s`` (the warm-up) and
``population_slots`` (the bucket).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from evoloss.losses import LossSpec
from evoloss.workers.archs import check_arch, create_arch
from evoloss.workers.evaluation import EVAL_BATCH_SIZE
from evoloss.workers.population.compiled import COMPILE_MODES, STEPS_PER_CALL, not_compilable, use_compile
from evoloss.workers.population.loss import MemberLosses
from evoloss.workers.population.run import StackedRun
from evoloss.workers.population.stack import StackedNet, UnsupportedArchitecture
from evoloss.workers.protocol import init_seed, resolve_optimizer
from evoloss.workers.records import EvalRecord
from evoloss.workers.standard import StandardTrainer, deterministic_mode, validate_inputs
from evoloss.workers.task import Task, TaskData
from evoloss.workers.trainer import register_trainer

BACKWARDS = ("auto", "manual", "autograd")
PROBE_ROWS = 8  # training rows used to check the stacked forward against each member's own


@register_trainer("population")
class PopulationTrainer:
    """Train K networks (one per loss spec) together with stacked parameters.

    Args:
        member_seeds: one init seed per spec (``protocol.init_seed(task.seed, s)``); None = every member
            starts from ``init_seed(task.seed)``, as in ``standard`` (common random numbers).
        eval_every, deterministic, max_steps, eval_batch_size: as in ``standard``.
        loss_grouping: ``"family"`` (one loss call per family with per-sample parameter tensors) or
            ``"member"`` (one call per member); see `workers.population.loss`.
        backward: ``"auto"`` (hand-written for MLP chains, else autograd), ``"manual"`` (raise if the
            architecture has none) or ``"autograd"`` (the eager step; the compiled step differentiates
            with ``torch.func.grad``).
        compile: ``"auto"`` (compile on CUDA, eager on CPU: there the warm-up outweighs a short
            search, BENCHMARKS.md), ``"on"`` or ``"off"``.
        compile_backend: the ``torch.compile`` backend (``"inductor"``; tests use ``"eager"`` or
            ``"aot_eager"``, which trace the same graph without generating code).
        steps_per_call: compiled steps unrolled into one call (one guard check and one launch of the
            compiled code for all of them; an epoch's remainder runs one step a call). Records do not
            depend on it. Default `STEPS_PER_CALL` (BENCHMARKS.md "Steps per compiled call").
    """

    name = "population"

    def __init__(
        self, *, member_seeds: Sequence[int] | None = None, eval_every: int = 1, deterministic: bool = True,
        max_steps: int | None = None, eval_batch_size: int = EVAL_BATCH_SIZE, loss_grouping: str = "family",
        backward: str = "auto", compile: str = "auto", compile_backend: str = "inductor",
        steps_per_call: int = STEPS_PER_CALL,
    ) -> None:
        self.standard = StandardTrainer(eval_every=eval_every, deterministic=deterministic, max_steps=max_steps,
                                        eval_batch_size=eval_batch_size)
        if backward not in BACKWARDS:
            raise ValueError(f"backward={backward!r} is not one of {BACKWARDS}")
        MemberLosses([], grouping=loss_grouping)  # validates the name
        if member_seeds is not None:
            member_seeds = list(member_seeds)
            for s in member_seeds:
                if isinstance(s, bool) or not isinstance(s, int):
                    raise TypeError(f"member_seeds must hold ints; got {s!r} in {member_seeds!r}")
                if s < 0:
                    raise ValueError(f"member_seeds must hold non-negative ints; got {s!r} in {member_seeds!r}")
        self.member_seeds = member_seeds
        self.eval_every, self.max_steps, self.eval_batch_size = eval_every, max_steps, eval_batch_size
        self.deterministic, self.loss_grouping, self.backward = deterministic, loss_grouping, backward
        if compile not in COMPILE_MODES:
            raise ValueError(f"compile={compile!r} is not one of {COMPILE_MODES} (use 'off' to train eagerly)")
        if not isinstance(compile_backend, str) or not compile_backend:
            raise ValueError(f"compile_backend={compile_backend!r} must be a torch.compile backend name, "
                             "e.g. 'inductor'")
        if isinstance(steps_per_call, bool) or not isinstance(steps_per_call, int) or steps_per_call < 1:
            raise ValueError(f"steps_per_call={steps_per_call!r} must be a positive int (1: one step per call)")
        self.compile, self.compile_backend, self.steps_per_call = compile, compile_backend, steps_per_call

    def fit(
        self, task: Task, specs: Sequence[LossSpec], device: str = "cpu", data: TaskData | None = None
    ) -> list[EvalRecord]:
        """Train one network per spec on ``task``, all at once; one `EvalRecord` per spec, in order.

        Raises:
            ValueError / TypeError: as ``standard`` (unknown architecture or loss, bad parameters or
                budget, incompatible data), ``member_seeds`` of the wrong length, or a tensor-valued loss
                parameter (candidates have float parameters; tensors belong to the meta-learned trainers).
        """
        validate_inputs(task, specs)
        specs = list(specs)
        member_losses = MemberLosses(specs, grouping=self.loss_grouping)  # float parameters only
        seeds = self._seeds(task, len(specs))
        optim = resolve_optimizer(task.arch, task.budget)
        if not specs:
            return []
        if data is None:
            from evoloss.workers.materialize import materialize  # the data layer; imported only when needed

            data = materialize(task)
        check_arch(task.arch, tuple(data.input_shape), data.num_classes)
        dev = torch.device(device)
        members = build_members(task.arch, data, seeds, dev)
        try:
            net = StackedNet(members)
            net.check_against(members, data.x_train[:PROBE_ROWS].to(dev))
            net.use_backward(self.backward)
        except UnsupportedArchitecture as exc:
            return self._one_by_one(task, specs, seeds, device, data, reason=str(exc))
        with deterministic_mode(self.deterministic, dev):
            run = StackedRun(self, task, specs, seeds, optim, data, dev)
            run.note = self._compile_note(net, dev) or run.start_compiled(members)
            if run.note:  # not compiled (or the compile failed): the eager stacked step from the start
                run.start_eager(net, member_losses)
            return run.train()

    def _compile_note(self, net: StackedNet, dev: torch.device) -> str:
        """Why this run does not take the compiled step ("" = it does)."""
        if not use_compile(self.compile, dev):
            why = " compiles on CUDA only" if self.compile == "auto" else ""
            return f"not compiled: compile={self.compile!r}{why}"
        reason = not_compilable(net.layers)
        return f"not compiled: {reason}" if reason else ""

    def _seeds(self, task: Task, k: int) -> list[int]:
        if self.member_seeds is None:
            return [init_seed(task.seed)] * k
        if len(self.member_seeds) != k:
            raise ValueError(
                f"member_seeds has {len(self.member_seeds)} entries for {k} specs; give one seed per spec "
                "(or None for the task seed)"
            )
        return [init_seed(task.seed, s) for s in self.member_seeds]

    def _one_by_one(
        self, task: Task, specs: list[LossSpec], seeds: list[int], device: str, data: TaskData, reason: str
    ) -> list[EvalRecord]:
        """Fallback for architectures that cannot be stacked: the ``standard`` trainer, member by member."""
        if any(s != init_seed(task.seed) for s in seeds):
            raise ValueError(
                f"member_seeds={self.member_seeds!r}: architecture {task.arch!r} cannot be stacked ({reason}) "
                "and the one-by-one fallback seeds every member with the task seed; drop member_seeds"
            )
        records = self.standard.fit(task, specs, device, data)
        for record, seed in zip(records, seeds):
            record.trainer = self.name
            record.execution, record.execution_note = "one-by-one", f"architecture not stackable: {reason}"
            record.extra.update(population_backend="standard", population_size=len(specs), member_seed=seed,
                                population_fallback_reason=reason)
        return records


def build_members(arch: str, data: TaskData, seeds: Sequence[int], device: torch.device) -> list[nn.Module]:
    """The initial networks: ``create_arch(arch, ..., seed=s)`` per member (built once per distinct seed)."""
    built: dict[int, nn.Module] = {}
    for s in seeds:
        if s not in built:
            built[s] = create_arch(arch, tuple(data.input_shape), data.num_classes, seed=s).to(device)
    return [built[s] for s in seeds]
