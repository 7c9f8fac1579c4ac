"""The pruning of the cleanlab method in a compare run: per task group, samples flagged, precision and
recall of the flagged samples against the truly mislabelled ones, and the noise left in the kept set.

Run: python bench/cleanlab_pruning.py RUN_DIR  (a compare run with a ``kind = "cleanlab"`` method)
"""
from __future__ import annotations

import json
import sys

import pandas as pd


def pruning_table(run_dir: str) -> pd.DataFrame:
    """One row per task group: mean over the group's tasks of the cleanlab rows' extra.cleanlab."""
    rows = pd.read_parquet(f"{run_dir}/evaluations")
    rows = rows[(rows.trainer == "cleanlab") & (rows.status == "ok")]
    stats = []
    for _, row in rows.iterrows():
        extra = json.loads(row.extra) if isinstance(row.extra, str) else row.extra
        c = extra["cleanlab"]
        stats.append({"group": extra["group"], "noise_realised": row.noise_rate_realised, "flagged": c["flagged"],
                      "train": c["train"], "precision": c["precision"], "recall": c["recall"],
                      "kept_noise": c["kept_noise_rate"], "test_acc_last": row.test_acc_last})
    frame = pd.DataFrame(stats)
    return frame.groupby("group", sort=False).mean(numeric_only=True).round(3)


if __name__ == "__main__":
    print(pruning_table(sys.argv[1]).to_string())
