"""The money edges of the engine's one door, each pinned exactly: every action under every sizing
rule in both directions (a short target is short under each rule; close_all and reverse from a
short), and the average entry price after adding to a position is volume-weighted. Driven
directly (no Flask) on the paper book, with the conftest clock and replayed prices: nothing
here reads the machine's clock. The sizes expected are worked out by hand in each case."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from engine.alert import Alert
from engine.brokers.paper import PaperBroker
from engine.decision import Decision, Receipt
from engine.engine import TradingEngine
from storage import Storage
from tests.conftest import EngineClock, db_rows, make_settings
from tests.engine.test_process_signal import T0, ReplayedPrices
from tests.engine.test_sizing import SidedSignal

PRICE = 30_000.0
EQUITY = 10_000.0  # the paper book's starting balance
SLIPPAGE = 5 / 10_000  # the paper book's, against the trader

#: The order size each rule gives, by side. ``alert``: the alert's contracts (0.02 here);
#: ``fixed_quote``: 300 quote / 30 000 = 0.01; ``kelly``: the side's fraction of the 10 000
#: equity at 30 000, long 0.075 -> 0.025, short 0.045 -> 0.015 (the signal is bearish: p = 0.3).
#: All three differ, so a size taken from the wrong rule or the wrong side shows.
SIZE = {
    "alert": {"buy": 0.02, "sell": 0.02},
    "fixed_quote": {"buy": 0.01, "sell": 0.01},
    "kelly": {"buy": 0.075 * EQUITY / PRICE, "sell": 0.045 * EQUITY / PRICE},
}
#: A Kelly size after a first trade is a fraction of the equity that trade's fee and slippage
#: left (within 0.1% of 10 000): still far from any other rule's or side's size.
AFTER_COSTS = 1e-3
SIGNAL = SidedSignal(combined_probability=0.3, direction_probability=0.3, kelly_long=0.075, kelly_short=0.045)


@dataclass
class Book:
    """One engine on a paper book; ``send`` puts an alert through its door at the clock's time."""

    engine: TradingEngine
    storage: Storage
    clock: EngineClock
    database: str
    sent: int = 0

    def send(self, action: str, **fields: Any) -> Decision:
        self.sent += 1
        body = {"ticker": "BTCUSDT", "action": action, "order_id": f"m{self.sent}", "strategy_id": "default"}
        alert = Alert.model_validate({**body, **fields})
        return self.engine.process_signal(alert, SIGNAL, receipt=Receipt(received_at=self.clock.now()))

    def position(self) -> tuple[float, float]:
        rows = db_rows(self.database, "SELECT amount, avg_price FROM positions WHERE symbol = 'BTC/USDT'")
        if not rows or rows[0]["avg_price"] is None:
            return (float(rows[0]["amount"]) if rows else 0.0), 0.0
        return float(rows[0]["amount"]), float(rows[0]["avg_price"])


def book(tmp_path: Path, sizing: str, prices: list[tuple[float, float]] | None = None) -> Book:
    strategy = {"passphrase": "test-secret", "sizing": sizing, "quote_amount": 300.0}
    settings = make_settings(tmp_path, {"strategies": {"default": strategy}}, TVGW_EXIT_WATCH_INTERVAL_S="0")
    storage = Storage(settings.database)
    storage.migrate()
    clock = EngineClock(T0)
    replayed = ReplayedPrices(clock, {"BTC/USDT": prices or [(T0 - 60, PRICE)]})
    engine = TradingEngine(
        settings, storage, PaperBroker(storage, settings.paper), clock=clock, prices=replayed
    )
    return Book(engine, storage, clock, str(settings.database))


