"""``evoloss report RUN_DIR [--out DIR] [--metric COLUMN] [--classes C]``: the report of a run.

Writes ``report.md`` and its PNG figures (default into ``RUN_DIR/report/``) for a compare run, a
search run or a run that is both (`evoloss.report`), then prints the short summary and where the
report went. The run directory is only read. A missing or empty run directory, an unknown metric
or rows the report cannot read are one line on stderr and exit status 2, with nothing written.
"""
from __future__ import annotations

import argparse

NAME = "report"
HELP = "Write report.md (protocol, accuracy tables, average ranks, cost) and PNG figures for a compare or search run."
# evoloss.results.tables.METRICS, spelled here so that --help imports no pandas (tests/test_api.py keeps them equal)
METRICS = ("test_acc_last", "test_acc_best", "test_acc_noisy", "val_acc_last", "val_acc_best")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register RUN_DIR, ``--out``, ``--metric`` and ``--classes``."""
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the run directory (runs/<run-id>) to report on")
    parser.add_argument("--out", metavar="DIR", default=None, help="where to write the report (default RUN_DIR/report/)")
    parser.add_argument(
        "--metric", choices=METRICS, default=None,
        help="column of the compare tables (default: test accuracy at the rows' metric_rule, "
             "test_acc_last for 'last', test_acc_best for 'best', test_acc_noisy for 'noisy')",
    )
    parser.add_argument(
        "--classes", type=int, default=10, metavar="C",
        help="number of classes C the loss-shape figures spread probabilities over (default 10)",
    )


def run(args: argparse.Namespace) -> int:
    """Write the report, print its summary and its path; bad input raises ValueError (exit 2)."""
    from evoloss.results.report import REPORT_NAME, write_report

    out, report = write_report(args.run_dir, args.out, metric=args.metric, num_classes=args.classes)
    if report.summary:
        print(report.summary)
    figures = len(report.figures)
    print(f"wrote {out / REPORT_NAME} ({figures} figure{'' if figures == 1 else 's'}; {' and '.join(report.kinds)} run)")
    return 0
