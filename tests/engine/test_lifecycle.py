"""The order lifecycle's parts, in one process against the fake Binance (real ccxt, a real
SQLite file): increments booked once, a fill without a price asked again, client ids unique per
installation, and an exit holder the exchange could not be asked about."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from engine.brokers.base import ExitHolder, OrderResult
from engine.brokers.ccxt_broker import CcxtBroker, _to_result
from engine.exceptions import ExchangeUnavailableError
from engine.exit_sync import watch_symbol
from engine.lifecycle import book
from storage import Storage
from storage.installation import installation_id
from tests.conftest import db_rows, make_settings, market_app, sample_alert, seed_market
from tests.fake_exchange import DEFAULT_API_KEY, DEFAULT_SECRET, FakeBinance
from webhook import get_gateway


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TVGW_BINANCE_API_KEY", DEFAULT_API_KEY)
    monkeypatch.setenv("TVGW_BINANCE_SECRET", DEFAULT_SECRET)


def exchange_app(folder: Path, fake: FakeBinance, **strategy: Any) -> tuple[Any, Any]:
    overrides = {"strategies": {"default": {"passphrase": "test-secret", **strategy}}}
    settings = make_settings(
        folder, overrides, TVGW_BROKER="binance", TVGW_EXCHANGE_API_URL=fake.url,
        TVGW_EXCHANGE_TIMEOUT_MS="600", TVGW_EXIT_WATCH_INTERVAL_S="0", TVGW_ORDER_POLL_INTERVAL_S="0",
        TVGW_RECONCILE_INTERVAL_S="0",
    )  # fmt: skip
    fake.set_price("BTCUSDT", 30000)
    return settings, market_app(settings)


def test_a_fresh_database_on_the_same_account_never_reuses_a_client_order_id(
    tmp_path: Path, fake_exchange: FakeBinance, keys: None
) -> None:
    """Both databases' first alert is alert 1: without the installation id in the client id the
    exchange would answer the second with the first's order ("Duplicate order sent"), and the
    fresh book would take the old fill for its own."""
    firsts = []
    for name in ("old", "fresh"):
        settings, app = exchange_app(tmp_path / name, fake_exchange)
        body = app.test_client().post("/webhook", data=json.dumps(sample_alert(order_id=name))).json
        assert body["status"] == "executed" and body["alert_id"] == 1, body
        firsts.append(body["decision"]["order"]["client_order_id"])
        prefix = f"tvgw-{installation_id(Storage(settings.database))}-"
        assert firsts[-1].startswith(prefix)
    assert firsts[0] != firsts[1]
    assert [o["clientOrderId"] for o in fake_exchange.orders] == firsts  # two orders, each placed once


def test_a_fill_is_booked_once_however_often_it_is_reported(
    tmp_path: Path, fake_exchange: FakeBinance, keys: None
) -> None:
    settings, app = exchange_app(tmp_path, fake_exchange)
    fake_exchange.hold_fills("BTCUSDT", 0)
    body = app.test_client().post("/webhook", data=json.dumps(sample_alert(contracts=0.02))).json
    assert body["status"] == "placed"
    cid = body["decision"]["order"]["client_order_id"]
    desk = get_gateway(app).engine.desk
    part = OrderResult(
        client_order_id=cid, status="partially_filled", filled=0.01, average=30000.0, cost=300.0
    )
    whole = dataclasses.replace(part, status="filled", filled=0.02, cost=610.0)
    for result in (part, part, whole, part, whole):  # reported again, late, out of order
        with desk.storage.transaction() as conn:
            book(desk, conn, result)
    (row,) = db_rows(settings.database, "SELECT * FROM orders")
    (position,) = db_rows(settings.database, "SELECT * FROM positions")
    assert (row["status"], row["booked"], row["booked_cost"]) == ("filled", 0.02, 610.0)
    assert position["amount"] == pytest.approx(0.02)
    # The second increment was booked at its own price: (610 - 300) / 0.01 = 31000.
    assert position["avg_price"] == pytest.approx(30500.0)


def test_a_fill_without_a_price_is_asked_again_not_booked(
    tmp_path: Path, fake_exchange: FakeBinance, keys: None
) -> None:
    settings, app = exchange_app(tmp_path, fake_exchange)
    fake_exchange.hold_fills("BTCUSDT", 0)
    cid = (
        app.test_client()
        .post("/webhook", data=json.dumps(sample_alert()))
        .json["decision"]["order"]["client_order_id"]
    )
    desk = get_gateway(app).engine.desk
    unpriced = OrderResult(client_order_id=cid, status="filled", filled=0.01, average=None)
    with desk.storage.transaction() as conn:
        assert book(desk, conn, unpriced) is None
    (row,) = db_rows(settings.database, "SELECT * FROM orders")
    assert row["booked"] == 0 and row["status"] == "partially_filled" and row["next_poll_at"] is not None
    assert "without a price" in row["fee_note"] and not db_rows(settings.database, "SELECT * FROM positions")
    # The exchange's order structure without an average: cost / filled.
    raw = {"id": 1, "status": "closed", "filled": 0.01, "cost": 305.0, "average": None, "clientOrderId": cid}
    assert _to_result(raw, cid).average == pytest.approx(30500.0)


class FlakyHolder(CcxtBroker):
    """The exchange cannot be asked who holds the exits (a transient error) until told."""

    reachable = False

    def exit_holder(self, symbol: str) -> ExitHolder:
        if not self.reachable:
            raise ExchangeUnavailableError("binance exchangeInfo: 503 Service Unavailable")
        return super().exit_holder(symbol)


def test_a_transient_error_while_deciding_who_holds_an_exit_is_not_stored_as_final(
    tmp_path: Path, fake_exchange: FakeBinance
) -> None:
    from engine.alert import Alert
    from engine.decision import Receipt
    from engine.engine import TradingEngine

    settings = make_settings(
        tmp_path, {"strategies": {"default": {"passphrase": "test-secret", "stop_loss": "2%"}}},
        TVGW_EXIT_WATCH_INTERVAL_S="0",
    )  # fmt: skip
    storage = Storage(settings.database)
    storage.migrate()
    seed_market(settings.database, {"BTC/USDT:USDT": 30000.0})
    fake_exchange.set_price("BTCUSDT", 30000)
    broker = FlakyHolder(
        "binance", credentials={"apiKey": DEFAULT_API_KEY, "secret": DEFAULT_SECRET}, sandbox=False,
        api_url=fake_exchange.url, timeout_ms=600, read_retries=1, backoff_s=0.1,
    )  # fmt: skip
    engine = TradingEngine(settings, storage, broker)
    alert = Alert.model_validate(
        {**sample_alert(ticker="BTCUSDT.P", contracts=0.01), "strategy_id": "default"}
    )
    decision = engine.process_signal(alert, None, receipt=Receipt(received_at=engine.clock.now()))
    assert decision.status == "executed", decision.reason
    assert decision.details["exits"]["held_by"] == "undecided"
    (stop,) = db_rows(settings.database, "SELECT * FROM exits")
    assert stop["held_by"] == "undecided"  # the gateway watches it meanwhile; asked again later
    broker.reachable = True
    watch_symbol(engine.desk, "BTC/USDT:USDT")
    (stop,) = db_rows(settings.database, "SELECT * FROM exits")
    assert stop["held_by"] == "exchange" and stop["exchange_status"] == "open"  # and now it rests there
    assert [o["orderType"] for o in fake_exchange.exit_orders()] == ["STOP_MARKET"]


def test_fees_in_different_currencies_are_kept_apart_and_a_third_one_valued_or_said_unvalued(
    fake_exchange: FakeBinance,
) -> None:
    """Fees of one order in BTC and in BNB stay two fees (never one sum); BNB is valued through
    BNB/USDT, a coin with no market to the quote is left unvalued and said so."""
    raw = {"id": 7, "status": "closed", "filled": 0.01, "average": 30000.0, "cost": 300.0, "side": "buy",
           "fees": [{"currency": "BTC", "cost": 0.000004}, {"currency": "BNB", "cost": 0.0002},
                    {"currency": "BTC", "cost": 0.000006}, {"currency": "XYZ", "cost": 1.5}]}  # fmt: skip
    result = _to_result(raw, "c-7")
    assert [(f.currency, f.cost) for f in result.fees] == [
        ("BNB", 0.0002), ("BTC", pytest.approx(0.00001)), ("XYZ", 1.5),
    ]  # fmt: skip
    assert result.fee_currency is None and result.fee == 0.0  # several currencies: no one sum
    fake_exchange.set_price("BNBUSDT", 600)
    broker = CcxtBroker(
        "binance", credentials={"apiKey": DEFAULT_API_KEY, "secret": DEFAULT_SECRET}, sandbox=False,
        api_url=fake_exchange.url, timeout_ms=600, read_retries=1, backoff_s=0.1,
    )  # fmt: skip
    booked = {f.currency: f for f in broker._as_booked(result, "BTC/USDT").fees}
    assert booked["BNB"].value == pytest.approx(0.0002 * 600)
    assert booked["BTC"].value == pytest.approx(0.00001 * 30000)
    assert booked["XYZ"].value is None and "XYZ/USDT" in str(booked["XYZ"].note)
