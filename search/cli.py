"""The `evoloss` command line.

Each sub-command is one module in ``search/commands/`` exposing ``NAME``, ``HELP``,
``add_arguments(parser)`` and ``run(args) -> int``; `COMMANDS` lists them in help order. The commands
are a thin layer over the Python API (`evoloss.search.api`): they parse, call, print. Building the
parser imports nothing heavy (no torch, Ray, pandas), so ``--help`` is instant; a command loads what
it needs when it runs.
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


def config_argument(args: argparse.Namespace, kind: str) -> str:
    """The one config a command's arguments name, CONFIG.toml or ``--preset NAME`` of ``kind``
    ("search" or "compare"); an unknown preset is refused with the close matches."""
    if bool(args.config) == bool(args.preset):
        raise ValueError(f"give exactly one of CONFIG.toml or --preset NAME (e.g. evoloss {kind} --preset quick)")
    if args.preset:
        from evoloss.search.preset_files import preset_names

        if args.preset not in preset_names(kind):
            from evoloss.search.config_fields import unknown_name

            raise unknown_name("--preset", args.preset, preset_names(kind))
    return args.preset or args.config


def overrides_argument(args: argparse.Namespace) -> dict:
    """The ``--set KEY=VALUE`` arguments as the API's ``overrides`` mapping."""
    from evoloss.search.config import parse_override

    return dict(parse_override(s) for s in args.set)


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


# The Python API's arguments (named in its messages) and the command line's spelling of each.
FLAGS = {"top": "--top", "reeval_seeds": "--reeval-seeds", "out": "--out", "resume": "--resume", "engine": "--engine", "data_dir": "--data-dir",
         "config": "CONFIG.toml or --preset", "pick": "--pick", "name": "--name", "address": "--address",
         "allow_version_change": "--allow-version-change"}


def _flag_hint(exc: BaseException) -> str:
    """Where an API argument named in ``exc`` is set on the command line (the library never names flags)."""
    key = getattr(exc, "key", None)
    return f" [{FLAGS[key]}]" if isinstance(key, str) and key in FLAGS else ""


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except (ValueError, TypeError, OSError, KeyError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"evoloss {args.command}: error: {msg}{_flag_hint(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"evoloss {args.command}: interrupted", file=sys.stderr)
        return 130
    except BaseException as exc:  # SIGTERM / SIGINT during a search or compare (search.engine.Stopped)
        engine = sys.modules.get("evoloss.search.engine")  # loaded whenever Stopped can be raised
        if engine is None or not isinstance(exc, engine.Stopped):
            raise
        print(f"evoloss {args.command}: {engine.stopped_line(exc)}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
