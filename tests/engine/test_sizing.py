"""Kelly sizing reads the side it trades: a sell is sized with the model's short-side Kelly
(from 1 - p), a buy with its long-side one, and ml_gate judges agreement on the probability that
Kelly was computed from. Through the engine's one door, on the paper book, a fake clock."""

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
from tests.conftest import EngineClock, make_settings
from tests.engine.test_process_signal import T0, ReplayedPrices

PRICE = 30_000.0
EQUITY = 10_000.0  # the paper book's starting balance


@dataclass(frozen=True)
class SidedSignal:
    """A model signal as the ML layer hands it to the engine, with a Kelly fraction per side."""

    combined_probability: float
    direction_probability: float | None = None
    kelly_long: float = 0.0
    kelly_short: float = 0.0
    confidence: float = 0.9
    stop_loss: float | None = None
    take_profit: float | None = None
    entry_price: float | None = PRICE
    leverage: float = 1.0

    @property
    def kelly_fraction(self) -> float:
        return self.kelly_long if self.combined_probability >= 0.5 else self.kelly_short

    def kelly_for(self, side: str) -> float:
        return self.kelly_long if side == "buy" else self.kelly_short

    def technical_score(self, side: str) -> float | None:
        return None


def decide(tmp_path: Path, signal: SidedSignal, action: str, mode: str = "execute") -> Decision:
    settings = make_settings(
        tmp_path,
        {"strategies": {"default": {"passphrase": "test-secret", "sizing": "kelly", "mode": mode}}},
        TVGW_EXIT_WATCH_INTERVAL_S="0",
    )
    storage = Storage(settings.database)
    storage.migrate()
    clock = EngineClock(T0)
    engine = TradingEngine(
        settings, storage, PaperBroker(storage, settings.paper), clock=clock,
        prices=ReplayedPrices(clock, {"BTC/USDT": [(T0 - 60, PRICE)]}),
    )  # fmt: skip
    body: dict[str, Any] = {
        "ticker": "BTCUSDT",
        "action": action,
        "order_id": f"k-{action}",
        "strategy_id": "default",
    }
    try:
        return engine.process_signal(Alert.model_validate(body), signal, receipt=Receipt(received_at=T0))
    finally:
        storage.close()


def test_a_sell_is_sized_with_the_short_side_kelly(tmp_path: Path) -> None:
    bearish = SidedSignal(
        combined_probability=0.3, direction_probability=0.3, kelly_long=0.0, kelly_short=0.08
    )
    decision = decide(tmp_path, bearish, "sell")
    assert decision.status == "executed", decision.reason
    assert decision.order is not None and decision.order.side == "sell"
    assert decision.order.amount == pytest.approx(0.08 * EQUITY / PRICE, abs=1e-8)
    assert "short-side Kelly fraction 0.080" in decision.reason


def test_a_sell_against_a_bullish_model_is_not_sized_with_its_long_side_kelly(tmp_path: Path) -> None:
    bullish = SidedSignal(
        combined_probability=0.7, direction_probability=0.7, kelly_long=0.08, kelly_short=0.0
    )
    decision = decide(tmp_path, bullish, "sell")
    assert decision.status == "rejected" and decision.order is None
    assert "short-side Kelly fraction is 0: no edge" in decision.reason


def test_a_buy_is_sized_with_the_long_side_kelly(tmp_path: Path) -> None:
    bullish = SidedSignal(
        combined_probability=0.7, direction_probability=0.7, kelly_long=0.05, kelly_short=0.01
    )
    decision = decide(tmp_path, bullish, "buy")
    assert decision.status == "executed", decision.reason
    assert decision.order is not None and decision.order.side == "buy"
    assert decision.order.amount == pytest.approx(0.05 * EQUITY / PRICE, abs=1e-8)


def test_ml_gate_judges_the_probability_kelly_was_computed_from(tmp_path: Path) -> None:
    """The model alone says up (0.6); with sentiment the combined probability, which Kelly and
    the signal's side come from, says down (0.45): a buy is not what the signal backs."""
    mixed = SidedSignal(
        combined_probability=0.45, direction_probability=0.6, kelly_long=0.03, kelly_short=0.02
    )
    decision = decide(tmp_path, mixed, "buy", mode="ml_gate")
    assert decision.status == "annotated" and "model disagrees (P(up)=0.45" in decision.reason
    agreed = decide(tmp_path / "sell", mixed, "sell", mode="ml_gate")
    assert agreed.status == "executed", agreed.reason
    assert agreed.order is not None and agreed.order.amount == pytest.approx(
        0.02 * EQUITY / PRICE, abs=1e-8
    )  # the step rounds down
