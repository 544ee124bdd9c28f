"""Enrichment latency on a warm model: the ML part of the webhook path, in-process.

Usage: python bench/bench_enrichment.py [--calls 2000] [--full]

Trains a strategy on seeded synthetic candles ending now (``--full``: the default model sizes,
else the small ``tvgw train --quick`` sizes), saves it, fills a temporary candle store, then
calls ``Enricher.enrich`` for fresh alerts and prints p50/p99 wall time, next to
``MLTradingStrategy.build_signal`` alone (the model without the gateway's plumbing).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from engine.alert import Alert
from ml_integration import MLTradingStrategy, save_version, synthetic_candles
from ml_integration.prediction import ModelConfig
from storage import Storage
from storage.candles import upsert_candles
from tvgw.commands.train import QUICK_MODEL
from tvgw.config import load_settings
from webhook.enrichment import Enricher


def _quick_config() -> ModelConfig:
    """The ``tvgw train --quick`` model sizes, through the training config's own parser."""
    from ml_integration.training import create_training_config

    return create_training_config("BTC/USDT", {"model": QUICK_MODEL}).model


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--full", action="store_true", help="default model sizes (slower to train)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tvgw-enrich-"))
    hour = int(time.time() // 3600 * 3600)
    candles = synthetic_candles(
        3000, seed=5, n_gaps=0, start=pd.Timestamp(hour - 2999 * 3600, unit="s", tz="UTC").isoformat()
    )
    config = None if args.full else _quick_config()
    strategy = MLTradingStrategy(model_config=config)
    strategy.train_strategy(candles, synthetic=True, symbol="BTC/USDT", timeframe="1h")
    save_version(strategy, tmp / "models", "BTC/USDT", "1h")
    settings = load_settings(
        environ={
            "TVGW_DATABASE": str(tmp / "db.sqlite"),
            "TVGW_MODEL_DIR": str(tmp / "models"),
            "TVGW_PASSPHRASE": "x",
            "TVGW_RESOLVE_INTERVAL_S": "0",
        }
    )
    storage = Storage(settings.database)
    storage.migrate()
    rows = [
        [int(t.timestamp() * 1000), *v]
        for t, v in zip(candles.index, candles.itertuples(index=False), strict=True)
    ]
    upsert_candles(storage, "BTC/USDT", "1h", rows, "synthetic")
    enricher = Enricher(settings, storage, lambda ticker, exchange: "BTC/USDT")
    strategy_settings = settings.strategy(None)
    assert strategy_settings is not None
    alert = Alert.model_validate(
        {
            "ticker": "BTCUSDT",
            "action": "buy",
            "interval": "60",
            "price": 30000,
            "timenow": datetime.now(UTC).isoformat(),
        }
    )
    for _ in range(50):
        enricher.enrich(alert, strategy_settings)  # warm-up (loads the model once)
    first = enricher.enrich(alert, strategy_settings)
    assert first.opinion is not None, first.analysis
    enrich_ms, model_ms = [], []
    frame = candles.iloc[-320:]
    loaded = enricher._markets[("BTC/USDT", "1h")].strategy
    for _ in range(args.calls):
        t0 = time.perf_counter()
        enricher.enrich(alert, strategy_settings)
        t1 = time.perf_counter()
        loaded.build_signal(frame, "BTC/USDT")
        t2 = time.perf_counter()
        enrich_ms.append((t1 - t0) * 1000)
        model_ms.append((t2 - t1) * 1000)
    sizes = "default sizes" if args.full else "--quick sizes"
    print(f"{args.calls} calls, warm model ({sizes}), 2-core machine")
    for name, values in (
        ("Enricher.enrich (gateway ML path)", enrich_ms),
        ("build_signal (model alone)", model_ms),
    ):
        print(f"{name:36} p50 {statistics.median(values):6.2f} ms   p99 {percentile(values, 0.99):6.2f} ms")


if __name__ == "__main__":
    main()
