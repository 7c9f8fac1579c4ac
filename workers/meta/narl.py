"""NARL-Adjuster: per-sample robust-loss hyperparameters predicted from the logit margin.

ding-narl-adjuster, Eqs. 8–12, Algs. 1–2. Meta-train (Alg. 1), every T_meta = 10 steps:

    w̃(θ) = w − (α/n) Σ_i ∇w L_robust(f(x_i; w), y_i; h(m_i; θ))   (Eq. 11)
    θ ← θ − β (1/m) Σ_j ∇θ L_meta(f(x^(m)_j; w̃(θ)), y^(m)_j)         (Eq. 10; Adam 1e-3, wd 1e-4)
    w ← w − (α/n) Σ_i ∇w L_robust(f(x_i; w), y_i; h(m_i; θ))        (Eq. 12, every step)

with h the `Adjuster` (its input, the margin, detached). Snapshots θ(T/3), θ(2T/3), θ(T) are
kept; meta-test (Alg. 2, Eq. 13) trains a new network on a task with no meta set, using snapshot
k during the k-th third of its training. Multi-task meta-training (`NarlTrainer.meta_train`)
trains one network per task of a grid in lockstep with one shared adjuster: at a meta round every
task takes its own look-ahead and Adam step on the shared θ, in grid order (a task-cyclic
stochastic meta-gradient; the paper does not say how its 9 tasks are combined). Snapshots are then
taken at rounds T/3, 2T/3, T of the longest task (a run that ended early stops contributing; when
every run ended early the last adjuster fills the missing snapshots).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import torch
from torch import nn

from evoloss.losses import LossSpec, get_family
from evoloss.losses.plugin.adjusted import adjusted_plugin_at
from evoloss.workers.meta.lookahead import LookaheadConfig, MetaGradient, apply_meta_gradient, meta_gradient
from evoloss.workers.meta.meta_trainer import MetaTrainer, require_float_params
from evoloss.workers.meta.method import Batch, MetaMethod, derived_seed
from evoloss.workers.meta.narl_adjuster import Adjuster, adjuster_from_dict, adjuster_to_dict, logit_margin, output_ranges
from evoloss.workers.meta.training import MetaRun, check_meta_set, prepare_data
from evoloss.workers.protocol import init_seed
from evoloss.workers.records import EvalRecord
from evoloss.workers.standard import deterministic_mode, seeded_rng
from evoloss.workers.task import Task, TaskData
from evoloss.workers.trainer import register_trainer

NARL_TRAINERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "narl-gce": ("gce", ("q",)),
    "narl-sl": ("sce", ("alpha", "beta")),
    "narl-polysoft": ("polysoft", ("lam", "d")),
    "narl-js": ("js", ("pi1",)),
}
MARGIN_GRID = torch.linspace(-5.0, 5.0, 11)


class NarlLoss(MetaMethod):
    """The robust loss with per-sample Λ_i = h(m_i; θ); θ meta-learned (meta-train) or fixed (meta-test)."""

    def __init__(self, spec: LossSpec, learned: Sequence[str], *, adjusters: Sequence[Adjuster] = (),
                 scales: Mapping[str, float] | None = None, meta_lr: float = 1e-3, meta_weight_decay: float = 1e-4,
                 lookahead: LookaheadConfig = LookaheadConfig(every=10)) -> None:
        fam = get_family(spec.family)
        full = fam.validate(spec.params)
        self.fn, self.family, self.learned, self.lookahead = fam.fn, spec.family, tuple(learned), lookahead
        self.fixed = {k: v for k, v in full.items() if k not in self.learned}
        self.start_values = {k: float(full[k]) for k in self.learned}
        self.offsets, self.scales = output_ranges(spec.family, self.learned, scales)
        self.meta_lr, self.meta_weight_decay = meta_lr, meta_weight_decay
        self.snapshots = list(adjusters)  # meta-test: the snapshots by training stage
        self.needs_clean_meta = not self.snapshots
        self.adjuster: Adjuster | None = None
        self._lambda_means: dict[int, list[torch.Tensor]] = {}  # per run: NARL shares the method across runs

    def init_meta_parameters(self, seed: int, dtype: torch.dtype, device: torch.device | str) -> None:
        """The adjuster (PyTorch default init from ``seed``, Λ(0) = the spec's values) and its Adam."""
        self.adjuster = Adjuster(self.family, self.learned, self.offsets, self.scales, seed=derived_seed(seed, "narl"))
        self.adjuster.start_at(self.start_values)
        self.adjuster.to(device=device, dtype=dtype)
        self.meta_optimizer = torch.optim.Adam(self.adjuster.parameters(), lr=self.meta_lr,
                                               weight_decay=self.meta_weight_decay)

    def robust_loss(self, adjuster: Adjuster, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean of L_robust(f(x_i), y_i; h(m_i)) (Eq. 8's summand), differentiable in the adjuster."""
        values = adjuster.hyperparameters(logit_margin(logits, targets))
        return self.fn(logits, targets, **self.fixed, **values).mean()

    def meta_gradient(self, model: nn.Module, batch: Batch, x_meta: torch.Tensor, y_meta: torch.Tensor, lr: float,
                      optimizer: torch.optim.Optimizer | None = None) -> MetaGradient:
        """∇θ L_meta(w̃(θ)) in ``adjuster.parameters()`` order (Eqs. 10–11)."""
        return meta_gradient(model, list(self.adjuster.parameters()),
                             lambda lo: self.robust_loss(self.adjuster, lo, batch.y),
                             batch.x, x_meta, y_meta, lr, config=self.lookahead, optimizer=optimizer)

    def stage_adjuster(self, step: int, planned_steps: int) -> Adjuster:
        """Meta-test: snapshot k for step ``step`` in the k-th of K equal stages of the run (Alg. 2)."""
        k = min(len(self.snapshots) - 1, len(self.snapshots) * step // max(planned_steps, 1))
        return self.snapshots[k]

    # --- MetaMethod hooks ---------------------------------------------------------------------
    def prepare(self, run: MetaRun) -> None:
        param = next(run.model.parameters())
        if self.snapshots:
            self.snapshots = [a.to(device=param.device, dtype=param.dtype) for a in self.snapshots]
        elif self.adjuster is None:  # shared across the runs of a multi-task meta-train
            self.init_meta_parameters(run.task.seed, param.dtype, param.device)

    def meta_step(
        self, run: MetaRun, batch: Batch, x_meta: torch.Tensor, y_meta: torch.Tensor, lr: float
    ) -> MetaGradient | None:
        if self.snapshots:
            return None
        result = self.meta_gradient(run.model, batch, x_meta, y_meta, lr, run.optimizer)
        apply_meta_gradient(self.meta_optimizer, list(self.adjuster.parameters()), result.grads)
        return result

    def train_loss(self, run: MetaRun, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        adjuster = self.stage_adjuster(run.step, run.planned_steps) if self.snapshots else self.adjuster
        with torch.no_grad():
            values = adjuster.hyperparameters(logit_margin(logits, batch.y))
        self._lambda_means.setdefault(id(run), []).append(torch.stack([v.mean() for v in values.values()]))
        return self.fn(logits, batch.y, **self.fixed, **values).mean()

    def lambda_curve(self, adjuster: Adjuster) -> dict[str, list[float]]:
        """Λ(m) on `MARGIN_GRID`, per hyperparameter (the learned noise-aware rule, Fig. 7)."""
        param = next(adjuster.parameters())
        with torch.no_grad():
            values = adjuster.hyperparameters(MARGIN_GRID.to(param))
        return {name: v.tolist() for name, v in values.items()}

    def epoch_quantities(self, run: MetaRun) -> dict[str, object]:
        last_step = max(run.step - 1, 0)  # the curve of the adjuster the epoch's last step used
        adjuster = self.stage_adjuster(last_step, run.planned_steps) if self.snapshots else self.adjuster
        seen = self._lambda_means.pop(id(run), [])
        means = torch.stack(seen).mean(0).tolist() if seen else [math.nan] * len(self.learned)
        out: dict[str, object] = {f"{name}_mean": m for name, m in zip(self.learned, means)}
        out["lambda_curve"] = self.lambda_curve(adjuster)
        return out

    def final_extra(self, run: MetaRun) -> dict[str, object]:
        mode = "meta-test" if self.snapshots else "meta-train"
        return {"mode": mode, "margin_grid": MARGIN_GRID.tolist(), "learned": list(self.learned)}


@dataclass
class NarlMetaTrainResult:
    """A meta-train over a grid: one record per task and the adjuster snapshots θ(T/3), θ(2T/3), θ(T)."""

    records: list[EvalRecord]
    snapshots: list[dict]
    snapshot_rounds: list[int]


def load_adjusters(adjuster: object, family: str) -> list[Adjuster]:
    """Snapshots from a dict, a list of dicts, or a JSON file holding either (never unpickled)."""
    if isinstance(adjuster, (str, Path)):
        with open(adjuster, encoding="utf-8") as fh:
            adjuster = json.load(fh)
    items = [adjuster] if isinstance(adjuster, Mapping) else adjuster
    if not isinstance(items, Sequence) or not items:
        raise ValueError(
            f"adjuster must be an adjuster dict, a non-empty list of them, or a JSON path; got {adjuster!r:.80}"
        )
    adjusters = [adjuster_from_dict(item) for item in items]
    wrong = [a.family for a in adjusters if a.family != family]
    if wrong:
        raise ValueError(f"adjuster snapshots are for family {wrong[0]!r}; this trainer uses {family!r}")
    return adjusters


class NarlTrainer(MetaTrainer):
    """``narl-<loss>``. Without ``adjuster``: meta-train on the task (it needs a clean meta set);
    the record's ``extra["adjuster_snapshots"]`` holds θ(T/3), θ(2T/3), θ(T). With ``adjuster``
    (one exported dict, a list of snapshots, a JSON file of either, or an adjusted-loss plug-in's
    loss.json or directory from `losses.export_adjuster_plugin`): meta-test, no meta set.
    Specs are optional and of the trainer's family: their learned values set Λ(m = 0) of a fresh
    adjuster, the others (SL's A) are fixed — taken from the plug-in when one is given. Options:
    ``scales`` {param: s}, ``meta_lr`` (Adam, 1e-3), ``meta_weight_decay`` (1e-4); T_meta
    (``meta_every``) defaults to 10."""

    default_every = 10
    paper_key = "narl"

    def __init__(self, *, name: str, family: str, learned: tuple[str, ...], adjuster: object = None,
                 scales: Mapping[str, float] | None = None, meta_lr: float = 1e-3, meta_weight_decay: float = 1e-4,
                 **options) -> None:
        self.name = name  # before the base checks, which name the trainer in their errors
        super().__init__(**options)
        if not (meta_lr > 0 and math.isfinite(meta_lr)) or meta_weight_decay < 0:
            raise ValueError(f"meta_lr={meta_lr!r} must be > 0 and meta_weight_decay={meta_weight_decay!r} >= 0")
        self.name, self.family, self.learned, self.scales = name, family, learned, dict(scales or {})
        self.meta_lr, self.meta_weight_decay = meta_lr, meta_weight_decay
        plugin = adjusted_plugin_at(adjuster) if isinstance(adjuster, (str, Path)) else None
        self.plugin_params = dict(plugin.fixed_params) if plugin is not None else {}
        source = plugin.adjuster_dicts() if plugin is not None else adjuster
        self.adjusters = [] if adjuster is None else load_adjusters(source, family)

    def default_spec(self) -> LossSpec:
        return LossSpec(self.family, self.plugin_params)

    def resolve_specs(self, specs: Sequence[LossSpec]) -> list[LossSpec]:
        """The specs, with an adjusted plug-in's fixed parameters filled in (a different value raises)."""
        return [_with_plugin_params(self.name, spec, self.plugin_params) for spec in super().resolve_specs(specs)]

    def make_method(self, spec: LossSpec, *, meta_test: bool | None = None) -> NarlLoss:
        if spec.family != self.family:
            raise ValueError(f"trainer {self.name!r} adjusts the {self.family!r} loss; got a spec of family "
                             f"{spec.family!r} (pass LossSpec({self.family!r}, ...) or no spec)")
        require_float_params(self.name, spec)
        test = bool(self.adjusters) if meta_test is None else meta_test
        snapshots = [adjuster_from_dict(adjuster_to_dict(a)) for a in self.adjusters] if test else []
        return NarlLoss(spec, self.learned, adjusters=snapshots, scales=self.scales, meta_lr=self.meta_lr,
                        meta_weight_decay=self.meta_weight_decay, lookahead=self.lookahead)

    def fit(
        self, task: Task, specs: Sequence[LossSpec], device: str = "cpu", data: TaskData | None = None
    ) -> list[EvalRecord]:
        """Meta-test with the given adjuster, else meta-train on ``task`` (one fresh adjuster per spec)."""
        if self.adjusters:
            return super().fit(task, specs, device, data)
        resolved = self.resolve_specs(specs)
        for spec in resolved:
            self.make_method(spec, meta_test=False)
        datas = None if data is None else [data]
        return self.stamp([self.meta_train([task], spec, device=device, datas=datas).records[0]
                           for spec in resolved])

    def meta_train(self, tasks: Sequence[Task], spec: LossSpec | None = None, *, device: str = "cpu",
                   datas: Sequence[TaskData | None] | None = None) -> NarlMetaTrainResult:
        """Alg. 1 over a grid of tasks sharing one adjuster (see the module docstring)."""
        spec = spec or self.default_spec()
        method = self.make_method(spec, meta_test=False)
        datas = list(datas) if datas is not None else [None] * len(tasks)
        if not tasks or len(datas) != len(tasks):
            raise ValueError(f"meta_train needs a non-empty task grid and one data entry per task; got "
                             f"{len(tasks)} tasks and {len(datas)} data")
        tasks = [self.protocol_task(t) for t in tasks]
        prepared = [prepare_data(t, [spec], d, device, self.options.meta_source) for t, d in zip(tasks, datas)]
        for task, data in zip(tasks, prepared):
            check_meta_set(self.name, task, data, method)
        with deterministic_mode(self.options.deterministic, torch.device(device)), \
                seeded_rng(init_seed(tasks[0].seed), torch.device(device)):
            runs = [MetaRun(self.name, t, d, method, spec, device, self.options) for t, d in zip(tasks, prepared)]
            snapshots, marks = _train_in_lockstep(runs, method)
        records = [run.record() for run in runs]
        for record in records:
            record.extra.update({"adjuster_snapshots": snapshots, "snapshot_rounds": marks,
                                 "task_grid": [t.key() for t in tasks]})
        return NarlMetaTrainResult(records, snapshots, marks)


def _with_plugin_params(trainer: str, spec: LossSpec, fixed: Mapping[str, float]) -> LossSpec:
    """``spec`` with the plug-in's fixed parameters (e.g. SL's A) filled in; a different explicit value raises."""
    for key, value in fixed.items():
        if key in spec.params and float(spec.params[key]) != value:
            raise ValueError(f"trainer {trainer!r}: spec sets {key}={float(spec.params[key])!r} but the adjusted "
                             f"plug-in it meta-tests was exported with {key}={value!r}; pass no spec or set "
                             f"{key}={value!r}")
    return LossSpec(spec.family, {**fixed, **spec.params}) if fixed else spec


def _train_in_lockstep(runs: list[MetaRun], method: NarlLoss) -> tuple[list[dict], list[int]]:
    """One step of every live run per round; snapshots of the adjuster at rounds T/3, 2T/3, T."""
    total = max(run.planned_steps for run in runs)
    marks = [max(1, math.ceil(k * total / 3)) for k in (1, 2, 3)]
    snapshots: list[dict] = []
    active, rounds = [run.steps() for run in runs], 0
    while active:
        stepped = [it for it in active if next(it, None) is not None]
        rounds += bool(stepped)
        active = stepped
        while len(snapshots) < len(marks) and rounds >= marks[len(snapshots)] and method.adjuster is not None:
            snapshots.append(adjuster_to_dict(method.adjuster))
    while len(snapshots) < len(marks) and method.adjuster is not None:
        snapshots.append(adjuster_to_dict(method.adjuster))
    return snapshots, marks


def _register(name: str, family: str, learned: tuple[str, ...]) -> None:
    @register_trainer(name)
    def create(**options) -> NarlTrainer:
        return NarlTrainer(name=name, family=family, learned=learned, **options)


for _name, (_family, _learned) in NARL_TRAINERS.items():
    _register(_name, _family, _learned)
