"""Questions asked of a run's store: its best candidate and how far it got.

Every query reads complete generations only (`results.store.ResultStore` contract), so it gives the
same answer on a live run (open it with `ParquetStore.open_read_only`) as after it, up to the last
generation that finished.
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np

from evoloss.losses import LossSpec
from evoloss.results.store import ResultStore


def best_candidate(store: ResultStore, metric_rule: str) -> tuple[LossSpec, float, int, int] | None:
    """The best ``(spec, fitness, generation, candidate)`` over every complete generation, or None.

    The best is the highest finite ``best_fitness`` of the generation rows, ties to the earlier
    generation; ``metric_rule`` is the rule the run scored with (the generation rows already hold its
    fitness; it is kept for callers that state it).
    """
    gens = store.read_generations(complete_only=True)
    gens = gens[np.isfinite(gens["best_fitness"])]
    if gens.empty:
        return None
    top = gens.sort_values(["best_fitness", "generation"], ascending=[False, True]).iloc[0]
    evals = store.read(complete_only=True)
    row = evals[(evals["generation"] == top["generation"]) & (evals["candidate"] == top["best_candidate"])].iloc[0]
    spec = LossSpec(row["family"], json.loads(row["params"]))
    return spec, float(top["best_fitness"]), int(top["generation"]), int(top["best_candidate"])


def run_progress(store: ResultStore) -> dict[str, Any]:
    """How far the run got, from its complete generations.

    Returns ``{"generations_done": int, "evaluations": int, "status_counts": {status: count} (sorted),
    "last_sigma": float | None, "evals_per_s": float | None}``; the last two are None before the first
    complete generation. ``evals_per_s`` is every evaluation over every generation's wall seconds.
    """
    done = store.generations_done()
    gens = store.read_generations(complete_only=True)
    evals = store.read(complete_only=True)
    counts = evals["status"].value_counts().to_dict() if len(evals) else {}
    return {
        "generations_done": len(done),
        "evaluations": int(len(evals)),
        "status_counts": {str(k): int(v) for k, v in sorted(counts.items())},
        "last_sigma": None if gens.empty else float(gens["sigma"].iloc[-1]),
        "evals_per_s": None if gens.empty else float(gens["evaluations"].sum() / gens["wall_s"].sum()),
    }


__all__ = ["best_candidate", "run_progress"]
