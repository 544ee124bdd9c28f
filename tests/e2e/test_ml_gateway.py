"""The real gateway with a model trained on synthetic candles: enrichment, prediction log,
decisions per mode, risk refusals, outcomes and accuracy, and ML failures that degrade."""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest

from ml_integration import MLTradingStrategy, save_version, synthetic_candles
from ml_integration.tracking import evaluate_recent_performance, resolve_outcomes
from storage import Storage
from storage.candles import upsert_candles
from tests.conftest import LiveGateway, db_rows, sample_alert, start_gateway, store_target
from tests.ml_integration.conftest import TINY

pytestmark = pytest.mark.slow

CONFIG = """
[strategies.annot]
passphrase = "test-secret"
mode = "annotate"
[strategies.gate]
passphrase = "test-secret"
mode = "ml_gate"
ml_threshold = 0.0
[strategies.strictgate]
passphrase = "test-secret"
mode = "ml_gate"
ml_threshold = 0.999
[strategies.hyb]
passphrase = "test-secret"
mode = "hybrid"
[strategies.capped]
passphrase = "test-secret"
mode = "execute"
[risk]
max_open_positions = 1
"""


def _rows(frame: pd.DataFrame) -> list[list[float]]:
    values = frame[["open", "high", "low", "close", "volume"]].itertuples(index=False)
    return [[int(ts.timestamp() * 1000), *v] for ts, v in zip(frame.index, values, strict=True)]


