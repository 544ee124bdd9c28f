"""A trained strategy and a candle store ending now, for the ML benchmarks (seeded, offline)."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from ml_integration import MLTradingStrategy, save_version, synthetic_candles
from ml_integration.prediction import ModelConfig
from storage import Storage
from storage.candles import upsert_candles
from tvgw.commands.train import QUICK_MODEL


def quick_config() -> ModelConfig:
    """The ``tvgw train --quick`` model sizes, through the training config's own parser."""
    from ml_integration.training import create_training_config

    return create_training_config("BTC/USDT", {"model": QUICK_MODEL}).model


def candles_until_now(bars: int = 3000, seed: int = 5) -> pd.DataFrame:
    hour = int(time.time() // 3600 * 3600)
    start = pd.Timestamp(hour - (bars - 1) * 3600, unit="s", tz="UTC").isoformat()
    return synthetic_candles(bars, seed=seed, n_gaps=0, start=start)


def train_model(model_dir: Path, candles: pd.DataFrame, *, full: bool = False) -> None:
    """Train BTC/USDT 1h on ``candles`` and save it as the latest version in ``model_dir``."""
    strategy = MLTradingStrategy(model_config=None if full else quick_config())
    strategy.train_strategy(candles, synthetic=True, symbol="BTC/USDT", timeframe="1h")
    save_version(strategy, model_dir, "BTC/USDT", "1h")


def seed_candles(database: Path, candles: pd.DataFrame) -> None:
    storage = Storage(database)
    storage.migrate()
    rows = [
        [int(t.timestamp() * 1000), *v]
        for t, v in zip(candles.index, candles.itertuples(index=False), strict=True)
    ]
    upsert_candles(storage, "BTC/USDT", "1h", rows, "synthetic")
    storage.close()
