"""The bar loop: the script's alerts, in time order, decided by each arm's engine.

An *arm* is one way of deciding the same alerts: the Pine rules alone (``execute``, no model),
or the rules with a model's opinion (the run's ``--mode``: ``ml_gate`` or ``hybrid`` let the
model veto or score entries; ``execute`` lets it only set the stop the risk manager sizes by).
Each arm has its own book (``execution.EngineReplay``). The opinion for an alert comes from the
model of the window the alert arrives in, computed on the bars closed before it: the signal
bar for an entry (it fills at the next open), the bar before for a stop or target.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from backtest.execution import EngineReplay
from backtest.rules import PineOrder
from engine.alert import Alert
from ml_integration.serving import ServedSignal
from settings import Settings

__all__ = ["Arm", "ArmResult", "Fill", "build_alert", "run_arm"]

#: Candles the signal carries with an alert (the hybrid rule scores them when the alert has no
#: technical score; the script's alerts always have one).
CANDLE_TAIL = 300

#: An arm's model: the signal for an order (the ML layer's own type, as live) and the
#: ``ml_analysis`` its alert row keeps.
OpinionSource = Callable[[PineOrder], tuple[ServedSignal | None, dict[str, Any] | None]]


@dataclass(frozen=True)
class Arm:
    """A named way of deciding: the strategy mode and where the ML opinion comes from."""

    name: str
    label: str
    mode: str
    opinion: OpinionSource | None = None


@dataclass(frozen=True)
class Fill:
    """One filled order of an arm."""

    bar: int
    at: pd.Timestamp
    side: str
    amount: float
    price: float
    fee: float
    position_after: float
    cash_after: float


@dataclass
class ArmResult:
    """An arm's decisions, fills and per-bar account."""

    arm: Arm
    decisions: list[dict[str, Any]] = field(default_factory=list)
    fills: list[Fill] = field(default_factory=list)
    equity: np.ndarray = field(default_factory=lambda: np.zeros(0))
    position: np.ndarray = field(default_factory=lambda: np.zeros(0))
    fees: float = 0.0


def build_alert(order: PineOrder, *, symbol: str, timeframe: str, strategy_id: str) -> Alert:
    """The alert JSON the script sends for ``order`` (its alert_message template), as the
    webhook would validate it. No bar fields: on TradingView they describe the bar the order
    fills in, which the replay does not know at an entry's fill."""
    base, _, quote = symbol.partition("/")
    market = {1: "long", -1: "short", 0: "flat"}
    return Alert.model_validate(
        {
            "strategy_id": strategy_id, "ticker": f"{base}{quote}", "exchange": "BINANCE",
            "interval": timeframe, "action": order.action, "contracts": round(order.qty, 8),
            "price": order.price, "position_size": order.position_size,
            "market_position": market[int(np.sign(order.position_size))],
            "prev_market_position": market[int(np.sign(order.prev_position))],
            "order_id": order.order_id, "comment": order.order_id,
            "time": order.at.floor(f"{_seconds(timeframe)}s").isoformat(), "timenow": order.at.isoformat(),
            "ml_confidence": round(order.confidence, 6), "kelly_fraction": round(order.kelly, 6),
            "sentiment_score": 0.0, "technical_score": order.technical_score,
        }
    )  # fmt: skip


def _seconds(timeframe: str) -> int:
    from ml_integration.candles import timeframe_seconds

    return timeframe_seconds(timeframe)


def run_arm(
    arm: Arm,
    frame: pd.DataFrame,
    orders: list[PineOrder],
    *,
    first: int,
    last: int,
    settings: Settings,
    symbol: str,
    timeframe: str,
) -> ArmResult:
    """Decide every order's alert on a fresh book and mark the account at each bar's close of
    rows ``first`` .. ``last - 1``. The book must be new: ``settings.database`` may not exist."""
    if Path(settings.database).exists():
        raise FileExistsError(f"{settings.database} exists: an arm starts on a fresh paper book of its own")
    book = EngineReplay(settings)
    result = ArmResult(arm)
    cash = np.full(last - first, np.nan)
    position = np.full(last - first, np.nan)
    state = book.account(symbol)
    row = first
    try:
        for order in orders:
            while row < order.bar:
                cash[row - first], position[row - first] = state.cash, state.position
                row += 1
            alert = build_alert(
                order, symbol=symbol, timeframe=timeframe, strategy_id=settings.default_strategy
            )
            served, analysis = arm.opinion(order) if arm.opinion is not None else (None, None)
            candles = frame.iloc[max(0, order.signal_bar + 1 - CANDLE_TAIL) : order.signal_bar + 1]
            signal = replace(served or ServedSignal(error=f"{arm.label}: no model"), candles=candles)
            decision = book.submit(
                alert, price=order.price, at=order.at.timestamp(), signal=signal, analysis=analysis
            )
            state = book.account(symbol)
            result.decisions.append(
                {"at": order.at.isoformat(), "action": order.action, **decision.as_json()}
            )
            if decision.result is not None and decision.result.filled > 0 and decision.order is not None:
                result.fills.append(
                    Fill(order.bar, order.at, decision.order.side, decision.result.filled,
                         float(decision.result.average or order.price), decision.result.fee,
                         state.position, state.cash)
                )  # fmt: skip
        while row < last:
            cash[row - first], position[row - first] = state.cash, state.position
            row += 1
    finally:
        book.close()
    close = frame["close"].to_numpy(dtype=float)[first:last]
    result.equity = cash + position * close
    result.position = position
    result.fees = state.fees
    return result
