"""`tvgw resolve`: fill in what the market did after each due prediction, then review the
champions and challengers on those outcomes (what each gateway worker does every
``TVGW_RESOLVE_INTERVAL_S``): a challenger that won its paired test is promoted, and ML-driven
sizing is turned off or on by each champion's test against the base rate."""

from __future__ import annotations

import argparse

from ml_integration.champions import ChampionRules, review
from ml_integration.tracking import resolve_outcomes
from tvgw.commands import add_command
from tvgw.commands.data import cli_settings, open_storage


def register(sub: argparse._SubParsersAction) -> None:
    parser = add_command(sub, "resolve")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = cli_settings()
    storage = open_storage(settings)
    print(f"resolved {resolve_outcomes(storage)} prediction outcomes")
    for event in review(storage, ChampionRules.from_settings(settings), model_dir=settings.model_dir):
        print(f"{event.symbol} {event.timeframe} {event.kind} {event.version}: {event.reason}")
    return 0
