"""The whole gateway trading through real ccxt against the local fake Binance: the remote-broker
path (order intent committed, sent once, outcome committed), its failure modes, and start-up
reconciliation of an order a crash left pending."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import db_rows, db_write, make_settings, market_app, sample_alert
from tests.fake_exchange import DEFAULT_API_KEY, DEFAULT_SECRET, FakeBinance
from webhook.recovery import recover


@pytest.fixture
def exchange_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TVGW_BINANCE_API_KEY", DEFAULT_API_KEY)
    monkeypatch.setenv("TVGW_BINANCE_SECRET", DEFAULT_SECRET)


def binance_settings(tmp_path: Path, fake: FakeBinance, *, timeout_ms: str = "600", **env: str) -> Any:
    """Settings of a gateway trading on the fake Binance at ``fake.url``."""
    return make_settings(
        tmp_path,
        TVGW_BROKER="binance",
        TVGW_EXCHANGE_API_URL=fake.url,
        TVGW_EXCHANGE_TIMEOUT_MS=timeout_ms,
        **env,
    )


def gateway(tmp_path: Path, fake: FakeBinance, **env: str) -> tuple[Any, Any]:
    settings = binance_settings(tmp_path, fake, **env)
    return settings, market_app(settings).test_client()


def post(client: Any, **fields: Any) -> Any:
    return client.post("/webhook", data=json.dumps(sample_alert(**fields)))


def orders(settings: Any) -> list[Any]:
    return db_rows(settings.database, "SELECT * FROM orders ORDER BY id")


def test_buy_executes_on_the_exchange(tmp_path: Path, fake_exchange: FakeBinance, exchange_env: None) -> None:
    settings, client = gateway(tmp_path, fake_exchange)
    response = post(client, contracts=0.01, price=30000.0)
    assert response.status_code == 200, response.json
    body = response.json
    assert body["status"] == "executed"
    (row,) = orders(settings)
    assert (row["broker"], row["status"], row["filled"]) == ("binance", "filled", 0.01)
    (placed,) = fake_exchange.orders_for(row["client_order_id"])
    assert placed["side"] == "BUY" and placed["status"] == "FILLED"
    assert body["decision"]["fill"]["exchange_order_id"] == row["exchange_order_id"]


def test_timeout_on_create_is_reconciled_not_resent(
    tmp_path: Path, fake_exchange: FakeBinance, exchange_env: None
) -> None:
    settings, client = gateway(tmp_path, fake_exchange)
    fake_exchange.fail_next("POST /api/v3/order", "timeout")
    body = post(client, contracts=0.01).json
    assert body["status"] == "executed", body
    (row,) = orders(settings)
    assert len(fake_exchange.orders_for(row["client_order_id"])) == 1
    assert fake_exchange.request_count("POST", "/api/v3/order") == 1


def test_insufficient_balance_is_a_rejection(
    tmp_path: Path, fake_exchange: FakeBinance, exchange_env: None
) -> None:
    settings, client = gateway(tmp_path, fake_exchange)
    fake_exchange.fail_next("POST /api/v3/order", "insufficient_balance")
    response = post(client, contracts=0.01)
    assert response.status_code == 200
    assert (
        response.json["status"] == "rejected"
        and "insufficient" in response.json["decision"]["reason"].lower()
    )
    (row,) = orders(settings)
    assert row["status"] == "rejected"


def test_lost_order_is_uncertain_and_answered_502(
    tmp_path: Path, fake_exchange: FakeBinance, exchange_env: None
) -> None:
    settings, client = gateway(tmp_path, fake_exchange)
    fake_exchange.fail_next("POST /api/v3/order", "timeout_lost")
    response = post(client, contracts=0.01)
    assert response.status_code == 502
    assert response.json["status"] == "failed"
    (row,) = orders(settings)
    assert row["status"] == "unknown"
    assert fake_exchange.request_count("POST", "/api/v3/order") == 1  # never re-sent


def test_each_outcome_is_answered_and_recorded_with_one_http_status(
    tmp_path: Path, fake_exchange: FakeBinance, exchange_env: None
) -> None:
    """The decision's own status code (``Decision.http_status``) is what the sender gets and
    what the alert's row keeps: 200 for a fill, 422 for a refusal the sender must fix (a spot
    sell from flat), 502 when the exchange's answer was lost."""
    settings, client = gateway(tmp_path, fake_exchange)
    answers = [post(client, contracts=0.01, order_id="fill")]
    answers.append(
        post(client, ticker="ETHUSDT", price=1800.0, action="sell", contracts=0.1, order_id="short")
    )
    fake_exchange.fail_next("POST /api/v3/order", "timeout_lost")
    answers.append(post(client, contracts=0.01, order_id="lost"))
    assert [a.status_code for a in answers] == [200, 422, 502], [a.json for a in answers]
    assert answers[1].json["error"]["code"] == "spot_short"
    rows = db_rows(settings.database, "SELECT http_status FROM alerts ORDER BY id")
    assert [r["http_status"] for r in rows] == [200, 422, 502]


