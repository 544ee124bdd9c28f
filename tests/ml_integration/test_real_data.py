"""End to end on the shared real BTC/USDT 1h candles (skipped when ../shared/data is absent)."""

from __future__ import annotations

import numpy as np
import pytest

from ml_integration.candles import read_candle_file
from ml_integration.features import FeatureEngineering
from ml_integration.store import load_latest_strategy, save_version
from ml_integration.strategy import MLTradingStrategy
from tests.conftest import shared_candle_file

from .conftest import TINY

pytestmark = [pytest.mark.shared_data, pytest.mark.slow]  # trains on a year of real candles


def test_train_predict_save_load_on_recent_btc(tmp_path):
    frame = read_candle_file(shared_candle_file("BTC_USDT-1h.json"))
    recent = frame.iloc[-3000:]
    strategy = MLTradingStrategy(model_config=TINY)
    report = strategy.train_strategy(recent, symbol="BTC/USDT", timeframe="1h")
    assert report["holdout"]["direction"]["n"] > 300
    save_version(strategy, tmp_path, "BTC/USDT", "1h", version="real")
    loaded = load_latest_strategy(tmp_path, "BTC/USDT", "1h")
    now = recent.index[-1].timestamp() + 3600
    signal = loaded.generate_signal(recent, "BTC/USDT", now=now).to_dict()
    assert signal["synthetic"] is False and signal["model_version"] == "real"
    direct = strategy.generate_signal(recent, "BTC/USDT", now=now).to_dict()
    assert signal == {**direct, "model_version": "real"}
    assert signal["entry_price"] == recent["close"].iloc[-1]


def test_real_gaps_invalidate_only_the_windows_that_straddle_them():
    frame = read_candle_file(shared_candle_file("BTC_USDT-1h.json"))
    window = frame.loc["2018-01-20":"2018-03-20"]  # holds the 33-hour outage of 2018-02-08
    features = FeatureEngineering().create_features(window)
    valid = features.notna().all(axis=1)
    hole_end = window.index[window.index.get_loc("2018-02-08 00:00") + 1]
    assert (hole_end - window.index[window.index.get_loc("2018-02-08 00:00")]).total_seconds() == 34 * 3600
    assert not valid.loc[hole_end:].iloc[:199].any()
    assert valid.loc[:"2018-02-08 00:00"].iloc[-1]
    assert np.isfinite(features.loc[valid].to_numpy()).all()
