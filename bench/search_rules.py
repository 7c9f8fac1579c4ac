"""How the fitness rules and successive halving would rank one search run's candidates (offline).

Reads a search run's full-budget evaluation rows and, per generation:

- scores the candidates under several fitness rules (`evoloss.search.fitness`) and reports how
  often each rule picks the same best candidate as the plain mean, and the mean Spearman
  correlation of their rankings;
- simulates successive halving (`evoloss.search.fidelity`): a candidate's low-fidelity metric is its
  learning curve at the low rung's last epoch (the inner training is deterministic, so a run cut to
  ``e`` epochs equals the first ``e`` epochs of the full run: checked on a halving run's rows);
  reports how often the full-budget best is among the finishers and the Spearman correlation
  between low- and full-fidelity fitness.

Usage: ``.venv/bin/python bench/search_rules.py RUN_DIR [--low 0.25] [--share 0.34]``. Numbers only,
nothing is asserted; on a halving run only the finishers have full rows, so use a run without it.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from evoloss.search.fidelity import HalvingSchedule, choose_finishers
from evoloss.search.fitness import FitnessRule, fitness

RULES = {"accuracy/mean": FitnessRule(), "accuracy/q0.25": FitnessRule(aggregate="quantile"),
         "relative-ce/mean": FitnessRule(score="relative-ce"),
         "relative-ce/q0.25": FitnessRule(score="relative-ce", aggregate="quantile"),
         "rank/mean": FitnessRule(score="rank"), "rank/q0.25": FitnessRule(score="rank", aggregate="quantile")}


def _references(run: Path) -> dict[str, float]:
    states = sorted((run / "state").glob("gen-*.json"))
    return json.loads(states[-1].read_text()).get("references", {}) if states else {}


def _low_rows(rows: pd.DataFrame, epochs: int) -> pd.DataFrame:
    low = rows.copy()
    low["val_acc_last"] = [c[epochs - 1] if len(c) >= epochs else np.nan for c in rows["curve_val"]]
    return low


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run")
    p.add_argument("--low", type=float, default=0.25)
    p.add_argument("--share", type=float, default=0.34)
    a = p.parse_args()
    run = Path(a.run)
    evals = pd.read_parquet(run / "evaluations")
    evals = evals[evals["fidelity"] == 1.0]
    refs = _references(run)
    rules = {k: r for k, r in RULES.items() if refs or not r.needs_reference}
    epochs = int(evals["epochs_run"].max())
    sched = HalvingSchedule(a.low, a.share)
    same = {k: 0 for k in rules}
    rho = {k: [] for k in rules}
    kept, top1, rho_low, gens = 0, 0, [], sorted(evals["generation"].unique())
    popsize = int(json.loads((run / "state" / sorted(p.name for p in (run / "state").glob("gen-*.json"))[-1])
                             .read_text())["config"]["search"]["popsize"])
    for g in gens:
        rows = evals[evals["generation"] == g]
        scores = {k: fitness(rows, r, references=refs) for k, r in rules.items()}
        base = scores["accuracy/mean"]
        cands = sorted(base)
        for k, s in scores.items():
            same[k] += max(cands, key=lambda c: (s[c], -c)) == max(cands, key=lambda c: (base[c], -c))
            rho[k].append(spearmanr([s[c] for c in cands], [base[c] for c in cands]).statistic)
        low = fitness(_low_rows(rows, sched.low_epochs(epochs)), FitnessRule(), candidates=cands)
        finishers = choose_finishers(low, min(sched.finishers(popsize), len(cands)))
        kept += max(cands, key=lambda c: (base[c], -c)) in finishers
        top1 += max(cands, key=lambda c: (low[c], -c)) == max(cands, key=lambda c: (base[c], -c))
        rho_low.append(spearmanr([low[c] for c in cands], [base[c] for c in cands]).statistic)
    n = len(gens)
    print(f"run {run}: {n} generations, {len(evals)} full-budget rows, {epochs} epochs, references: {len(refs)}")
    print(f"{'rule':20s} {'same best as accuracy/mean':>28s} {'Spearman vs accuracy/mean':>27s}")
    for k in rules:
        print(f"{k:20s} {same[k]:>22d} / {n:<3d} {np.nanmean(rho[k]):>27.3f}")
    per_gen = evals.groupby("generation")["candidate"].nunique()
    print(f"successive halving (low {sched.low_epochs(epochs)}/{epochs} epochs, {sched.finishers(popsize)} of "
          f"{popsize} finish), among the {per_gen.min()}-{per_gen.max()} candidates per generation with full rows: "
          f"full-budget best among the low-fidelity finishers in {kept}/{n} generations, low-fidelity best = "
          f"full-budget best in {top1}/{n}; Spearman low vs full {np.nanmean(rho_low):.3f} (mean over generations)")


if __name__ == "__main__":
    main()
