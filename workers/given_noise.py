"""Noise type ``given``: train on the labels exactly as the dataset's file gives them.

A user's dataset (``npz:``, ``table:``, ``folder:``, ``cifar10n:`` ...) carries its own, possibly
noisy, training labels (`RawDataset.y_given`); ``noise = {type = "given"}`` uses them unchanged
instead of corrupting clean labels. Where the clean labels of the same rows are known
(``y_train_clean``, a clean column, CIFAR's own labels under CIFAR-N), `apply_noise` records the
realised noise rate and transition matrix against them as for synthetic noise; the "expected"
matrix is the realised one (the file is the whole noise process). Where they are not known the
materialised task records NaN and no matrix (`workers.materialize`). Nothing is random here.
"""
from __future__ import annotations

import numpy as np

from evoloss.workers.noise import NoiseContext, realised_transition, register_noise

GIVEN_DATASETS_HINT = ("use a dataset with its own labels: npz:PATH, table:PATH,label=NAME, folder:PATH, "
                       "cifar10n:PATH or cifar100n:PATH (docs/data.md)")


@register_noise("given", "file")
def _given(y: np.ndarray, rate: float, ctx: NoiseContext, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The dataset's own labels of these rows; expected matrix = realised matrix against ``y``."""
    if rate != 0.0:
        raise ValueError(f"noise type 'given' takes no rate (got rate={rate!r}): the file's labels are used as they are")
    if ctx.given is None:
        raise ValueError(f"noise type 'given' needs labels that come with the dataset; {GIVEN_DATASETS_HINT}")
    given = np.asarray(ctx.given, dtype=np.int64)
    if given.shape != y.shape:
        raise ValueError(f"noise type 'given': {given.shape} given labels for {y.shape} rows")
    return given.copy(), realised_transition(y, given, ctx.num_classes)


__all__ = ["GIVEN_DATASETS_HINT"]
