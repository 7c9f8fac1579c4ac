"""Per-member losses of K candidate loss functions on stacked logits ``[K, B, C]``.

Every member has its own loss (family + parameters); all see the same targets. Two ways to compute
them, both giving member k the batch mean of ``family.fn(logits[k], targets, **params_k)``, exactly what
``losses.create_loss(spec)`` (reduction ``"mean"``) gives a single network:

- ``grouping="family"`` (default): one call per family. The group's logits are flattened to
  ``[g·B, C]`` and each parameter becomes a per-sample tensor ``[g·B]`` (member k's value repeated B
  times) — the per-sample parameter path every family supports (losses/registry.py); a batch family
  (``relative_gce``) gets ``[g, B, C]`` instead, one batch per member, so its statistic stays per member.
- ``grouping="member"``: one call per member with float parameters.

A family whose grouped call raises is retried member by member from then on; a member whose own call
raises is reported in ``failures`` (index -> error text) so that the trainer marks it ``failed``.
"""
from __future__ import annotations

from typing import Sequence

import torch

from evoloss.losses import LossSpec, get_family

GROUPINGS = ("family", "member")


class MemberLosses:
    """The K losses of a population, evaluated on stacked logits.

    Args:
        specs: one `LossSpec` per member (validated here; float parameters only).
        grouping: ``"family"`` or ``"member"`` (see the module docstring).

    Raises:
        ValueError: an unknown family, a parameter out of range, or an unknown ``grouping``.
        TypeError: a tensor-valued parameter (a population trains candidates with fixed parameters).
    """

    def __init__(self, specs: Sequence[LossSpec], grouping: str = "family") -> None:
        if grouping not in GROUPINGS:
            raise ValueError(f"loss_grouping={grouping!r} is not one of {GROUPINGS}")
        self.grouping = grouping
        self.families = [get_family(s.family) for s in specs]
        self.params: list[dict[str, float]] = []
        for spec, fam in zip(specs, self.families):
            full = fam.validate(spec.params)
            if any(isinstance(v, torch.Tensor) for v in full.values()):
                raise TypeError(
                    f"loss spec {spec.family!r}: the population trainer takes float parameters only; "
                    f"got a tensor in {sorted(full)}. Use the meta-learned trainers for tensor parameters."
                )
            self.params.append({k: float(v) for k, v in full.items()})
        self.per_member_families: set[str] = set()
        self.failures: dict[int, str] = {}
        self._cache: dict[object, object] = {}  # groups, index tensors, per-sample parameter tensors

    def pop_failures(self) -> dict[int, str]:
        """The members (positions in the current stack) whose loss raised since the last call, and why."""
        failures, self.failures = self.failures, {}
        return failures

    def __len__(self) -> int:
        return len(self.families)

    def select(self, keep: Sequence[int]) -> None:
        """Keep only the members at positions ``keep``, in that order."""
        self.families = [self.families[i] for i in keep]
        self.params = [self.params[i] for i in keep]
        self._cache.clear()

    def _groups(self) -> dict[str, list[int]]:
        """Family name -> positions of its members (cached until `select`)."""
        if "groups" not in self._cache:
            groups: dict[str, list[int]] = {}
            for i, fam in enumerate(self.families):
                groups.setdefault(fam.name, []).append(i)
            self._cache["groups"] = groups  # type: ignore[assignment]
        return self._cache["groups"]  # type: ignore[return-value]

    def _group_params(self, name: str, members: list[int], batch: int, like: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-sample parameter tensors ``[g·B]`` of a family group (cached per batch size and dtype)."""
        key = (name, tuple(members), batch, like.dtype, like.device)
        if key not in self._cache:
            out = {}
            for pname in self.families[members[0]].param_names:
                values = torch.tensor([self.params[i][pname] for i in members], dtype=like.dtype, device=like.device)
                out[pname] = values.repeat_interleave(batch)
            self._cache[key] = out
        return self._cache[key]

    def _member_loss(self, i: int, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.families[i].fn(logits, targets, **self.params[i]).mean()

    def _group_loss(self, members: list[int], logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        g, (batch, classes) = len(members), logits.shape[1:]
        if members == list(range(len(self))):  # the whole stack, in order: no gather
            group_logits = logits.reshape(g * batch, classes)
        else:
            group_logits = logits.index_select(0, self._index(("members", tuple(members)), members, logits))
            group_logits = group_logits.reshape(g * batch, classes)
        family = self.families[members[0]]
        params = self._group_params(family.name, members, batch, logits)
        if family.batch:  # one batch per member: [g, B, C] (losses.registry's batch contract)
            params = {k: v.reshape(g, batch) for k, v in params.items()}
            per_sample = family.fn(group_logits.reshape(g, batch, classes), targets.expand(g, batch), **params)
        else:
            per_sample = family.fn(group_logits, targets.repeat(g), **params)
        return per_sample.reshape(g, batch).mean(dim=1)

    def _losses_of(self, members: list[int], logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Losses ``[len(members)]`` of one family's members (grouped, or one by one after a failure)."""
        name = self.families[members[0]].name
        if self.grouping == "family" and name not in self.per_member_families and len(members) > 1:
            try:
                return self._group_loss(members, logits, targets)
            except Exception:  # noqa: BLE001 — retried member by member below, which names the culprit
                self.per_member_families.add(name)
        values = []
        for i in members:
            try:
                values.append(self._member_loss(i, logits[i], targets).reshape(1))
            except Exception as exc:  # noqa: BLE001 — a candidate's loss failing is a record, not a crash
                self.failures[i] = f"{type(exc).__name__}: {exc}"
                values.append(logits.new_full((1,), float("nan")))
        return torch.cat(values) if len(values) > 1 else values[0]

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-member mean losses ``[K]`` of ``logits`` ``[K, B, C]`` against ``targets`` ``[B]``.

        A member whose loss raises gets NaN and an entry in ``failures``; the others are unaffected.
        """
        if logits.dim() != 3 or logits.shape[0] != len(self):
            raise ValueError(f"logits must have shape [K={len(self)}, B, C]; got {tuple(logits.shape)}")
        groups = self._groups()
        parts = [self._losses_of(members, logits, targets) for members in groups.values()]
        order = [i for members in groups.values() for i in members]
        values = torch.cat(parts) if len(parts) > 1 else parts[0]
        if order == list(range(len(self))):
            return values
        position = [0] * len(order)
        for pos, i in enumerate(order):
            position[i] = pos
        return values[self._index(("position",), position, values)]

    def _index(self, key: tuple, indices: list[int], like: torch.Tensor) -> torch.Tensor:
        """A cached long tensor of ``indices`` on ``like``'s device (valid until `select`)."""
        key = (*key, like.device)
        if key not in self._cache:
            self._cache[key] = torch.tensor(indices, dtype=torch.long, device=like.device)  # type: ignore[assignment]
        return self._cache[key]  # type: ignore[return-value]

    def value_and_grad(self, logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-member losses ``[K]`` and ``∂(Σ_k loss_k)/∂logits`` ``[K, B, C]`` (= each member's own gradient)."""
        leaf = logits.detach().requires_grad_(True)
        with torch.enable_grad():
            losses = self(leaf, targets)
            if losses.requires_grad:
                (grad,) = torch.autograd.grad(losses.sum(), leaf, allow_unused=True)
            else:
                grad = None
        if grad is None:
            grad = torch.zeros_like(leaf)
        return losses.detach(), grad
