"""The ``tvgw`` sub-commands: one module each, exposing ``register(subparsers)``.

The one-line help of every command lives here, not in its module, so that ``tvgw --help`` lists
them without importing any module (and with it pandas, pydantic or ccxt): a command's own
imports are paid only when that command runs.
"""

from __future__ import annotations

import argparse

__all__ = ["COMMANDS", "SHARED_MODULES", "add_command"]

#: Sub-command -> one-line help, in the order ``tvgw --help`` lists them.
COMMANDS: dict[str, str] = {
    "serve": "run the gateway under gunicorn (paths relative to the current directory)",
    "quickstart": "train a first model (real data, or synthetic offline) and serve",
    "data": "fill the local candle store (ccxt fetch or file import)",
    "train": "train the ML strategy for a symbol and save a model version",
    "models": "model versions and their roles (champion, challenger); promote or roll back",
    "resolve": "fill outcomes of predictions whose horizon has passed",
    "accuracy": "prediction accuracy with baselines and drift flags (JSON)",
    "alerts": "recent alerts with their decision and reason (a table; --json for the API's JSON)",
    "orders": "recent orders (a table; --json for the API's JSON)",
    "positions": "open positions and equity (a table; --json for the API's JSON)",
    "reconcile": "compare the books with the exchange; --adopt takes the exchange's view",
    "backtest": "walk-forward backtest of the Pine strategy with and without ML (HTML + JSON)",
    "evaluate": "prediction metrics of a saved model on new candles (JSON)",
    "pine": "the bundled TradingView Pine scripts",
    "schema": "print the alert schema (JSON Schema or a Markdown table)",
    "migrate": "show the store's pending schema migrations and apply them (--dry-run: show only)",
    "backup": "write a consistent copy of the store while the gateway runs (SQLite or PostgreSQL)",
    "restore": "bring a backup back (refuses a store that holds data without --force)",
    "prune": "apply the retention periods now (the gateway also prunes in the background)",
}


#: Commands registered by a module that serves several (``register(sub, name)``).
SHARED_MODULES: dict[str, str] = {
    "alerts": "records", "orders": "records", "positions": "records",
    "migrate": "store", "backup": "store", "restore": "store", "prune": "store",
}  # fmt: skip


def add_command(sub: argparse._SubParsersAction, name: str) -> argparse.ArgumentParser:
    """The sub-parser of command ``name``, with its help from :data:`COMMANDS`."""
    parser: argparse.ArgumentParser = sub.add_parser(name, help=COMMANDS[name], description=COMMANDS[name])
    return parser