@pytest.fixture(scope="module")
def ml_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    tmp = tmp_path_factory.mktemp("mlgw")
    now_hour = int(time.time() // 3600 * 3600)
    start = pd.Timestamp(now_hour - 2499 * 3600, unit="s", tz="UTC")
    candles = synthetic_candles(2500, seed=11, n_gaps=0, start=start.isoformat())
    strategy = MLTradingStrategy(model_config=TINY)
    strategy.train_strategy(candles, synthetic=True, symbol="BTC/USDT", timeframe="1h")
    save_version(strategy, tmp / "models", "BTC/USDT", "1h")
    # A broken model for SOL: an artifact changed after sealing.
    broken = save_version(strategy, tmp / "models", "SOL/USDT", "1h")
    victim = next(p for p in sorted(broken.iterdir()) if p.name != "metadata.json" and p.is_file())
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    storage = Storage(store_target(tmp))
    storage.migrate()
    # They stand for a market's candles (source "test"): a store of generated candles (source
    # "synthetic") is a synthetic market, which never takes an alert's bar (test_first_alert.py).
    upsert_candles(storage, "BTC/USDT", "1h", _rows(candles), "test")
    upsert_candles(storage, "SOL/USDT", "1h", _rows(candles), "test")
    (tmp / "tvgw.toml").write_text(CONFIG)
    gateway = start_gateway(
        tmp, TVGW_ML_ENABLED="true", TVGW_MODEL_DIR=str(tmp / "models"), TVGW_CONFIG=str(tmp / "tvgw.toml"),
        TVGW_RESOLVE_INTERVAL_S="0", prices={"ETH/USDT": 2000.0},
    )  # fmt: skip
    gateway.candles = candles  # type: ignore[attr-defined]
    yield gateway
    gateway.stop()
    shutil.rmtree(tmp, ignore_errors=True)


def market_price(gateway: LiveGateway, ticker: str) -> float:
    """The newest stored close: the market price the gateway checks an alert's price against."""
    symbol = ticker.removesuffix("USDT") + "/USDT"
    sql = f"SELECT close FROM candles WHERE symbol = '{symbol}' AND timeframe = '1h' ORDER BY ts_ms DESC"
    return float(query(gateway, sql + " LIMIT 1")[0][0])


def post(gateway: LiveGateway, **fields: Any) -> dict[str, Any]:
    fields.setdefault("price", market_price(gateway, fields.get("ticker", "BTCUSDT")))
    response = gateway.post(sample_alert(**fields))
    assert response.status_code < 500, response.text
    return response.json()


def model_side(gateway: LiveGateway) -> tuple[str, str]:
    """(side the model favours, the other side), from an annotate-only probe."""
    body = post(gateway, strategy_id="annot", order_id=f"probe-{uuid.uuid4().hex[:8]}")
    p = body["ml_analysis"]["direction_probability"]
    return ("buy", "sell") if p > 0.5 else ("sell", "buy")


def query(gateway: LiveGateway, sql: str) -> list[Any]:
    return db_rows(gateway.database, sql)


def test_every_alert_is_enriched_and_logged(ml_gateway: LiveGateway) -> None:
    body = post(ml_gateway, strategy_id="annot", order_id="enrich-1")
    analysis = body["ml_analysis"]
    assert body["status"] == "annotated"
    for key in (
        "direction_probability",
        "sentiment_score",
        "quality_grade",
        "recommended_position",
        "model_version",
        "candle_time",
    ):
        assert key in analysis, key
    assert 0.0 <= analysis["direction_probability"] <= 1.0
    assert analysis["synthetic"] is True and "SYNTHETIC" in analysis["warning"]
    (row,) = query(ml_gateway, f"SELECT * FROM ml_predictions WHERE alert_id = {body['alert_id']}")
    assert row["model_version"] == analysis["model_version"]
    assert row["direction_prob"] == pytest.approx(analysis["direction_probability"], abs=1e-4)
    assert row["target_time"] == row["candle_time"] + row["horizon"] * 3600


def test_a_signal_is_reused_while_its_inputs_are_unchanged(ml_gateway: LiveGateway) -> None:
    bodies = [post(ml_gateway, strategy_id="annot", order_id=f"reuse-{n}") for n in range(6)]
    analyses = [b["ml_analysis"] for b in bodies]
    assert any(a["reused"] for a in analyses)  # two workers: each computes at most once
    assert len({a["direction_probability"] for a in analyses}) == 1
    ids = ",".join(str(b["alert_id"]) for b in bodies)
    rows = query(ml_gateway, f"SELECT COUNT(*) FROM ml_predictions WHERE alert_id IN ({ids})")
    assert rows[0][0] == 6  # still one prediction row per alert


def test_the_bar_an_alert_carries_feeds_the_candle_store(ml_gateway: LiveGateway) -> None:
    hour = int(time.time() // 3600 * 3600)
    bar = {"open": 100.0, "high": 101.0, "low": 99.0, "close": 100.5, "volume": 7.0}
    stamp = pd.Timestamp(hour, unit="s", tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ")
    body = post(ml_gateway, strategy_id="annot", order_id="bar", time=stamp, **bar)
    assert body["ml_analysis"]["candle_time"].startswith(
        pd.Timestamp(hour, unit="s", tz="UTC").isoformat()[:19]
    )
    (row,) = query(ml_gateway, f"SELECT * FROM candles WHERE symbol = 'BTC/USDT' AND ts_ms = {hour * 1000}")
    assert (row["source"], row["close"], row["volume"]) == ("alert", 100.5, 7.0)


def test_ml_gate_trades_only_with_the_model(ml_gateway: LiveGateway) -> None:
    agree, disagree = model_side(ml_gateway)
    with_model = post(ml_gateway, strategy_id="gate", action=agree, order_id="gate-agree")
    assert with_model["status"] == "executed", with_model
    against = post(
        ml_gateway, strategy_id="gate", action=disagree, order_id="gate-against", contracts=0.05
    )  # more than the open position: it would open the other side
    assert against["status"] == "annotated" and "disagrees" in against["decision"]["reason"]
    strict = post(
        ml_gateway,
        strategy_id="strictgate",
        action=agree,
        order_id="gate-strict",
        ticker="BTCUSDT",
        contracts=0.001,
    )
    assert strict["status"] == "annotated" and "below threshold" in strict["decision"]["reason"]


def test_hybrid_needs_the_score(ml_gateway: LiveGateway) -> None:
    agree, _ = model_side(ml_gateway)
    weak = post(ml_gateway, strategy_id="hyb", action=agree, technical_score=2, order_id="hyb-weak")
    assert weak["status"] == "annotated" and weak["decision"]["reason"].startswith("hybrid: score 2")
    strong = post(ml_gateway, strategy_id="hyb", action=agree, technical_score=9, order_id="hyb-strong")
    assert strong["status"] == "executed", strong


def test_risk_refusal_is_recorded_with_its_reason(ml_gateway: LiveGateway) -> None:
    post(ml_gateway, strategy_id="capped", ticker="BTCUSDT", order_id="cap-1")  # one position is open
    refused = post(ml_gateway, strategy_id="capped", ticker="ETHUSDT", price=2000.0, order_id="cap-2")
    assert refused["status"] == "rejected"
    assert "max_open_positions" in refused["decision"]["risk"]["codes"]
    (row,) = query(ml_gateway, f"SELECT status, reason FROM alerts WHERE id = {refused['alert_id']}")
    assert row["status"] == "rejected" and row["reason"] == refused["decision"]["reason"]


def test_failing_ml_degrades_with_a_clear_error(ml_gateway: LiveGateway) -> None:
    no_model = post(ml_gateway, strategy_id="annot", ticker="ETHUSDT", price=2000.0, order_id="eth")
    assert "no trained model for ETH/USDT 1h" in no_model["ml_analysis"]["error"]
    broken = post(ml_gateway, ticker="SOLUSDT", contracts=1, order_id="sol")
    assert "failed to load" in broken["ml_analysis"]["error"]
    assert "sha256" in broken["ml_analysis"]["error"] or "hash" in broken["ml_analysis"]["error"]
    # The execute strategy's rule still decides (here the one-position risk cap refuses it).
    assert broken["status"] == "rejected" and broken["decision"]["risk"]["codes"] == ["max_open_positions"]
    assert not query(ml_gateway, f"SELECT * FROM ml_predictions WHERE alert_id = {broken['alert_id']}")


def test_outcomes_resolve_and_accuracy_is_computed(ml_gateway: LiveGateway) -> None:
    post(ml_gateway, strategy_id="annot", order_id="outcome")
    storage = Storage(ml_gateway.database)
    predictions = query(ml_gateway, "SELECT * FROM ml_predictions")
    assert predictions
    target = max(r["target_time"] for r in predictions)
    assert resolve_outcomes(storage, now=target + 3600) == 0  # the target candles are not in the store
    # The market moves: candles up to the targets arrive (each 1% above the last).
    last = ml_gateway.candles.iloc[-1]  # type: ignore[attr-defined]
    start = int(ml_gateway.candles.index[-1].timestamp()) + 3600  # type: ignore[attr-defined]
    rows, price = [], float(last["close"])
    for ts in range(start, int(target) + 3601, 3600):
        price *= 1.01
        rows.append([ts * 1000, price, price * 1.001, price * 0.999, price, 10.0])
    upsert_candles(storage, "BTC/USDT", "1h", rows, "test")
    resolved = resolve_outcomes(storage, now=target + 3600)
    assert resolved == len(predictions)
    assert resolve_outcomes(storage, now=target + 3600) == 0  # idempotent
    report = evaluate_recent_performance(storage, "BTC/USDT", days=30, now=target + 3600)
    assert report["total_predictions"] == len(predictions)
    ups = sum(1 for r in predictions if r["direction_prob"] >= 0.5)
    assert report["direction_accuracy"] == pytest.approx(ups / len(predictions), abs=1e-4)
    assert report["base_rate"] == 1.0 and report["majority_accuracy"] == 1.0
    low, high = report["accuracy_ci95"]
    assert low <= report["direction_accuracy"] <= high
