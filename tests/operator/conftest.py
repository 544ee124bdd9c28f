"""Fixtures for the operator surface: an app with an API token, a model store holding two tiny
tree-only versions, and a candle store current up to now (so on-demand predictions run)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from ml_integration import MLTradingStrategy, save_version, synthetic_candles
from storage import Storage
from storage.candles import upsert_candles
from tests.conftest import make_settings, market_app
from tests.ml_integration.conftest import TINY
from tests.operator.browser import Browser, find_chromium

TOKEN = "operator-token-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
#: Trees only: trains in about a second and needs no TensorFlow.
TINY_TREES = replace(TINY, use_lstm=False)


@pytest.fixture
def chromium() -> Iterator[Browser]:
    """A headless Chromium for the pages (skips, saying how to get one, where none is installed)."""
    executable = find_chromium()
    if executable is None:
        pytest.skip("no Chromium installed (apt-get install chromium; .ci/run installs it)")
    browser = Browser(executable)
    yield browser
    browser.close()


@pytest.fixture(scope="session")
def recent_candles() -> pd.DataFrame:
    """1,500 hourly synthetic candles ending at the current hour (fresh enough to serve)."""
    hour = int(time.time() // 3600 * 3600)
    start = pd.Timestamp(hour - 1499 * 3600, unit="s", tz="UTC").isoformat()
    return synthetic_candles(1500, seed=11, n_gaps=0, start=start)


@pytest.fixture(scope="session")
def tiny_strategy(recent_candles: pd.DataFrame) -> MLTradingStrategy:
    strategy = MLTradingStrategy(model_config=TINY_TREES)
    strategy.train_strategy(recent_candles, synthetic=True, symbol="BTC/USDT", timeframe="1h")
    return strategy


def candle_rows(frame: pd.DataFrame) -> list[list[float]]:
    return [
        [int(t.timestamp() * 1000), *v]
        for t, v in zip(frame.index, frame.itertuples(index=False), strict=True)
    ]


@pytest.fixture
def store(tmp_path: Path, tiny_strategy: MLTradingStrategy, recent_candles: pd.DataFrame) -> dict[str, Any]:
    """Two saved versions ("v1", "v2"; "v2" is latest) and the candle store filled."""
    model_dir = tmp_path / "models"
    for version in ("v1", "v2"):
        save_version(tiny_strategy, model_dir, "BTC/USDT", "1h", version=version)
    settings = make_settings(tmp_path, TVGW_API_TOKEN=TOKEN)
    storage = Storage(settings.database)
    storage.migrate()
    upsert_candles(storage, "BTC/USDT", "1h", candle_rows(recent_candles), "test")
    storage.close()
    return {"model_dir": model_dir, "tmp_path": tmp_path}


@pytest.fixture
def api(tmp_path: Path) -> Any:
    """The real app, ML off, API token set."""
    return market_app(make_settings(tmp_path, TVGW_API_TOKEN=TOKEN)).test_client()


@pytest.fixture
def ml_api(store: dict[str, Any]) -> Any:
    """The real app with ML on, over the model store and candle store of ``store``."""
    settings = make_settings(
        store["tmp_path"], TVGW_API_TOKEN=TOKEN, TVGW_ML_ENABLED="true", TVGW_RESOLVE_INTERVAL_S="0"
    )
    return market_app(settings).test_client()
