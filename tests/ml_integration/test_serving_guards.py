"""Serving refuses what it must not use: a synthetic-data model on a live exchange, a stale
candle store, a model slower than its budget. Each gives ml_analysis.error, never an exception."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from engine.alert import Alert
from ml_integration import save_version, synthetic_candles
from ml_integration.serving import SignalService
from storage import Storage
from storage.candles import upsert_candles
from storage.database import query_one
from tests.conftest import copy_model_store, make_settings
from webhook import create_app, get_gateway


def _rows(frame: pd.DataFrame) -> list[list[float]]:
    return [
        [int(t.timestamp() * 1000), *v]
        for t, v in zip(frame.index, frame.itertuples(index=False), strict=True)
    ]


#: The instant these tests serve at: the newest synthetic bar opened at NEWEST_BAR, ten minutes
#: before NOW (the service reads NOW, not the machine's clock, for the candles' age).
NEWEST_BAR = 1_717_416_000  # 2024-06-03 12:00 UTC
NOW = NEWEST_BAR + 600.0


@pytest.fixture(scope="module")
def model_dir(
    tmp_path_factory: pytest.TempPathFactory, model_store: Path
) -> Iterator[tuple[Path, pd.DataFrame]]:
    folder = tmp_path_factory.mktemp("guards")
    models = copy_model_store(model_store, folder / "models")
    candles = synthetic_candles(
        1500, seed=9, n_gaps=0, start=pd.Timestamp(NEWEST_BAR - 1499 * 3600, unit="s", tz="UTC").isoformat()
    )
    yield models, candles


def service(tmp_path: Path, models: Path, candles: pd.DataFrame, **kwargs: object) -> SignalService:
    settings = make_settings(
        tmp_path,
        TVGW_ML_ENABLED="true",
        TVGW_MODEL_DIR=str(models),
        **{k: str(v) for k, v in kwargs.items() if k.startswith("TVGW_")},
    )
    storage = Storage(settings.database)
    storage.migrate()
    upsert_candles(storage, "BTC/USDT", "1h", _rows(candles), "test")
    live = bool(kwargs.get("live_exchange", False))
    return SignalService(settings, storage, live_exchange=live, now=lambda: NOW)


ALERT = Alert.model_validate(
    {
        "ticker": "BTCUSDT",
        "action": "buy",
        "interval": "60",
        "price": 30000,
        "timenow": NOW,
    }
)


def test_the_model_runs_when_all_is_well(tmp_path: Path, model_dir: tuple[Path, pd.DataFrame]) -> None:
    models, candles = model_dir
    subject = service(tmp_path, models, candles)
    result = subject.serve("BTC/USDT", "1h", ALERT.bar_row())
    assert result.signal is not None and "error" not in result.analysis()


def test_synthetic_model_never_drives_a_live_exchange(
    tmp_path: Path, model_dir: tuple[Path, pd.DataFrame]
) -> None:
    models, candles = model_dir
    subject = service(tmp_path, models, candles, live_exchange=True)
    result = subject.serve("BTC/USDT", "1h", ALERT.bar_row())
    assert result.signal is None and "synthetic" in result.analysis()["error"]


def test_stale_candle_store_is_refused(tmp_path: Path, model_dir: tuple[Path, pd.DataFrame]) -> None:
    models, candles = model_dir
    subject = service(tmp_path, models, candles.iloc[:-10])  # newest candle 10 h old
    result = subject.serve("BTC/USDT", "1h", ALERT.bar_row())
    assert result.signal is None and "stale candle store" in result.analysis()["error"]


def test_a_model_slower_than_its_budget_falls_back(
    tmp_path: Path, model_dir: tuple[Path, pd.DataFrame]
) -> None:
    """A model that does not answer within TVGW_ML_BUDGET_MS: the alert goes on without it. The
    model is made to wait on an event the test holds, so the outcome never depends on how fast
    this machine is."""
    models, candles = model_dir
    subject = service(tmp_path, models, candles, TVGW_ML_BUDGET_MS="50")
    subject.serve("BTC/USDT", "1h", ALERT.bar_row())  # loads the model (whatever it answers)
    market = subject._markets[("BTC/USDT", "1h")]
    release = threading.Event()
    model = market.strategy

    def stuck(*args: Any, **kwargs: Any) -> Any:
        release.wait(timeout=60)
        raise RuntimeError("released")

    market.signal = None
    model.generate_signal = stuck
    try:
        result = subject.serve("BTC/USDT", "1h", ALERT.bar_row())
    finally:
        release.set()
    assert result.signal is None and "budget" in result.analysis()["error"]


def test_a_new_model_version_is_picked_up_without_a_restart(
    tmp_path: Path, model_dir: tuple[Path, pd.DataFrame], monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from ml_integration import load_latest_strategy, serving

    models, candles = model_dir
    own = tmp_path / "models"
    shutil.copytree(models, own)
    subject = service(tmp_path, own, candles)
    first = subject.serve("BTC/USDT", "1h", ALERT.bar_row())
    monkeypatch.setattr(serving, "RELOAD_CHECK_S", 0.0)
    newer = save_version(load_latest_strategy(own, "BTC/USDT", "1h"), own, "BTC/USDT", "1h", version="v-next")
    assert newer.name == "v-next"
    second = subject.serve("BTC/USDT", "1h", ALERT.bar_row())
    assert second.analysis()["model_version"] == "v-next"
    assert first.analysis()["model_version"] != "v-next"


def test_missing_candles_are_fetched_from_the_exchange_within_the_budget(
    tmp_path: Path, model_dir: tuple[Path, pd.DataFrame], fake_exchange: Any
) -> None:
    models, _ = model_dir
    settings = make_settings(
        tmp_path,
        TVGW_ML_ENABLED="true",
        TVGW_MODEL_DIR=str(models),
        TVGW_MARKET_DATA="binance",
        TVGW_EXCHANGE_API_URL=fake_exchange.url,
        TVGW_MARKET_DATA_BUDGET_MS="5000",
    )
    app = create_app(settings)
    gateway = get_gateway(app)
    result = gateway.signals.serve("BTC/USDT", "1h", ALERT.bar_row())
    assert result.signal is not None, result.analysis()  # the empty store was filled from the exchange
    assert fake_exchange.request_count("GET", "/api/v3/klines") >= 1
    stored = query_one(Storage(settings.database), "SELECT COUNT(*), MIN(source) FROM candles")
    assert stored[0] >= 300 and stored[1] == "ccxt:binance"
    before = fake_exchange.request_count("GET", "/api/v3/klines")
    gateway.signals.serve("BTC/USDT", "1h", ALERT.bar_row())
    assert fake_exchange.request_count("GET", "/api/v3/klines") == before  # current: no new fetch


def test_models_are_loaded_when_the_worker_starts(
    tmp_path: Path, model_dir: tuple[Path, pd.DataFrame]
) -> None:
    models, _ = model_dir
    settings = make_settings(tmp_path, TVGW_ML_ENABLED="true", TVGW_MODEL_DIR=str(models))
    gateway = get_gateway(create_app(settings))
    latest = (models / "BTC_USDT_1h" / "latest").read_text().strip()
    # A background thread loads every model at start-up, before any alert; 60 s is generous.
    assert gateway.signals.preloaded.wait(60), "the start-up preload did not finish in 60 s"
    assert gateway.signals.status().worker_models() == {"BTC/USDT 1h": latest}


def test_recent_accuracy_in_the_prediction_log_reaches_the_signal(
    tmp_path: Path, model_dir: tuple[Path, pd.DataFrame]
) -> None:
    """The served strategy reads its own version's newest resolved predictions (a real SQLite
    log): 10 right of 60 cuts Kelly to zero and the reason says so; another version's outcomes
    are not this model's record."""
    from ml_integration import latest_version
    from storage.predictions import insert_prediction, resolve_prediction

    models, candles = model_dir
    subject = service(tmp_path, models, candles)
    version = latest_version(models, "BTC/USDT", "1h")
    now = NOW
    with subject.storage.conn as conn:
        for i in range(120):
            mine = i < 60
            row_id = insert_prediction(
                conn, timestamp=now - 7200 + i, alert_id=None, symbol="BTC/USDT", timeframe="1h",
                model_version=version if mine else "older", direction_prob=0.6, magnitude_pred=0.0,
                confidence=0.6, horizon=5, candle_time=now - 7200, target_time=now - 3600,
                price_at_prediction=30000.0, synthetic=1,
            )  # fmt: skip
            right = 1.0 if (i < 10 or not mine) else 0.0
            resolve_prediction(
                conn, row_id, actual_direction=1, actual_magnitude=0.0, prediction_accuracy=right
            )
    result = subject.serve("BTC/USDT", "1h", ALERT.bar_row())
    assert result.signal is not None
    assert "recent accuracy <= " in result.signal.reason and "(10/60)" in result.signal.reason
    assert result.signal.kelly_fraction == 0.0
