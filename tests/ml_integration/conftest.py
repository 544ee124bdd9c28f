"""Fixtures for the ML library tests: seeded synthetic candles, a tiny trained strategy, and
the shared real candles (skipped with a reason when ../shared/data is absent)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from ml_integration.lstm import LSTMConfig
from ml_integration.prediction import ModelConfig
from ml_integration.strategy import MLTradingStrategy
from ml_integration.synthetic import synthetic_candles

SHARED_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "ohlcv" / "binance"

#: Small enough to train in about a second (plus the one-off TensorFlow import).
TINY = ModelConfig(
    n_estimators=30,
    max_depth=6,
    min_samples_leaf=20,
    gb_max_iter=30,
    lstm=LSTMConfig(units=(8, 4), epochs=2, batch_size=256),
    n_jobs=1,
)


def shared_file(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"{path} not found: the shared real-candle folder sits beside the repo checkout")
    return path


@pytest.fixture(scope="session")
def candles() -> pd.DataFrame:
    """2,500 hourly synthetic candles without gaps (tests that need gaps add them)."""
    return synthetic_candles(2500, seed=7, n_gaps=0)


@pytest.fixture(scope="session")
def trained(candles: pd.DataFrame) -> MLTradingStrategy:
    """One tiny strategy trained on synthetic candles, shared by the read-only tests."""
    strategy = MLTradingStrategy(model_config=TINY)
    strategy.train_strategy(candles, synthetic=True, symbol="BTC/USDT", timeframe="1h")
    return strategy
