"""`tvgw evaluate --model DIR --data FILE`: a saved model's out-of-sample prediction metrics on
new candles (accuracy next to the majority class, AUC, Brier next to the base rate, log loss,
calibration by decile, 95% block-bootstrap intervals), as JSON."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tvgw.commands import add_command


def register(sub: argparse._SubParsersAction) -> None:
    parser = add_command(sub, "evaluate")
    parser.add_argument("--model", required=True, help="a saved model version directory")
    parser.add_argument("--data", required=True, help="freqtrade JSON or CSV candles to score it on")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from backtest.errors import BacktestInputError
    from backtest.evaluate import evaluate_model
    from backtest.report import clean_json

    try:
        report = evaluate_model(Path(args.model), Path(args.data))
    except BacktestInputError as exc:
        print(f"tvgw evaluate: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(clean_json(report), indent=2, allow_nan=False))
    return 0
