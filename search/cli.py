"""The `evoloss` command line.

Each sub-command is one module in ``search/commands/`` exposing ``NAME``, ``HELP``,
``add_arguments(parser)`` and ``run(args) -> int``; `COMMANDS` lists them in help order.
Bad input (ValueError/TypeError/FileNotFoundError raised before any work is written) becomes one
clear line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

COMMANDS = (
    "evoloss.search.commands.quickstart",
    "evoloss.search.commands.search",
    "evoloss.search.commands.status",
    "evoloss.search.commands.export",
    "evoloss.search.commands.plot_loss",
    "evoloss.search.commands.compare",
    "evoloss.search.commands.report",
)


def progress_writer():
    """A progress sink for long commands: live ``\r`` lines on a terminal, finished lines only in logs."""
    tty = sys.stderr.isatty()

    def write(line: str) -> None:
        if tty:
            sys.stderr.write(line)
        elif line.endswith("\n"):
            sys.stderr.write(line.lstrip("\r"))
        sys.stderr.flush()

    return write


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse exits 2 already; keep it to one line
        self.exit(2, f"evoloss: error: {message} (see 'evoloss --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="evoloss", description="Evolutionary and meta-learned loss search for noisy labels.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for path in COMMANDS:
        mod = importlib.import_module(path)
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except (ValueError, TypeError, FileNotFoundError, KeyError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"evoloss {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"evoloss {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