@pytest.fixture(params=["alert", "fixed_quote", "kelly"])
def sizing(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def executed(decision: Decision) -> Decision:
    assert decision.status == "executed", decision.reason
    return decision


def test_buy_then_sell_are_sized_by_the_rule_of_their_own_side(tmp_path: Path, sizing: str) -> None:
    b = book(tmp_path, sizing)
    executed(b.send("buy", contracts=0.02))
    assert b.position()[0] == pytest.approx(SIZE[sizing]["buy"])
    executed(b.send("sell", contracts=0.02))
    assert b.position()[0] == pytest.approx(SIZE[sizing]["buy"] - SIZE[sizing]["sell"], rel=AFTER_COSTS)


def test_a_sell_from_flat_opens_a_short_of_the_sell_size(tmp_path: Path, sizing: str) -> None:
    b = book(tmp_path, sizing)
    decision = executed(b.send("sell", contracts=0.02))
    assert decision.order is not None and decision.order.side == "sell"
    assert b.position()[0] == pytest.approx(-SIZE[sizing]["sell"])


@pytest.mark.parametrize("held", ["flat", "long"])
def test_a_short_target_is_short_under_every_sizing(tmp_path: Path, sizing: str, held: str) -> None:
    """Pine's ``strategy.position_size`` after a short entry: the target is the short, whatever
    was held before (a long is sold through); ``alert`` sizing takes the alert's own size."""
    b = book(tmp_path, sizing)
    if held == "long":
        executed(b.send("buy", contracts=0.02))
    decision = executed(b.send("sell", contracts=0.02, position_size=-0.02, market_position="short"))
    want = -0.02 if sizing == "alert" else -SIZE[sizing]["sell"]
    assert decision.target_position == pytest.approx(want, rel=AFTER_COSTS)
    assert b.position()[0] == pytest.approx(want, rel=AFTER_COSTS)


def test_a_long_target_is_long_under_every_sizing(tmp_path: Path, sizing: str) -> None:
    b = book(tmp_path, sizing)
    executed(b.send("sell", contracts=0.02))
    executed(b.send("buy", contracts=0.02, position_size=0.02, market_position="long"))
    want = 0.02 if sizing == "alert" else SIZE[sizing]["buy"]
    assert b.position()[0] == pytest.approx(want, rel=AFTER_COSTS)


def test_close_all_and_reverse_from_a_short(tmp_path: Path, sizing: str) -> None:
    b = book(tmp_path, sizing)
    executed(b.send("sell", contracts=0.02))
    short = -SIZE[sizing]["sell"]
    reverse = executed(b.send("reverse"))
    # Through flat to the mirror long, as a flip (issue 20): a reduce-only close of the short,
    # then the opening buy of the long.
    close_first = reverse.close_first
    assert close_first is not None and close_first.side == "buy" and close_first.reduce_only
    assert close_first.amount == pytest.approx(-short)
    assert reverse.order is not None and reverse.order.side == "buy" and not reverse.order.reduce_only
    assert reverse.order.amount == pytest.approx(-short)
    assert b.position()[0] == pytest.approx(-short)
    executed(b.send("reverse"))
    assert b.position()[0] == pytest.approx(short)
    close = executed(b.send("close_all"))
    assert close.order is not None and close.order.side == "buy" and close.order.reduce_only
    assert close.order.amount == pytest.approx(-short)
    assert b.position()[0] == 0.0


def test_close_long_leaves_a_short_alone_and_close_short_closes_it(tmp_path: Path, sizing: str) -> None:
    b = book(tmp_path, sizing)
    executed(b.send("sell", contracts=0.02))
    assert b.send("close_long").status == "annotated"
    assert b.position()[0] == pytest.approx(-SIZE[sizing]["sell"])
    executed(b.send("close_short"))
    assert b.position()[0] == 0.0


@pytest.mark.parametrize(("side", "sign"), [("buy", 1.0), ("sell", -1.0)])
def test_adding_to_a_position_averages_its_entry_by_volume(tmp_path: Path, side: str, sign: float) -> None:
    """0.01 at 30 000 then 0.03 at 31 000 (each moved by the slippage against the trader): the
    average is (0.01 * 30 000 + 0.03 * 31 000) / 0.04 = 30 750, not the plain mean 30 500."""
    b = book(tmp_path, "alert", prices=[(T0 - 60, 30_000.0), (T0 + 60, 31_000.0)])
    executed(b.send(side, contracts=0.01))
    b.clock.t = T0 + 120
    executed(b.send(side, contracts=0.03))
    amount, average = b.position()
    assert amount == pytest.approx(sign * 0.04)
    assert average == pytest.approx(30_750.0 * (1 + sign * SLIPPAGE))