def test_pending_order_left_by_a_crash_is_reconciled_at_start(
    tmp_path: Path, fake_exchange: FakeBinance, exchange_env: None
) -> None:
    settings, client = gateway(tmp_path, fake_exchange)
    body = post(client, contracts=0.01).json
    assert body["status"] == "executed"
    # Simulate a worker that died after sending and before recording: mark it pending again.
    db_write(  # an hour ago: on a store hosts share, a younger one may be in flight on another host
        settings.database,
        "UPDATE orders SET status = 'pending', filled = 0, average = NULL, booked = 0, booked_cost = 0,"
        " booked_net = 0, booked_fees = NULL, updated_at = updated_at - 3600",
        "DELETE FROM positions",
        "UPDATE alerts SET status = 'processing', updated_at = updated_at - 3600",
    )
    lines = recover(settings)
    assert any("filled" in line for line in lines), lines
    (row,) = orders(settings)
    assert (row["status"], row["filled"]) == ("filled", 0.01)
    (status,) = db_rows(settings.database, "SELECT status FROM alerts")[0]
    (amount,) = db_rows(settings.database, "SELECT amount FROM positions")[0]
    assert status == "executed" and amount == pytest.approx(0.00999)  # net of the 0.1% fee taken in BTC


def test_concurrent_alerts_share_one_exchange_client_safely(
    tmp_path: Path, fake_exchange: FakeBinance, exchange_env: None
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    settings = binance_settings(tmp_path, fake_exchange, timeout_ms="2000")
    app = market_app(settings)

    def fire(n: int) -> str:
        # Buys only: a spot account cannot sell what it does not hold yet (a sell from flat is a
        # short, refused on spot), and concurrent sells would race the buys they close.
        body = (
            app.test_client()
            .post("/webhook", data=json.dumps(sample_alert(id=f"c{n}", action="buy", contracts=0.001)))
            .json
        )
        return str(body["status"])

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(fire, range(24)))
    assert statuses == ["executed"] * 24
    rows = orders(settings)
    assert len(rows) == 24 and all(r["status"] == "filled" for r in rows)
    assert fake_exchange.request_count("POST", "/api/v3/order") == 24


def test_without_candles_the_exchange_ticker_is_the_reference(
    tmp_path: Path, fake_exchange: FakeBinance, exchange_env: None
) -> None:
    settings = binance_settings(tmp_path, fake_exchange)
    # The price is set before the app starts: a ticker reading taken while it starts (of the
    # fake's default price) would still be fresh for the alerts below, which then saw 50000.
    fake_exchange.set_price("BTCUSDT", 40000)
    client = market_app(settings, prices={}).test_client()
    far = post(client, contracts=0.01, price=30000.0)
    assert far.status_code == 422 and far.json["error"]["code"] == "price_out_of_band"
    assert "40000" in far.json["error"]["message"] and "ticker" in far.json["error"]["message"]
    near = post(client, contracts=0.01, price=40100.0, order_id="near")
    assert near.status_code == 200 and near.json["status"] == "executed"
    assert near.json["decision"]["order"]["price"] == 40000.0  # the ticker, not the alert's claim
    assert orders(settings)[0]["amount"] == 0.01
