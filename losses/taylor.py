"""The evolved loss: a class-wise bivariate Taylor polynomial of order 4 (gao-arl-taylor-loss-search §3).

For a class with softmax probability ``p`` and one-hot label entry ``y``, with ``a = p − θ0`` and
``b = y − θ1`` (the expansion point is (θ0, θ1)), Eq. 5:

    ℓ(p, y) = θ2 a + ½θ3 a² + ⅙θ4 a³ + 1/24 θ5 a⁴ + θ6 ab + ½θ7 ab² + ½θ8 a²b + ⅙θ9 a³b
              + ⅙θ10 ab³ + ¼θ11 a²b²,

and the loss of a sample is the mean of ℓ over its C classes (Eq. 4), multiplied by C and divided by
a scale (our normalisation, below).

Scale normalisation (our rule; the paper's Appendix A.3 is not available): the overall scale of
θ2…θ11 is confounded with the learning rate, so it is divided out. The scale is
``taylor_grid_max_abs``: ``max(max |ℓ(p, y)|, 1e-8)`` over p ∈ {0, 0.01, …, 1} (101 points) and
y ∈ {0, 1}, computed from the parameters (per sample when they are per-sample tensors) and
differentiable in them. Each class's term therefore lies in [−1, 1] on the grid and a candidate's
value does not depend on multiplying θ2…θ11 by a positive constant. The floor keeps the all-zero
polynomial at 0. The class mean of Eq. 4 is then multiplied by C (the normalised loss is
``Σ_c ℓ(p_c, y_c) / scale``): the gradient of a logit, ``p_k (ℓ'(p_k) − Σ_c p_c ℓ'(p_c))``, then has
a scale that does not shrink with C. With the mean alone it is C times smaller than that of a
bounded loss such as MAE, and networks trained with the protocol's SGD lr 0.01 barely move (on
digits with 80% symmetric noise the default loss stayed at chance after 20 epochs with the mean and
reached 60% clean accuracy with the sum; CE reached 52%).

Ranges (chosen): θ0, θ1 ∈ [−1, 2] (an expansion point around the unit square where p and y live);
θ2…θ11 ∈ [−10, 10] — bounded, so CMA-ES's sigmoid codec keeps every decode (even of ±1e6) finite,
and wide enough since only their ratios matter after normalisation.

Defaults: θ0 = θ1 = 0, θ3 = 2, θ6 = −2, the rest 0, i.e. ℓ = p² − 2py — the squared error
``(p − y)²`` without its p-free ``y²`` term (Eq. 5 drops such terms). It decreases in p_y for the
labelled class (ℓ(p, 1) = p² − 2p) and increases in the probability of the others (ℓ(p, 0) = p²);
its grid scale is 1, so the default loss is the Brier score up to a constant.
"""
from __future__ import annotations

import torch

from evoloss.losses.criterion import as_column, as_param
from evoloss.losses.registry import Param, register_family

TAYLOR_DEFAULTS = (0.0, 0.0, 0.0, 2.0, 0.0, 0.0, -2.0, 0.0, 0.0, 0.0, 0.0, 0.0)
TAYLOR_PARAMS = [
    Param(f"theta{i}", default=TAYLOR_DEFAULTS[i], low=-1.0, high=2.0, doc="expansion point")
    for i in range(2)
] + [
    Param(f"theta{i}", default=TAYLOR_DEFAULTS[i], low=-10.0, high=10.0, doc="Taylor coefficient (Eq. 5)")
    for i in range(2, 12)
]
#: Name of the scale-normalisation rule, written into exported plug-ins' loss.json.
NORMALISATION = "taylor_classsum_grid_max_abs"


def taylor_polynomial(p: torch.Tensor, y: torch.Tensor, theta: list[torch.Tensor]) -> torch.Tensor:
    """ℓ(p, y) of gao-arl Eq. 5; ``theta`` holds θ0…θ11, each broadcastable against ``p`` and ``y``."""
    a = p - theta[0]
    b = y - theta[1]
    return (
        theta[2] * a
        + theta[3] * a**2 / 2.0
        + theta[4] * a**3 / 6.0
        + theta[5] * a**4 / 24.0
        + theta[6] * a * b
        + theta[7] * a * b**2 / 2.0
        + theta[8] * a**2 * b / 2.0
        + theta[9] * a**3 * b / 6.0
        + theta[10] * a * b**3 / 6.0
        + theta[11] * a**2 * b**2 / 4.0
    )


