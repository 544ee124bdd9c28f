"""The ``tvgw`` command. Each sub-command lives in ``tvgw/commands/<name>.py`` and exposes
``register(subparsers)``; this module only wires them together."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from tvgw import __version__

__all__ = ["main"]

#: Sub-command modules, in the order ``tvgw --help`` lists them.
COMMANDS = ("serve", "quickstart", "data", "train", "resolve", "accuracy", "records", "pine", "schema")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tvgw", description="TradingView webhook signal gateway")
    parser.add_argument("--version", action="version", version=f"tvgw {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"tvgw.commands.{name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from tvgw.config import ConfigError

    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"tvgw: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
