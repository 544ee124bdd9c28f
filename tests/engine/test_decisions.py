"""Actions, target positions and sizing on the paper book, through the whole intake path."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import EngineClock, db_rows, make_settings, market_app, sample_alert

#: The time the gateway goes by in these tests (never the machine's): alerts are stamped by it.
CLOCK = EngineClock()


def position(settings: Any, symbol: str = "BTC/USDT") -> float:
    found = db_rows(settings.database, "SELECT amount FROM positions WHERE symbol = ?", (symbol,))
    return 0.0 if not found else float(found[0]["amount"])


def stamp(seconds_ago: float) -> str:
    return datetime.fromtimestamp(CLOCK.now() - seconds_ago, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@pytest.fixture
def book(tmp_path: Path) -> tuple[Any, Any]:
    settings = make_settings(tmp_path, {"risk": {"max_position_fraction": 5.0, "max_leverage": 5.0}})
    return settings, market_app(settings, clock=CLOCK).test_client()


def send(client: Any, **fields: Any) -> dict[str, Any]:
    response = client.post("/webhook", data=json.dumps(sample_alert(**{"timenow": CLOCK.iso(), **fields})))
    assert response.status_code == 200, response.json
    return response.json


def test_buy_sell_close_and_reverse_move_the_position(book: tuple[Any, Any]) -> None:
    settings, client = book
    send(client, action="buy", contracts=0.02, order_id="1")
    assert position(settings) == pytest.approx(0.02)
    send(client, action="sell", contracts=0.005, order_id="2")
    assert position(settings) == pytest.approx(0.015)
    reversed_ = send(client, action="reverse", order_id="3")
    # A flip is one step of two orders: a reduce-only close of the long, then the short's opening.
    decision = reversed_["decision"]
    assert reversed_["status"] == "executed", reversed_
    close = decision["close_first"]
    assert (close["side"], close["amount"], close["reduce_only"], close["fill"]["filled"]) == (
        "sell", pytest.approx(0.015), True, pytest.approx(0.015)
    )  # fmt: skip
    assert decision["order"]["amount"] == pytest.approx(0.015) and not decision["order"]["reduce_only"]
    assert close["client_order_id"] == decision["order"]["client_order_id"] + "-c"
    assert position(settings) == pytest.approx(-0.015)
    assert send(client, action="close_long", order_id="4")["status"] == "annotated"  # nothing long to close
    send(client, action="close_short", order_id="5")
    assert position(settings) == pytest.approx(0.0)
    nothing = send(client, action="reverse", order_id="6")
    assert nothing["status"] == "rejected" and "no position to reverse" in nothing["decision"]["reason"]


def test_target_position_converges_on_repeats(book: tuple[Any, Any]) -> None:
    settings, client = book
    for n in range(3):  # the same intent three times (different alerts): one position, not three
        send(
            client, action="buy", contracts=0.01, position_size=0.01, market_position="long", order_id=f"t{n}"
        )
    assert position(settings) == pytest.approx(0.01)
    flat = send(
        client, action="sell", contracts=0.01, position_size=0, market_position="flat", order_id="t-exit"
    )
    assert flat["decision"]["target_position"] == 0.0
    assert position(settings) == pytest.approx(0.0)
    short = send(
        client, action="sell", contracts=0.02, position_size=-0.02, market_position="short", order_id="s"
    )
    assert short["decision"]["target_position"] == pytest.approx(-0.02)
    assert position(settings) == pytest.approx(-0.02)


def test_out_of_order_alert_is_rejected(book: tuple[Any, Any]) -> None:
    settings, client = book
    send(
        client,
        action="buy",
        contracts=0.01,
        position_size=0.01,
        market_position="long",
        timenow=stamp(1),
        order_id="new",
    )
    late = send(
        client,
        action="sell",
        contracts=0.01,
        position_size=0,
        market_position="flat",
        timenow=stamp(30),
        order_id="old",
    )
    assert late["status"] == "rejected" and "out of order" in late["decision"]["reason"]
    assert position(settings) == pytest.approx(0.01)


def test_fixed_quote_sizing(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        {
            "strategies": {
                "default": {"passphrase": "test-secret", "sizing": "fixed_quote", "quote_amount": 300}
            }
        },
    )
    client = market_app(settings, clock=CLOCK).test_client()
    body = send(client, action="buy", price=30000.0, contracts=5)
    assert body["decision"]["order"]["amount"] == pytest.approx(0.01)


def test_paper_fill_costs_fee_and_slippage(book: tuple[Any, Any]) -> None:
    _, client = book
    fill = send(client, action="buy", contracts=0.01, price=30000.0)["decision"]["fill"]
    assert fill["average"] == pytest.approx(30000.0 * (1 + 5 / 10_000))
    assert fill["fee"] == pytest.approx(0.01 * fill["average"] * 0.001)


def test_alert_without_price_fills_at_the_market_price_not_a_guess(book: tuple[Any, Any]) -> None:
    # Changed on purpose: the fill price was the alert's claim, now it is the gateway's own
    # market price, so an alert need not carry one (and a market without one is refused).
    _, client = book
    alert = sample_alert(action="buy", contracts=0.01, timenow=CLOCK.iso())
    del alert["price"]
    body = client.post("/webhook", data=json.dumps(alert)).json
    assert body["status"] == "executed"
    assert body["decision"]["fill"]["average"] == pytest.approx(30000.0 * (1 + 5 / 10_000))
    unknown = sample_alert(ticker="ADAUSDT", action="buy", contracts=10, timenow=CLOCK.iso())
    del unknown["price"]
    refused = client.post("/webhook", data=json.dumps(unknown))
    assert refused.status_code == 422 and refused.json["error"]["code"] == "no_market_price"


def test_unknown_ticker_is_rejected_with_reason(book: tuple[Any, Any]) -> None:
    _, client = book
    body = send(client, ticker="NOTAPAIR", action="buy")
    assert body["status"] == "rejected" and "NOTAPAIR" in body["decision"]["reason"]


def test_late_deltas_still_add_up(book: tuple[Any, Any]) -> None:
    settings, client = book
    send(client, action="buy", contracts=0.01, timenow=stamp(1), order_id="d-new")
    late = send(client, action="buy", contracts=0.01, timenow=stamp(30), order_id="d-old")
    assert late["status"] == "executed"  # a delta is not superseded by a newer one
    assert position(settings) == pytest.approx(0.02)