def taylor_grid_max_abs(theta: list[torch.Tensor], num_points: int = 101, floor: float = 1e-8) -> torch.Tensor:
    """Scale of the Taylor loss: ``max(max |ℓ|, floor)`` over p ∈ linspace(0, 1, num_points), y ∈ {0, 1}.

    ``theta`` entries are 0-d or per-sample ``[B]`` tensors; returns ``[1]`` or ``[B]``, differentiable
    in θ. The arg-max grid point is found without autograd, once per distinct θ row (a population
    passes each member's θ repeated B times), with Eq. 5 in Horner form: for each y it is a quartic in
    ``a = p − θ0`` without constant term, ``a(c1 + a(c2 + a(c3 + a·c4)))``, ``c_i`` polynomials in
    ``b = y − θ1``. ℓ is then re-evaluated at that point with autograd: the same value, and the
    gradient of the max (at a tie, that of one of the tied points).
    """
    rows = torch.stack(torch.broadcast_tensors(*[v.reshape(-1) for v in theta]), dim=1)  # [B or 1, 12]
    grid_p = torch.linspace(0.0, 1.0, num_points, dtype=rows.dtype, device=rows.device)
    with torch.no_grad():
        distinct = rows.detach()
        if rows.shape[0] > 1:  # per-sample θ; one row (scalar θ, every plug-in) needs no data-dependent unique
            distinct, inverse = torch.unique(distinct, dim=0, return_inverse=True)
        t = [distinct[:, k].view(-1, 1, 1) for k in range(12)]
        b = torch.arange(2, dtype=rows.dtype, device=rows.device).view(1, 1, 2) - t[1]  # y ∈ {0, 1}
        c1 = t[2] + b * (t[6] + b * (t[7] / 2.0 + b * t[10] / 6.0))
        c2 = t[3] / 2.0 + b * (t[8] / 2.0 + b * t[11] / 4.0)
        c3 = t[4] / 6.0 + b * t[9] / 6.0
        a = grid_p.view(1, -1, 1) - t[0]  # [G, num_points, 1]
        values = a * (c1 + a * (c2 + a * (c3 + a * t[5] / 24.0)))  # [G, num_points, 2]
        best = values.abs().flatten(1).argmax(dim=1)  # flat index p_index * 2 + y
        if rows.shape[0] > 1:
            best = best[inverse]
    p_star = grid_p[torch.div(best, 2, rounding_mode="floor")]
    y_star = (best % 2).to(rows.dtype)
    peak = taylor_polynomial(p_star, y_star, [rows[:, k] for k in range(12)]).abs()
    return torch.clamp(peak, min=floor)


def taylor_label_table(
    logits: torch.Tensor,
    theta0: float | torch.Tensor = 0.0,
    theta1: float | torch.Tensor = 0.0,
    theta2: float | torch.Tensor = 0.0,
    theta3: float | torch.Tensor = 2.0,
    theta4: float | torch.Tensor = 0.0,
    theta5: float | torch.Tensor = 0.0,
    theta6: float | torch.Tensor = -2.0,
    theta7: float | torch.Tensor = 0.0,
    theta8: float | torch.Tensor = 0.0,
    theta9: float | torch.Tensor = 0.0,
    theta10: float | torch.Tensor = 0.0,
    theta11: float | torch.Tensor = 0.0,
) -> torch.Tensor:
    """``[B, C]``: the normalised Taylor loss of every row were its label c (Eq. 4/5).

    With label c the one-hot entry is 1 at c only: ``Σ_k ℓ(p_k, 0) + ℓ(p_c, 1) − ℓ(p_c, 0)``, over the scale.
    """
    raw = [theta0, theta1, theta2, theta3, theta4, theta5, theta6, theta7, theta8, theta9, theta10, theta11]
    theta = [as_param(t, logits) for t in raw]
    columns = [as_column(t) for t in theta]
    probs = torch.exp(torch.log_softmax(logits, dim=1))
    off = taylor_polynomial(probs, torch.zeros_like(probs), columns)  # [B, C], label entry 0
    on = taylor_polynomial(probs, torch.ones_like(probs), columns)  # label entry 1
    return (off.sum(dim=1, keepdim=True) + on - off) / taylor_grid_max_abs(theta).reshape(-1, 1)


@register_family("taylor", params=TAYLOR_PARAMS, helpers=(as_column, as_param, taylor_polynomial, taylor_grid_max_abs),
                 label_table=taylor_label_table)
def taylor_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    theta0: float | torch.Tensor = 0.0,
    theta1: float | torch.Tensor = 0.0,
    theta2: float | torch.Tensor = 0.0,
    theta3: float | torch.Tensor = 2.0,
    theta4: float | torch.Tensor = 0.0,
    theta5: float | torch.Tensor = 0.0,
    theta6: float | torch.Tensor = -2.0,
    theta7: float | torch.Tensor = 0.0,
    theta8: float | torch.Tensor = 0.0,
    theta9: float | torch.Tensor = 0.0,
    theta10: float | torch.Tensor = 0.0,
    theta11: float | torch.Tensor = 0.0,
) -> torch.Tensor:
    """Scale-normalised class-wise Taylor loss per sample (gao-arl Eq. 4 and Eq. 5).

    Each θ may be a float, a 0-d tensor or a per-sample ``[B]`` tensor; gradients flow to tensor θs.
    The scale is `taylor_grid_max_abs` (see the module docstring).
    """
    raw = [theta0, theta1, theta2, theta3, theta4, theta5, theta6, theta7, theta8, theta9, theta10, theta11]
    theta = [as_param(t, logits) for t in raw]  # floats filled in on the device: no host-to-device copy
    columns = [t.unsqueeze(1) if t.dim() == 1 else t for t in theta]
    probs = torch.exp(torch.log_softmax(logits, dim=1))
    onehot = torch.zeros_like(probs).scatter(1, targets.unsqueeze(1), 1.0)
    per_class = taylor_polynomial(probs, onehot, columns)  # [B, C]
    return per_class.sum(dim=1) / taylor_grid_max_abs(theta)


taylor_loss.normalisation = NORMALISATION  # type: ignore[attr-defined]  # read by losses.plugin
