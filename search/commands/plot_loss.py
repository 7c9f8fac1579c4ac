"""``evoloss plot-loss SPEC.json [SPEC2.json ...] --out FIG.png [--classes C]``: loss-shape figure.

Each SPEC.json is an exported plug-in ``loss.json`` (or its directory) or a plain
``{"family": ..., "params": {...}}`` spec; its label is its ``name`` field, else the family name.
Every file is read and checked before anything is drawn, so a bad file writes no figure.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from evoloss.losses.registry import LossSpec


NAME = "plot-loss"
HELP = "Draw loss vs predicted probability (gao-arl Fig. 2 style) for one or more loss specs into a PNG."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the positional spec files, ``--out`` and ``--classes``."""
    parser.add_argument(
        "specs", nargs="+", metavar="SPEC.json",
        help="plug-in loss.json (or its directory) or a plain {\"family\", \"params\"} JSON spec",
    )
    parser.add_argument("--out", required=True, metavar="FIG.png", help="the PNG file to write")
    parser.add_argument(
        "--classes", type=int, default=10, metavar="C",
        help="number of classes C the probabilities are spread over (default 10)",
    )


def labelled_specs(paths: list[str]) -> list[tuple[str, "LossSpec"]]:
    """``(label, spec)`` for each file; a label seen before gets the file path appended."""
    from evoloss.losses.plugin import read_loss_file

    entries: list[tuple[str, "LossSpec"]] = []
    seen: set[str] = set()
    for path in paths:
        label, spec = read_loss_file(path)
        if label in seen:
            label = f"{label} ({Path(path)})"
        seen.add(label)
        entries.append((label, spec))
    return entries


def run(args: argparse.Namespace) -> int:
    """Read every spec, draw the figure, print where it went; bad input raises ValueError (exit 2)."""
    from evoloss.results.loss_shapes import plot_loss_shapes

    entries = labelled_specs(list(args.specs))
    out = plot_loss_shapes(entries, args.out, num_classes=args.classes)
    print(f"wrote {out} ({len(entries)} loss{'es' if len(entries) > 1 else ''}, C={args.classes})")
    return 0
