"""`tvgw resolve`: fill in what the market did after each due prediction."""

from __future__ import annotations

import argparse

from ml_integration.tracking import resolve_outcomes
from storage import Storage
from tvgw.commands import add_command
from tvgw.commands.data import cli_settings


def register(sub: argparse._SubParsersAction) -> None:
    parser = add_command(sub, "resolve")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = cli_settings()
    storage = Storage(settings.database, synchronous=settings.sqlite_synchronous)
    storage.migrate()
    print(f"resolved {resolve_outcomes(storage)} prediction outcomes")
    return 0
