"""Serving refuses what it must not use: a synthetic-data model on a live exchange, a stale
candle store, a model slower than its budget. Each gives ml_analysis.error, never an exception."""

from __future__ import annotations

import threading
import time
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
from tests.conftest import copy_model_store, make_settings, wait_until
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
    assert market.roles is not None
    model = market.models[market.roles.champion]

    def stuck(*args: Any, **kwargs: Any) -> Any:
        release.wait(timeout=60)
        raise RuntimeError("released")

    market.signals.clear()
    model.generate_signal = stuck
    try:
        result = subject.serve("BTC/USDT", "1h", ALERT.bar_row())
    finally:
        release.set()
    assert result.signal is None and "budget" in result.analysis()["error"]


def test_a_new_model_version_shadows_the_champion_without_a_restart(
    tmp_path: Path, model_dir: tuple[Path, pd.DataFrame], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A version saved while the worker runs is enrolled as challenger at the worker's next look
    at the store: it runs beside the champion (whose call is still the one the engine reads),
    and the alert's record holds both predictions, marked by role."""
    import shutil

    from ml_integration import load_latest_strategy, serving

    models, candles = model_dir
    own = tmp_path / "models"
    shutil.copytree(models, own)
    subject = service(tmp_path, own, candles)
    first = subject.serve("BTC/USDT", "1h", ALERT.bar_row())
    champion = first.analysis()["model_version"]
    assert first.shadow is None and first.shadow_row() is None
    monkeypatch.setattr(serving, "RELOAD_CHECK_S", 0.0)
    newer = save_version(load_latest_strategy(own, "BTC/USDT", "1h"), own, "BTC/USDT", "1h", version="v-next")
    assert newer.name == "v-next"
    second = subject.serve("BTC/USDT", "1h", ALERT.bar_row())
    analysis = second.analysis()
    assert analysis["model_version"] == champion != "v-next" and analysis["model_role"] == "champion"
    assert analysis["shadow"]["model_version"] == "v-next" and analysis["shadow"]["acted_on"] is False
    assert second.direction_probability == second.signal.ml_probability  # the champion's, acted on
    with subject.storage.transaction() as conn:
        second.record(conn, None, time.time())
    rows = subject.storage.conn.execute("SELECT model_version, role FROM ml_predictions ORDER BY id")
    assert [tuple(r) for r in rows] == [(champion, "champion"), ("v-next", "challenger")]


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


def test_every_worker_acts_on_the_champion_the_database_names_from_its_next_alert(
    tmp_path: Path, model_dir: tuple[Path, pd.DataFrame]
) -> None:
    """Two workers (two services on one database): a promotion or a rollback committed by
    anyone is what both serve on their very next alert, with no reload delay; and when ML-driven
    sizing is switched off, both give the engine no ML opinion, say why, still log the champion's
    call, and /healthz names the market."""
    import shutil

    from ml_integration.champions import ChampionRules, promote, rollback
    from storage import champions as role_store

    models, candles = model_dir
    own = tmp_path / "models"
    shutil.copytree(models, own)
    workers = [service(tmp_path, own, candles), service(tmp_path, own, candles)]
    champion = workers[0].serve("BTC/USDT", "1h", ALERT.bar_row()).analysis()["model_version"]
    save_version(workers[0]._loaded(workers[0]._market("BTC/USDT", "1h"), "BTC/USDT", "1h", champion)[0], own,
                 "BTC/USDT", "1h", version="v-hand")  # fmt: skip
    storage = workers[0].storage
    promote(storage, own, "BTC/USDT", "1h", "v-hand", actor="ana", reason="by hand", rules=ChampionRules())
    assert [w.serve("BTC/USDT", "1h", ALERT.bar_row()).analysis()["model_version"] for w in workers] == [
        "v-hand",
        "v-hand",
    ]
    rollback(storage, own, "BTC/USDT", "1h", actor="ana", reason="undo")
    assert {w.serve("BTC/USDT", "1h", ALERT.bar_row()).analysis()["model_version"] for w in workers} == {
        champion
    }

    roles = role_store.get_roles(storage, "BTC/USDT", "1h")
    assert roles is not None and role_store.set_fallback(
        storage, roles, "planted: no better", now=time.time()
    )
    for worker in workers:
        served = worker.serve("BTC/USDT", "1h", ALERT.bar_row())
        assert served.signal is not None and served.direction_probability is None  # no ML opinion
        assert served.kelly_fraction == 0.0 and served.stop_loss is None and served.leverage == 1.0
        analysis = served.analysis()
        assert (
            analysis["error"] == "ML-driven sizing is off: planted: no better"
            and analysis["ml_sizing"] == "off"
        )
        assert "direction_probability" not in analysis and analysis["logged_prediction"]["acted_on"] is False
        row = served.prediction_row()
        assert row is not None and row["role"] == "champion" and row["model_version"] == champion
        status = worker.status()
        assert (
            not status.ok and "ML-driven sizing is off for BTC/USDT 1h: planted: no better" in status.problems
        )


def test_a_slow_challenger_never_holds_up_the_answer_nor_builds_a_queue(
    tmp_path: Path, model_dir: tuple[Path, pd.DataFrame], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A challenger stuck on an event the test holds: each alert still gets the champion's call
    within the budget, the shadow says it missed, and once SHADOW_SLOTS calls are pending the next
    alert runs no shadow at all; released, the challenger serves again."""
    import shutil

    from ml_integration import load_latest_strategy, serving

    models, candles = model_dir
    own = tmp_path / "models"
    shutil.copytree(models, own)
    subject = service(tmp_path, own, candles, TVGW_ML_BUDGET_MS="300")
    assert subject.serve("BTC/USDT", "1h", ALERT.bar_row()).signal is not None  # the champion's call, kept
    monkeypatch.setattr(serving, "RELOAD_CHECK_S", 0.0)
    save_version(load_latest_strategy(own, "BTC/USDT", "1h"), own, "BTC/USDT", "1h", version="v-slow")
    assert subject.serve("BTC/USDT", "1h", ALERT.bar_row()).shadow is not None  # enrolled and loaded
    market = subject._markets[("BTC/USDT", "1h")]
    challenger = market.models["v-slow"]
    release = threading.Event()

    def stuck(*args: Any, **kwargs: Any) -> Any:
        release.wait(timeout=60)
        raise RuntimeError("released")

    market.signals.pop("v-slow", None)
    challenger.generate_signal = stuck
    try:
        shadows = [subject.serve("BTC/USDT", "1h", ALERT.bar_row()) for _ in range(serving.SHADOW_SLOTS + 1)]
    finally:
        release.set()
    assert all(s.signal is not None and s.shadow is not None for s in shadows)
    assert all(s.shadow is not None and "ML budget" in (s.shadow.error or "") for s in shadows[:-1])
    assert shadows[-1].shadow is not None and "busy with earlier alerts" in (shadows[-1].shadow.error or "")
    assert all(s.shadow_row() is None for s in shadows)  # nothing logged for a shadow that did not answer
    del challenger.generate_signal  # the model's own method again

    def answered() -> bool:
        shadow = subject.serve("BTC/USDT", "1h", ALERT.bar_row()).shadow
        return shadow is not None and shadow.signal is not None

    wait_until(answered, 60, "the challenger serving again once the released calls freed their slots")
