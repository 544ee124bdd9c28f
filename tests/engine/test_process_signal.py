"""The engine's one door, driven directly: no Flask, a fake clock and replayed prices. The same
alerts through the live webhook get the same decisions (a backtest is the same engine)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from engine.alert import Alert
from engine.brokers.paper import PaperBroker
from engine.decision import Decision, Receipt
from engine.engine import TradingEngine
from engine.exceptions import PriceCheckError
from engine.market import ReferencePrice
from storage import Storage
from tests.conftest import PASSPHRASE, EngineClock, make_settings, market_app

#: A fixed instant far from today: nothing in the engine may read the machine's clock.
T0 = datetime(2022, 3, 1, 12, 0, tzinfo=UTC).timestamp()


@dataclass
class ReplayedPrices:
    """Prices by symbol as a replay would feed them (the bar of the simulated moment)."""

    clock: EngineClock
    series: dict[str, list[tuple[float, float]]]  # symbol -> [(from time, price)], ascending

    def reference(self, symbol: str, timeframe: str) -> ReferencePrice | None:
        known = [price for at, price in self.series.get(symbol, []) if at <= self.clock.now()]
        return ReferencePrice(known[-1], "replay") if known else None

    def last_known(self, symbol: str) -> ReferencePrice | None:
        reference = self.reference(symbol, "1h")
        return None if reference is None else ReferencePrice(reference.price, "replay", trusted=False)


def scenario() -> list[dict[str, Any]]:
    """Alerts (without their time) that walk every kind of act: open, add, reduce, close,
    reverse, a target position, a duplicate, an out-of-band price, a market with no price."""
    return [
        {"ticker": "BTCUSDT", "action": "buy", "contracts": 0.05, "order_id": "a"},
        {"ticker": "BTCUSDT", "action": "buy", "contracts": 0.02, "order_id": "b"},
        {"ticker": "BTCUSDT", "action": "buy", "contracts": 0.02, "order_id": "b"},  # duplicate
        {"ticker": "BTCUSDT", "action": "sell", "contracts": 0.03, "order_id": "c", "price": 30_100},
        {"ticker": "ETHUSDT", "action": "sell", "contracts": 0.5, "order_id": "d"},
        {"ticker": "BTCUSDT", "action": "reverse", "order_id": "e"},
        {"ticker": "ETHUSDT", "action": "close_all", "order_id": "f"},
        {"ticker": "BTCUSDT", "action": "buy", "contracts": 0.01, "order_id": "g", "price": 1.0},
        {
            "ticker": "SOLUSDT",
            "action": "buy",
            "order_id": "h",
            "market_position": "long",
            "position_size": 3,
        },
        {"ticker": "NOPEUSDT", "action": "buy", "contracts": 1, "order_id": "i"},
    ]


PRICES = {"BTC/USDT": 30_000.0, "ETH/USDT": 1_800.0, "SOL/USDT": 20.5}


def summary(decision: Decision | None, error: str | None = None) -> tuple[Any, ...]:
    """What must agree: the status, the market, the order and the fill (never an id)."""
    if decision is None:
        return ("refused", error)
    if decision.duplicate_of is not None:
        return ("duplicate",)
    order = decision.order
    fill = decision.result
    return (
        decision.status, decision.symbol, decision.target_position,
        None if order is None else (order.side, round(order.amount, 10), order.price),
        None if fill is None else (round(fill.filled, 10), round(fill.average or 0.0, 6)),
    )  # fmt: skip


def run_engine(tmp_path: Path, stamped: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    settings = make_settings(tmp_path / "engine")
    storage = Storage(settings.database)
    storage.migrate()
    clock = EngineClock(T0)
    prices = ReplayedPrices(clock, {s: [(T0 - 3600, p)] for s, p in PRICES.items()})
    engine = TradingEngine(
        settings, storage, PaperBroker(storage, settings.paper), clock=clock, prices=prices
    )
    out = []
    for n, body in enumerate(stamped):
        clock.t = T0 + n
        alert = Alert.model_validate(body).model_copy(update={"strategy_id": "default"})
        try:
            out.append(summary(engine.process_signal(alert, None, receipt=Receipt(received_at=clock.t))))
        except PriceCheckError as exc:
            out.append(summary(None, exc.code))
    return out


def run_webhook(tmp_path: Path, stamped: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    from storage.orders import list_orders

    settings = make_settings(tmp_path / "webhook")
    clock = EngineClock(T0)  # the gateway goes by the engine side's simulated time
    client = market_app(settings, PRICES, clock=clock).test_client()
    storage = Storage(settings.database)
    out = []
    flips = 0  # a flip is two orders: its reduce-only close, then its opening order
    for n, body in enumerate(stamped):
        clock.t = T0 + n
        answer = client.post("/webhook", data=json.dumps({**body, "passphrase": PASSPHRASE})).json
        flips += bool((answer.get("decision") or {}).get("close_first"))
        if answer["status"] == "refused":
            out.append(("refused", answer["error"]["code"]))
            continue
        if answer["status"] == "duplicate":
            out.append(("duplicate",))
            continue
        decision, order, fill = (
            answer["decision"],
            answer["decision"].get("order"),
            answer["decision"].get("fill"),
        )
        out.append((
            decision["status"], decision["symbol"], decision["target_position"],
            None if order is None else (order["side"], round(order["amount"], 10), order["price"]),
            None if fill is None else (round(fill["filled"], 10), round(fill["average"] or 0.0, 6)),
        ))  # fmt: skip
    assert len(list_orders(storage, limit=100)) == flips + sum(1 for row in out if len(row) > 3 and row[3])
    return out


def test_the_door_decides_without_flask_on_a_simulated_clock(tmp_path: Path) -> None:
    decisions = run_engine(tmp_path, [{**body, "timenow": T0} for body in scenario()])
    statuses = [row[0] for row in decisions]
    assert statuses == [
        "executed", "executed", "duplicate", "executed", "executed", "executed", "executed",
        "refused", "executed", "refused",
    ]  # fmt: skip
    assert decisions[9] == ("refused", "no_market_price")  # a market the replay has no price for
    assert decisions[7] == ("refused", "price_out_of_band")  # price 1 against the replayed 30000
    # every fill at the replayed market price (moved by the paper slippage), never the alert's
    assert decisions[3][4][1] == pytest.approx(30_000 * (1 - 5 / 10_000))
    assert decisions[5][2] == pytest.approx(-0.04)  # reversed from +0.04 long


def test_the_same_alerts_get_the_same_decisions_through_the_webhook(tmp_path: Path) -> None:
    stamped = [{**body, "timenow": T0} for body in scenario()]
    engine_side = run_engine(tmp_path, stamped)
    webhook_side = run_webhook(tmp_path, stamped)
    assert webhook_side == engine_side


def test_the_door_resolves_an_alerts_market_once_per_account(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ticker is resolved at the door and that market is what the account decides on: one
    resolution per alert on a one-account book (the key, the price check and the decision share it)."""
    calls: list[str] = []
    resolve = PaperBroker.resolve_symbol

    def counted(self: PaperBroker, ticker: str, exchange: str | None = None) -> str:
        calls.append(ticker)
        return resolve(self, ticker, exchange)

    monkeypatch.setattr(PaperBroker, "resolve_symbol", counted)
    run_engine(tmp_path, [{**scenario()[0], "timenow": T0}])
    assert calls == ["BTCUSDT"]
