"""`tvgw accuracy`: how the logged predictions fared, next to naive baselines."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from ml_integration.tracking import DriftThresholds, drift_report, evaluate_recent_performance
from storage import Storage
from tvgw.commands import add_command
from tvgw.commands.data import cli_settings


def register(sub: argparse._SubParsersAction) -> None:
    parser = add_command(sub, "accuracy")
    parser.add_argument("--symbol", help="e.g. BTC/USDT (default: all symbols)")
    parser.add_argument("--days", type=float, default=30)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = cli_settings()
    storage = Storage(settings.database, synchronous=settings.sqlite_synchronous)
    storage.migrate()
    report = evaluate_recent_performance(storage, args.symbol, args.days)
    report["drift"] = drift_report(storage, **asdict(DriftThresholds.from_settings(settings)))
    print(json.dumps(report, indent=2))
    return 0
