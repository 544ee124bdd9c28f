"""Every worker's candle window shows what the store holds: a newest bar replaced in place (same
open time, new values) by another worker's alert is seen on the next alert, not kept stale.

Two SignalServices on one SQLite file stand for two gunicorn workers (each has its own window)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from engine.alert import Alert
from ml_integration.serving import SignalService
from storage import Storage
from storage.candles import upsert_candles
from tests.conftest import ManualClock, make_settings, sample_alert

HOUR_MS = 3_600_000
#: The newest bar's open time; the services' clock reads ten minutes later (never the machine's).
NEWEST = ManualClock().now * 1000 // HOUR_MS * HOUR_MS


def worker(settings: Any) -> SignalService:
    return SignalService(settings, Storage(settings.database), now=ManualClock(NEWEST / 1000 + 600))


def window(subject: SignalService, settings: Any, **fields: Any) -> pd.DataFrame:
    alert = Alert.model_validate(sample_alert(timenow=NEWEST / 1000 + 600, **fields))
    result = subject.serve("BTC/USDT", "1h", alert.bar_row())
    assert result.candles is not None
    return result.candles


def test_a_replaced_newest_bar_is_seen_by_every_worker(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, TVGW_ML_ENABLED="true")  # no model: the window still loads
    store = Storage(settings.database)
    store.migrate()
    newest = int(NEWEST)
    bars = [[newest - k * HOUR_MS, 100.0, 101.0, 99.0, 100.0, 5.0] for k in range(5, -1, -1)]
    upsert_candles(store, "BTC/USDT", "1h", bars, "test")
    first, second = worker(settings), worker(settings)
    assert window(first, settings)["close"].iloc[-1] == 100.0
    assert window(second, settings)["close"].iloc[-1] == 100.0
    # Another worker's alert replaces the newest bar (same open time, new values).
    upsert_candles(store, "BTC/USDT", "1h", [[newest, 100.0, 104.0, 99.0, 103.5, 9.0]], "alert")
    for subject in (first, second):
        frame = window(subject, settings)
        assert frame.index[-1] == pd.Timestamp(newest, unit="ms", tz="UTC")
        assert frame.iloc[-1].tolist() == [100.0, 104.0, 99.0, 103.5, 9.0]
        assert len(frame) == 6  # replaced, not appended


def test_a_bar_only_one_window_holds_is_dropped_for_the_stored_truth(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, TVGW_ML_ENABLED="true")
    store = Storage(settings.database)
    store.migrate()
    newest = int(NEWEST)
    upsert_candles(store, "BTC/USDT", "1h", [[newest - HOUR_MS, 1.0, 1.0, 1.0, 1.0, 1.0]], "test")
    subject = worker(settings)
    stamp = pd.Timestamp(newest, unit="ms", tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ")
    bar = {"time": stamp, "open": 2.0, "high": 2.0, "low": 2.0, "close": 2.0, "volume": 1.0}
    assert window(subject, settings, **bar)["close"].iloc[-1] == 2.0  # the alert's own bar, in memory
    # That alert was never stored (refused); the stored bar at its time says otherwise.
    upsert_candles(store, "BTC/USDT", "1h", [[newest, 3.0, 3.0, 3.0, 3.0, 1.0]], "ccxt")
    assert window(subject, settings)["close"].tolist() == [1.0, 3.0]
