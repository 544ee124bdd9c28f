"""Fixtures for the ML library tests: seeded synthetic candles and a tiny trained strategy.
Real candles come through ``tests.conftest.shared_candle_file`` (skipped when absent)."""

from __future__ import annotations

import pandas as pd
import pytest

from ml_integration.lstm import LSTMConfig
from ml_integration.prediction import ModelConfig
from ml_integration.strategy import MLTradingStrategy
from ml_integration.synthetic import synthetic_candles

#: Small enough to train in about a second (plus the one-off TensorFlow import).
TINY = ModelConfig(
    n_estimators=30,
    max_depth=6,
    min_samples_leaf=20,
    gb_max_iter=30,
    lstm=LSTMConfig(units=(8, 4), epochs=2, batch_size=256),
    n_jobs=1,
)


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
