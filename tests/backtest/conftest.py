"""Small synthetic inputs for the backtest tests: a few hundred hourly bars per window, tiny
models, so a whole walk-forward runs in seconds."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from backtest.run import BacktestConfig
from tests.ml_integration.conftest import TINY

#: The full strategy's tiny size, without the LSTM (no TensorFlow in the quick tests).
TINY_NO_LSTM = replace(TINY, use_lstm=False)


def small_config(**changes: object) -> BacktestConfig:
    """Two-week test windows after 40-day training windows, tiny models, no progress bar."""
    values: dict[str, object] = {
        "symbol": "BTC/USDT",
        "train_window": pd.Timedelta(days=40),
        "test_window": pd.Timedelta(days=14),
        "use_lstm": False,
        "model_config": TINY_NO_LSTM,
        "progress": False,
        "monte_carlo_runs": 200,
    }
    values.update(changes)
    return BacktestConfig(**values)  # type: ignore[arg-type]


def backtest_argv(
    data: object, report: object, *extra: str, train: str = "40d", test: str = "14d", quick: bool = True
) -> list[str]:
    """``tvgw backtest`` on BTC/USDT from the candle file ``data``, without the LSTM, writing
    ``report``; ``--quick`` models unless ``quick`` is False; ``extra`` options last."""
    return [
        "backtest", "--symbol", "BTC/USDT", "--data", str(data), "--train-window", train,
        "--test-window", test, "--no-lstm", *(["--quick"] if quick else []), "--report", str(report), *extra,
    ]  # fmt: skip


def random_walk(n: int, *, seed: int, start: str = "2023-01-01") -> pd.DataFrame:
    """Hourly candles of a driftless random walk (nothing in the past predicts the future)."""
    rng = np.random.default_rng(seed)
    returns = rng.normal(0.0, 0.006, n)
    return candles_from_returns(returns, rng, start=start)


def candles_from_returns(returns: np.ndarray, rng: np.random.Generator, *, start: str) -> pd.DataFrame:
    """OHLCV bars whose close-to-close log returns are ``returns``."""
    n = len(returns)
    close = 30_000.0 * np.exp(np.cumsum(returns))
    open_ = np.concatenate([[30_000.0], close[:-1]])
    wick = np.abs(rng.normal(0, 0.002, (2, n)))
    high = np.maximum(open_, close) * (1 + wick[0])
    low = np.minimum(open_, close) * (1 - wick[1])
    volume = 50.0 * np.exp(rng.normal(0, 0.3, n))
    index = pd.date_range(start, periods=n, freq="1h", tz="UTC", name="time")
    return pd.DataFrame(
        {"open": open_, "high": high, "low": low, "close": close, "volume": volume}, index=index
    )


@pytest.fixture(scope="session")
def walk_candles() -> pd.DataFrame:
    """2,600 synthetic bars without gaps (the generator's regimes give the rules something to do)."""
    from ml_integration.synthetic import synthetic_candles

    return synthetic_candles(2600, seed=11, n_gaps=0)
