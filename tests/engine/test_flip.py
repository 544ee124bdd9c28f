"""A flip (long to short) on an exchange is one step of two orders, a reduce-only close first
(issue 20), against the fake Binance futures: the close goes out before the short, and when the
exchange refuses the close (the position is not there), the short is never sent."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from engine.decision import Decision, PlannedOrder
from engine.intent import split_flip
from tests.conftest import db_rows
from tests.engine.test_exchange_exits import exchange_env, gateway, position, rests, send
from tests.fake_exchange import FakeBinance

__all__ = ["exchange_env"]


def test_the_reduce_only_close_goes_out_before_the_short(
    tmp_path: Path, fake_exchange: FakeBinance, exchange_env: None
) -> None:
    settings, app = gateway(tmp_path, fake_exchange)
    assert send(app, contracts=0.04, order_id="long")["status"] == "executed"
    body = send(app, action="reverse", contracts=None, order_id="flip")
    assert body["status"] == "executed", body
    sent = [(o["side"], o["origQty"], o["reduceOnly"]) for o in fake_exchange.futures.orders]
    assert sent == [("BUY", "0.04", False), ("SELL", "0.04", True), ("SELL", "0.04", False)]
    assert fake_exchange.futures_position() == pytest.approx(-0.04) and position(settings) == pytest.approx(
        -0.04
    )
    assert body["decision"]["close_first"]["client_order_id"].endswith("-c")


def test_a_refused_close_stops_the_flip_before_its_short(
    tmp_path: Path, fake_exchange: FakeBinance, exchange_env: None
) -> None:
    settings, app = gateway(tmp_path, fake_exchange)
    assert send(app, contracts=0.04, order_id="long")["status"] == "executed"
    # The exchange closed the long behind the gateway's back (a liquidation, a manual close).
    fake_exchange.futures.position("BTCUSDT").amount = Decimal(0)
    body = send(app, 502, action="reverse", contracts=None, order_id="flip")
    assert body["status"] == "failed" and body["decision"]["reason"].startswith("flip halted"), body
    # One sell was tried, the reduce-only close; the short was never sent: nothing to undo.
    assert [(o["side"], o["reduceOnly"]) for o in fake_exchange.futures.orders] == [
        ("BUY", False),
        ("SELL", True),
    ]
    assert fake_exchange.futures_position() == 0
    legs_sql = "SELECT client_order_id, status FROM orders WHERE alert_id = ? ORDER BY id"
    rows = db_rows(settings.database, legs_sql, (body["alert_id"],))
    assert [(r["client_order_id"].endswith("-c"), r["status"]) for r in rows] == [
        (True, "failed"),
        (False, "canceled"),
    ]


def test_a_flip_whose_close_answer_is_lost_leaves_the_close_to_the_order_lifecycle(
    tmp_path: Path, fake_exchange: FakeBinance, exchange_env: None
) -> None:
    """The close's answer is lost and the exchange cannot find it: the short is not sent (its
    row is canceled), and the close stays ``unknown`` with a poll due, so the order lifecycle
    asks the exchange about it again rather than forget it."""
    settings, app = gateway(tmp_path, fake_exchange)
    assert send(app, contracts=0.04, order_id="long")["status"] == "executed"
    fake_exchange.fail_next("POST /fapi/v1/order", "timeout_lost")
    body = send(app, 502, action="reverse", contracts=None, order_id="flip")
    assert body["status"] == "failed" and body["decision"]["reason"].startswith("flip halted"), body
    assert [(o["side"], o["reduceOnly"]) for o in fake_exchange.futures.orders] == [("BUY", False)]
    legs_sql = "SELECT client_order_id, status, next_poll_at FROM orders WHERE alert_id = ? ORDER BY id"
    close, opening = db_rows(settings.database, legs_sql, (body["alert_id"],))
    assert close["client_order_id"].endswith("-c") and close["status"] == "unknown"
    assert close["next_poll_at"] is not None
    assert (opening["status"], opening["next_poll_at"]) == ("canceled", None)
    assert position(settings) == pytest.approx(0.04)


def test_the_flips_opening_order_arms_its_own_stop(
    tmp_path: Path, fake_exchange: FakeBinance, exchange_env: None
) -> None:
    """The flip is booked as two fills (the close, then the short): the short's fill arms the
    alert's stop on the whole short, and the exchange holds it (a buy above the entry)."""
    settings, app = gateway(tmp_path, fake_exchange)
    assert send(app, contracts=0.04, order_id="long")["status"] == "executed"
    body = send(app, action="reverse", contracts=None, order_id="flip", stop_loss="31000")
    assert body["status"] == "executed" and "close_first" in body["decision"], body
    exits_sql = "SELECT kind, status, entry_side, entry_amount, trigger FROM exits WHERE alert_id = ?"
    rows = [dict(r) for r in db_rows(settings.database, exits_sql, (body["alert_id"],))]
    assert rows == [
        {"kind": "stop", "status": "open", "entry_side": "sell", "entry_amount": 0.04, "trigger": 31000.0}
    ]
    rests(fake_exchange, ("STOP_MARKET", "BUY", "0.04", "31000", True))


def _crossing(before: float, amount: float) -> Decision:
    order = PlannedOrder(symbol="BTC/USDT", side="sell", amount=amount, price=30000.0, reduce_only=False)
    return Decision(status="executed", mode="execute", action="sell", reason="target -0.01",
                    current_position=before, order=order)  # fmt: skip


def _market_minimum(amount: float) -> tuple[float, str | None]:
    """A market whose minimum amount is 1e-5 (a fit as engine.engine._as_flip passes it)."""
    return (amount, None) if amount >= 1e-5 else (0.0, f"amount {amount:g} is below the market minimum 1e-05")


def test_a_long_crossed_to_a_short_is_a_close_then_the_opening_order() -> None:
    flip = split_flip(_crossing(0.04, 0.05), _market_minimum)
    assert flip.close_first is not None and flip.close_first.reduce_only
    assert (
        flip.close_first.amount == 0.04
        and flip.order is not None
        and flip.order.amount == pytest.approx(0.01)
    )


def test_dust_below_the_markets_minimum_is_crossed_by_one_order_not_a_flip() -> None:
    """The backtest's replay found it: a long left at 1e-8 by rounding, then a short. Closing the
    dust alone is below the market's minimum and failed, taking the short with it."""
    dust = split_flip(_crossing(1e-8, 0.01 + 1e-8), _market_minimum)
    assert dust.close_first is None and dust.order is not None
    assert dust.order.amount == 0.01 + 1e-8 and not dust.order.reduce_only
