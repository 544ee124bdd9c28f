"""The ``tvgw`` command. Each sub-command lives in ``tvgw/commands/<name>.py`` and exposes
``register(subparsers)``; this module only wires them together.

Only the module of the command being run is imported: ``tvgw --help`` lists the commands from
the table in :mod:`tvgw.commands` and answers without loading pandas, pydantic or ccxt.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from tvgw import __version__
from tvgw.commands import COMMANDS, SHARED_MODULES

__all__ = ["build_parser", "main"]


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser for ``argv``: the chosen command fully registered, the others as one-line
    entries (all of them registered fully when ``argv`` is None)."""
    chosen = None if argv is None else next((a for a in argv if a in COMMANDS), "")
    parser = argparse.ArgumentParser(prog="tvgw", description="TradingView webhook signal gateway")
    parser.add_argument("--version", action="version", version=f"tvgw {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        if chosen is None or name == chosen:
            shared = SHARED_MODULES.get(name)
            if shared is None:
                importlib.import_module(f"tvgw.commands.{name}").register(sub)
            else:
                importlib.import_module(f"tvgw.commands.{shared}").register(sub, name)
        else:
            sub.add_parser(name, help=help_text)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    args_in = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(args_in).parse_args(args_in)
    from settings import ConfigError
    from storage.backup import BackupError
    from storage.database import SchemaTooNewError

    try:
        return int(args.func(args) or 0)
    except (ConfigError, SchemaTooNewError, BackupError) as exc:
        print(f"tvgw: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
