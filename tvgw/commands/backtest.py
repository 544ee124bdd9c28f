"""`tvgw backtest`: walk-forward backtest of the bundled Pine strategy with and without ML.

``tvgw backtest --symbol BTC/USDT --timeframe 1h [--data FILE] [--start DATE --end DATE]
--train-window 180d --test-window 30d [--fees 0.001] [--slippage-bps 5]
[--mode execute|ml_gate|hybrid] [--no-lstm] [--jobs N] --report out.html`` writes the HTML
report and ``out.json`` beside it. Bad input stops before any training, saying what to change.
Risk limits and the paper book's limits come from the usual settings (``TVGW_CONFIG``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tvgw.commands import add_command
from tvgw.commands.data import cli_settings

if TYPE_CHECKING:
    import pandas as pd

    from ml_integration.prediction import ModelConfig


def register(sub: argparse._SubParsersAction) -> None:
    parser = add_command(sub, "backtest")
    parser.add_argument("--symbol", required=True, help="market symbol, e.g. BTC/USDT")
    parser.add_argument("--timeframe", default="1h", help="bar size (default 1h)")
    parser.add_argument(
        "--data", metavar="FILE", help="freqtrade JSON or CSV candles (default: the candle store)"
    )
    parser.add_argument("--start", help="first traded day, e.g. 2021-10-11 (training data comes before it)")
    parser.add_argument("--end", help="end of the traded period (exclusive)")
    parser.add_argument("--train-window", default="180d", help="training window (default 180d)")
    parser.add_argument(
        "--test-window", default="30d", help="traded window per model, the retraining step (30d)"
    )
    parser.add_argument("--fees", type=float, default=0.001, help="fee rate per fill (default 0.001)")
    parser.add_argument("--slippage-bps", type=float, default=5.0, help="slippage per fill (default 5)")
    parser.add_argument("--mode", default="hybrid", choices=["execute", "ml_gate", "hybrid"],
                        help="how the models judge the alerts in their arms (default hybrid)")  # fmt: skip
    parser.add_argument("--horizon", type=int, default=5, help="bars ahead the models predict (default 5)")
    parser.add_argument(
        "--embargo", type=int, help="bars between training and trading (default: the horizon)"
    )
    parser.add_argument(
        "--no-lstm", action="store_true", help="full strategy without the LSTM (no TensorFlow)"
    )
    parser.add_argument("--quick", action="store_true", help="small models (a smoke run, not for decisions)")
    parser.add_argument("--jobs", type=int, default=1, help="windows trained in parallel (joblib)")
    parser.add_argument(
        "--choose-every", type=int, metavar="N",
        help="run the model tournament and column selection every N windows (default: train / test window)",
    )  # fmt: skip
    parser.add_argument("--report", required=True, help="HTML report path; the JSON summary goes beside it")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from backtest.errors import BacktestInputError
    from backtest.report import write_report
    from backtest.run import BacktestConfig, run_backtest
    from backtest.windows import parse_duration
    from ml_integration.exceptions import MLError

    try:
        config = BacktestConfig(
            symbol=args.symbol, timeframe=args.timeframe, data_file=Path(args.data) if args.data else None,
            start=_date(args.start, "--start"), end=_date(args.end, "--end"),
            train_window=parse_duration(args.train_window, "--train-window"),
            test_window=parse_duration(args.test_window, "--test-window"), fees=args.fees,
            slippage_bps=args.slippage_bps, mode=args.mode, horizon=args.horizon, embargo_bars=args.embargo,
            use_lstm=not args.no_lstm, jobs=args.jobs, progress=not args.no_progress,
            choose_every=args.choose_every,
            model_config=_quick_models(args.symbol, lstm=not args.no_lstm) if args.quick else None,
        )  # fmt: skip
        result = run_backtest(config, cli_settings())
    except (BacktestInputError, MLError) as exc:
        print(f"tvgw backtest: {exc}", file=sys.stderr)
        return 2
    html_path, json_path = write_report(result, Path(args.report))
    for name, metrics in result.summary["trading"].items():
        print(f"  {result.summary['arms'][name]:<42} return {metrics['total_return']:+.2%}  "
              f"max drawdown {metrics['max_drawdown']:.2%}  trades {metrics['trades']}")  # fmt: skip
    print(f"report {html_path}\nsummary {json_path}")
    return 0


def _date(text: str | None, what: str) -> pd.Timestamp | None:
    """A UTC timestamp from ``2021-10-11`` (or any pandas-readable date), None when not given."""
    import pandas as pd

    from backtest.errors import BacktestInputError

    if text is None:
        return None
    try:
        stamp = pd.Timestamp(text)
    except ValueError:
        raise BacktestInputError(f"{what} {text!r} is not a date like 2021-10-11") from None
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _quick_models(symbol: str, *, lstm: bool) -> ModelConfig:
    """``tvgw train --quick``'s model sizes, built the way training builds them."""
    from ml_integration.training import create_training_config
    from tvgw.commands.train import model_options

    return create_training_config(symbol, {"model": model_options(quick=True, lstm=lstm)}).model
