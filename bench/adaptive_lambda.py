"""How far the adaptive losses' Λ moves in one run (shu Eq. 8), under the default and the paper protocol.

Task: digits / MLP-2, 40% symmetric noise (exact), clean meta set of 10 per class, 20 epochs, the
meta_vs_base setting. Prints Λ at the start and the end of each run and the clean test accuracy.

Usage::

    .venv/bin/python bench/adaptive_lambda.py            # seeds 0-2, every adaptive trainer
    .venv/bin/python bench/adaptive_lambda.py --seeds 1 --trainers adaptive-gce
"""
from __future__ import annotations

import argparse

import evoloss.workers.meta.adaptive  # noqa: F401  (registration)
from evoloss.workers.meta.adaptive import ADAPTIVE_TRAINERS
from evoloss.workers.task import Budget, NoiseSpec, Splits, Task
from evoloss.workers.trainer import create_trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--trainers", nargs="*", default=sorted(ADAPTIVE_TRAINERS))
    args = parser.parse_args()
    print(f"{'trainer':20s} {'protocol':8s} seed  test last  Λ start -> Λ end")
    for name in args.trainers:
        for protocol in ("default", "paper"):
            for seed in range(args.seeds):
                task = Task(dataset="digits", arch="mlp2", noise=NoiseSpec("symmetric", 0.4, "exact"),
                            budget=Budget(epochs=args.epochs, batch_size=64),
                            splits=Splits(meta_per_class=10, max_train=1000), seed=seed)
                (r,) = create_trainer(name, protocol=protocol).fit(task, [])
                start = ", ".join(f"{k} {v:.4g}" for k, v in r.extra["lambda_init"].items())
                end = ", ".join(f"{k} {v:.4g}" for k, v in r.extra["lambda_final"].items())
                print(f"{name:20s} {protocol:8s} {seed:4d}  {100 * r.test_acc_last:8.1f}  {start} -> {end}")


if __name__ == "__main__":
    main()
