"""`tvgw quickstart`: from a fresh clone to a gateway that enriches alerts, in one command.

1. Make sure a model exists for the default market (BTC/USDT 1h) in TVGW_MODEL_DIR.
2. If none: fetch a year of candles through ccxt and train on them; when the network is not
   there, train on the seeded synthetic generator instead, fill the candle store with
   synthetic history up to now, and say so (every ``ml_analysis`` it produces says
   ``synthetic: true``; such a model is refused for a live exchange).
3. Serve under gunicorn (paper broker, embedded SQLite).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from tvgw.commands.data import cli_settings, open_storage
from tvgw.commands.serve import dashboard_hint, exec_gunicorn

if TYPE_CHECKING:
    from ml_integration.training import TrainingConfig
    from tvgw.config import Settings

SYMBOL, TIMEFRAME, DAYS, EXCHANGE = "BTC/USDT", "1h", 365, "binance"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "quickstart", help="train a first model (real data, or synthetic offline) and serve"
    )
    parser.add_argument("--offline", action="store_true", help="do not try the network: synthetic data")
    parser.add_argument("--no-serve", action="store_true", help="prepare the model, do not start gunicorn")
    parser.add_argument("--quick", action="store_true", help="small models (seconds, for trying it out)")
    parser.add_argument("--bind", default=None, help="address:port for gunicorn")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ml_integration import latest_version

    settings = cli_settings()
    if settings.strategy(None) is None or settings.strategy(None).passphrase == "unused-by-cli":  # type: ignore[union-attr]
        print(
            "tvgw quickstart: set TVGW_PASSPHRASE (the secret your TradingView alerts will carry)",
            file=sys.stderr,
        )
        return 2
    storage = open_storage(settings)
    if latest_version(settings.model_dir, SYMBOL, TIMEFRAME) is None:
        trained = (not args.offline) and _train_on_real_data(settings, storage, args.quick)
        if not trained:
            _train_on_synthetic_data(settings, storage, args.quick)
    else:
        print(f"quickstart: using the existing {SYMBOL} {TIMEFRAME} model in {settings.model_dir}")
    if args.no_serve:
        return 0
    if not args.offline and settings.market_data is None and not _latest_is_synthetic(settings):
        # A model of real Binance candles: keep its candle store current from the same source.
        os.environ["TVGW_MARKET_DATA"] = EXCHANGE
        print(f"quickstart: candles kept current from {EXCHANGE} (TVGW_MARKET_DATA)")
    print(f"quickstart: serving on {args.bind or '127.0.0.1:8000'} (paper broker, {settings.database})")
    print(f"quickstart: {dashboard_hint(settings, args.bind)}", flush=True)
    return exec_gunicorn(args.bind)


def _latest_is_synthetic(settings: Settings) -> bool:
    from ml_integration import latest_version
    from ml_integration.store import model_key

    version = latest_version(settings.model_dir, SYMBOL, TIMEFRAME)
    if version is None:
        return True
    folder = Path(settings.model_dir) / model_key(SYMBOL, TIMEFRAME) / version
    return bool(json.loads((folder / "strategy.json").read_text()).get("synthetic", True))


def _config(quick: bool, **extra: object) -> TrainingConfig:
    from ml_integration.training import create_training_config
    from tvgw.commands.train import QUICK_MODEL

    return create_training_config(
        SYMBOL, {"timeframe": TIMEFRAME, "days": DAYS, "model": QUICK_MODEL if quick else {}, **extra}
    )


def _train_on_real_data(settings: object, storage: object, quick: bool) -> bool:
    from ml_integration.market_data import create_exchange
    from ml_integration.training import create_ml_training_pipeline

    print(f"quickstart: fetching a year of {SYMBOL} {TIMEFRAME} candles through ccxt ...")
    pipeline = create_ml_training_pipeline(
        storage=storage, model_dir=settings.model_dir,  # type: ignore[attr-defined]
        exchange_factory=lambda ex: create_exchange(ex, timeout_ms=5000), progress=True,
    )  # fmt: skip
    try:
        result = pipeline.run(_config(quick))
    except Exception as exc:
        print(f"quickstart: real data unavailable ({type(exc).__name__}: {str(exc)[:160]})")
        return False
    print(f"quickstart: trained {result.version} on {result.n_candles} real candles")
    return True


def _train_on_synthetic_data(settings: object, storage: object, quick: bool) -> None:
    import pandas as pd

    from ml_integration import synthetic_candles
    from ml_integration.training import create_ml_training_pipeline
    from storage.candles import upsert_candles

    bars = DAYS * 24
    start = pd.Timestamp(int(time.time() // 3600 * 3600 - (bars - 1) * 3600), unit="s", tz="UTC")
    frame = synthetic_candles(bars, seed=7, timeframe=TIMEFRAME, start=start.isoformat(), n_gaps=0)
    rows = [
        [int(ts.timestamp() * 1000), *values]
        for ts, values in zip(
            frame.index,
            frame[["open", "high", "low", "close", "volume"]].itertuples(index=False),
            strict=True,
        )
    ]
    upsert_candles(storage, SYMBOL, TIMEFRAME, rows, "synthetic")  # type: ignore[arg-type]
    print(
        "quickstart: OFFLINE - training on SYNTHETIC candles (seeded generator). Its predictions are not a "
        "market view and every ml_analysis says synthetic: true."
    )
    pipeline = create_ml_training_pipeline(storage=storage, model_dir=settings.model_dir, progress=True)  # type: ignore[attr-defined]
    result = pipeline.run(_config(quick, synthetic=True, seed=7))
    print(f"quickstart: trained {result.version} (synthetic) in {result.wall_time_s:.0f} s")
