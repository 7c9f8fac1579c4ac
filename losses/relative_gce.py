"""Batch-relative GCE (ours; not in the five papers): GCE's per-sample weighting, normalised by its batch.

GCE's gradient in the logits is CE's, weighted by ``p_y^q`` (Zhang & Sabuncu 2018; the ``gce``
family): ``∂ℓ/∂z = p_y^q · (softmax(z) − e_y)``. The weight slows the rows the network finds unlikely
(at high noise, mostly the mislabelled ones) — and it slows every row early in training, when all
``p_y`` are near ``1/C``: at a fixed learning rate a bounded loss learns a deep network slowly (a
4-layer MLP or CNN-4 on digits loses 10–30 points to CE after 15 epochs, BENCHMARKS.md), while a
shallow MLP, which memorises the noisy labels fast under CE, gains from it. Dividing the weight by the
batch's mean weight (to the power ``a``) keeps the relative weighting and gives back the step size:

    w_i = p_i^q / m^a,   m = Σ_j mask_j · p_j^q / Σ_j mask_j   (p_i = softmax(z_i)_{y_i}, the batch's rows j)
    ℓ_i = sg(w_i) · (−log p_i)                                 (sg: no gradient flows through w)

so ``∂ℓ_i/∂z_i = w_i · (softmax(z_i) − e_{y_i})``. ``a = 0`` is GCE's gradient exactly; ``q = 0`` is
CE (value and gradient); ``a = 1`` keeps the batch's mean weight at 1, so the loss learns at CE's pace
while the network is still undecided (all ``p_y`` alike, every ``w_i ≈ 1``) and slows the unlikely
rows more as it grows confident on the others. The value is the weighted CE: a surrogate whose
gradient is the one above (no gradient flows from the weights into the logits, as in sample re-weighting;
the parameters q and a do get gradients).

A *batch* family (`losses.registry`, ``batch=True``): the loss of a row depends on its batch through
``m``. Each leading index of ``logits [..., B, C]`` is one batch; ``mask`` (1 = a row of the batch, 0 =
``ignore_index`` rows and the compiled step's padding, None = every row) says which rows ``m`` reads.
Probability targets and label smoothing are refused (a row's loss under another label would change ``m``).

Numerics: ``p^q = exp(q · log_softmax(z)_y)`` (finite for logits of ±1e4), ``m`` floored at the
dtype's smallest normal number (an all-underflowed batch gives weights 0, not NaN), ``Σ mask`` at 1
(a batch of ignored rows only).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from evoloss.losses.registry import Param, register_family

RELATIVE_GCE_PARAMS = [
    Param("q", default=0.5, low=0.0, high=2.0, doc="GCE's exponent of the weight p_y^q; 0 is CE"),
    Param("a", default=1.0, low=0.0, high=1.0,
          doc="power of the batch's mean weight dividing each weight: 0 is GCE's gradient, 1 keeps the mean weight 1"),
]


@register_family("relative_gce", params=RELATIVE_GCE_PARAMS, batch=True)
def relative_gce_loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None,
                      q: float | torch.Tensor = 0.5, a: float | torch.Tensor = 1.0) -> torch.Tensor:
    """``sg(p_y^q / m^a) · (−log p_y)`` per row, ``m`` the mean of ``p^q`` over the row's batch (module docstring).

    ``logits [..., B, C]``, ``targets [..., B]``, ``mask`` None or ``[..., B]``; ``q``, ``a`` floats,
    0-d tensors or tensors of the targets' shape.
    """
    log_p_y = F.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    weight = torch.exp(q * log_p_y.detach())
    if mask is None:
        mean = weight.mean(dim=-1, keepdim=True)
    else:
        mean = (weight * mask).sum(dim=-1, keepdim=True) / mask.sum(dim=-1, keepdim=True).clamp_min(1.0)
    mean = mean.clamp_min(torch.finfo(weight.dtype).tiny)
    return weight / mean ** a * -log_p_y
