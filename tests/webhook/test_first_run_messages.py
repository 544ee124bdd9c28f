"""What a new user meets first: the published schema agrees with the webhook, and the short
"ML enhanced" message trades out of the box, sized by its own Kelly fraction."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from engine.alert import Alert
from ml_integration.candles import frame_to_rows
from ml_integration.synthetic import synthetic_history
from storage.candles import upsert_candles
from storage.database import Storage
from tests.conftest import PASSPHRASE, make_settings, sample_alert
from webhook import create_app

SHORT = {"action": "buy", "symbol": "BTCUSDT", "ml_confidence": 0.72, "sentiment_score": 0.1}


def test_schema_and_webhook_agree_on_unknown_fields(client: Any, settings: Any) -> None:
    schema = Alert.model_json_schema()
    assert schema["additionalProperties"] is True
    assert "extras" not in schema["properties"]  # where unknown fields land, not a field to send
    reply = client.post("/webhook", json=sample_alert(my_note="kept", leverage_hint=3))
    assert reply.status_code == 200, reply.json
    assert reply.json["status"] == "executed"
    payload = sqlite3.connect(settings.database).execute("SELECT payload FROM alerts").fetchone()[0]
    assert "my_note" in payload and "leverage_hint" in payload


def test_schema_lists_every_field_the_webhook_reads(settings: Any) -> None:
    schema = Alert.model_json_schema()
    assert set(schema["properties"]) == set(Alert.model_fields) - {"extras"}
    assert set(schema["required"]) == {"ticker", "action"}


def _store_with_candles(tmp_path: Path, *, bars_ago: int) -> Any:
    """Settings with ML on (no model) and a candle store whose last 1h bar is ``bars_ago`` old."""
    settings = make_settings(tmp_path, TVGW_ML_ENABLED="true")
    storage = Storage(settings.database)
    storage.migrate()
    frame = synthetic_history(200, seed=1, timeframe="1h", now_s=time.time() - bars_ago * 3600)
    upsert_candles(storage, "BTC/USDT", "1h", frame_to_rows(frame), "synthetic")
    storage.close()
    return settings, float(frame["close"].iloc[-1])


def test_short_ml_message_trades_sized_by_its_kelly_fraction(tmp_path: Path) -> None:
    settings, last_close = _store_with_candles(tmp_path, bars_ago=0)
    client = create_app(settings).test_client()
    reply = client.post("/webhook", json={**SHORT, "passphrase": PASSPHRASE, "kelly_fraction": 0.05})
    body = reply.json
    assert reply.status_code == 200, body
    assert body["status"] == "executed", body
    order = body["decision"]["order"]
    # priced from the candle store (the message has no price), sized 5 % of the 10 000 book
    assert order["price"] == pytest.approx(last_close)
    # rounded down to the paper market's amount step (1e-8)
    assert order["amount"] == pytest.approx(0.05 * settings.paper.starting_balance / last_close, abs=1e-8)
    assert "Kelly fraction 0.050" in body["decision"]["reason"]


@pytest.mark.parametrize("kelly", [0.0, -0.2])
def test_short_ml_message_without_edge_places_nothing(tmp_path: Path, kelly: float) -> None:
    settings, _ = _store_with_candles(tmp_path, bars_ago=0)
    client = create_app(settings).test_client()
    body = client.post("/webhook", json={**SHORT, "passphrase": PASSPHRASE, "kelly_fraction": kelly}).json
    assert body["status"] == "rejected"
    assert "no edge" in body["decision"]["reason"]


def test_message_with_neither_contracts_nor_kelly_says_so(tmp_path: Path) -> None:
    settings, _ = _store_with_candles(tmp_path, bars_ago=0)
    client = create_app(settings).test_client()
    body = client.post("/webhook", json={**SHORT, "passphrase": PASSPHRASE}).json
    assert body["status"] == "rejected"
    assert "neither contracts nor kelly_fraction" in body["decision"]["reason"]


def test_stale_candles_are_not_a_price(tmp_path: Path) -> None:
    settings, _ = _store_with_candles(tmp_path, bars_ago=10)
    client = create_app(settings).test_client()
    reply = client.post("/webhook", json={**SHORT, "passphrase": PASSPHRASE, "kelly_fraction": 0.05})
    assert reply.status_code == 422 and reply.json["error"]["code"] == "no_market_price"
