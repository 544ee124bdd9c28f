"""What the engine decided for one alert, and the port through which it reads the ML signal.

:class:`SignalPort` names the few fields of the ML layer's one signal a decision reads; the
ML layer's object has them, so the engine never imports the ML library (and works unchanged
without one), and what the answer's ``ml_analysis`` shows is the object the engine used.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

from engine.brokers.base import MarginMode, OrderRequest, OrderResult
from engine.exits import ExitPlan
from engine.market import ReferencePrice
from storage import Connection

__all__ = [
    "Clock",
    "Decision",
    "DecisionStatus",
    "MarketSnapshot",
    "PlannedOrder",
    "Receipt",
    "SignalPort",
    "SystemClock",
    "agrees_with",
    "combine",
    "has_opinion",
    "judged_probability",
    "probability_for",
    "stop_for",
]

#: ``placed``: the exchange holds the order with nothing filled yet; the order lifecycle follows
#: it, books what fills and arms its exits.
DecisionStatus = Literal["executed", "placed", "annotated", "rejected", "failed", "processing"]


class Clock(Protocol):
    """Wall-clock time in epoch seconds: the real one live, a simulated one in a backtest."""

    def now(self) -> float: ...


class SystemClock:
    """The machine's clock."""

    def now(self) -> float:
        return time.time()


@dataclass(frozen=True, kw_only=True)
class Receipt:
    """What the intake knows of an alert besides its content, and what it keeps with it.

    ``payload`` is the JSON to store (secrets already scrubbed); ``ml_analysis`` is the answer's
    view of the signal; ``record`` writes the ML layer's rows (the prediction, the alert's bar)
    inside the alert's own transaction, so an alert and its prediction commit together."""

    received_at: float
    source_ip: str | None = None
    payload: str = "{}"
    ml_analysis: dict[str, Any] | None = None
    record: Callable[[Connection, int, float], None] | None = None


class SignalPort(Protocol):
    """The few fields of the ML layer's one signal that a decision reads. The ML layer's own
    object (``ml_integration.serving.ServedSignal``) has them; the engine never imports it, and
    a backtest or a test may hand in anything of this shape. ``direction_probability`` is None
    when the ML layer has no opinion (no model, an error): the strategy's fallback rule decides."""

    @property
    def direction_probability(self) -> float | None: ...  # calibrated P(price up over the horizon)
    @property
    def combined_probability(self) -> float | None: ...  # ML and sentiment blended, P(up)
    @property
    def confidence(self) -> float: ...  # 0..1
    @property
    def kelly_fraction(self) -> float: ...  # the favoured side's fraction of equity; 0: no edge

    def kelly_for(self, side: str) -> float: ...  # the fraction for a trade on ``side`' (buy/sell)
    @property
    def stop_loss(self) -> float | None: ...
    @property
    def take_profit(self) -> float | None: ...
    @property
    def entry_price(self) -> float | None: ...  # the close the model saw; stops are relative to it
    @property
    def leverage(self) -> float: ...  # what the signal asks for; the risk limits cap it

    def technical_score(self, side: str) -> float | None: ...  # hybrid mode, on the same candles


def has_opinion(signal: SignalPort | None) -> bool:
    """Whether the ML layer gave a direction (else the strategy's fallback rule decides)."""
    return signal is not None and signal.direction_probability is not None


def judged_probability(signal: SignalPort) -> float | None:
    """The P(up) a signal's side and Kelly fraction were computed from: the combined one (the
    ML one when there is no combined)."""
    combined = signal.combined_probability
    return combined if combined is not None else signal.direction_probability


def agrees_with(signal: SignalPort, side: str) -> bool:
    """Whether the signal favours ``side``, judged on :func:`judged_probability`."""
    p = judged_probability(signal)
    return p is not None and (p > 0.5 if side == "buy" else p < 0.5)


def stop_for(signal: SignalPort, side: str, price: float) -> float | None:
    """The signal's stop, moved to ``price``, when the signal agrees with ``side``.

    The model measured its stop from its own last close; the order fills near the market
    price, so the same *distance* is applied there. A signal that disagrees has no stop for
    this side (the risk manager then uses its default).
    """
    if signal.stop_loss is None or not signal.entry_price or not agrees_with(signal, side):
        return None
    distance = abs(signal.entry_price - signal.stop_loss) / signal.entry_price
    return price * (1 - distance) if side == "buy" else price * (1 + distance)


def probability_for(signal: SignalPort, side: str) -> float:
    """Combined probability that a trade on ``side`` goes the right way."""
    p = signal.combined_probability if signal.combined_probability is not None else 0.5
    return p if side == "buy" else 1.0 - p


@dataclass(frozen=True, kw_only=True)
class MarketSnapshot:
    """Inputs gathered *before* the write transaction (they may need the network).

    An exchange's equity may be a cached reading: ``equity_taken_at`` is when it was read (epoch
    seconds; None for a book read just now), ``equity_source`` what from, and ``equity_error``
    why there is none when ``equity`` is None."""

    equity: float | None  # None: the broker could not say
    price: ReferencePrice | None  # the price the gateway trusts, never the alert's claim
    equity_taken_at: float | None = None
    equity_source: str | None = None
    equity_error: str | None = None


@dataclass(frozen=True, kw_only=True)
class PlannedOrder:
    """An order the engine intends; the client order id is assigned once the alert has an id."""

    symbol: str
    side: Literal["buy", "sell"]
    amount: float
    price: float | None
    reduce_only: bool
    stop_loss: float | None = None  # protective stop of the exposure it adds (risk accounting)
    exits: ExitPlan | None = None  # armed with the fill (the paper book watches them)
    timeframe: str = "1h"  # the bars its exits are watched on
    leverage: float | None = None  # a perpetual's leverage and margin mode, set before the order
    margin_mode: MarginMode | None = None

    def request(self, client_order_id: str) -> OrderRequest:
        return OrderRequest(
            client_order_id=client_order_id, symbol=self.symbol, side=self.side,
            amount=self.amount, price=self.price, reduce_only=self.reduce_only,
            leverage=self.leverage, margin_mode=self.margin_mode,
        )  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class Decision:
    """The outcome for one alert. ``status`` is what the response and the alert row say."""

    status: DecisionStatus
    mode: str
    action: str
    reason: str
    symbol: str | None = None
    current_position: float | None = None
    target_position: float | None = None
    order: PlannedOrder | None = None
    client_order_id: str | None = None
    result: OrderResult | None = None
    order_status: str | None = None
    risk_codes: tuple[str, ...] = ()
    risk_reasons: tuple[str, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)
    #: The alert's row (set once the alert is on file; for a duplicate, the duplicate's own row).
    alert_id: int | None = None
    #: For a repeat of an alert already on file: the first one's row. Nothing was decided.
    duplicate_of: int | None = None
    #: The account (the broker's name) this decision was made on.
    account: str | None = None
    #: Every account's own decision for the alert, in routing order (see :func:`combine`).
    accounts: tuple[Decision, ...] = ()
    #: A flip (long to short or back) is one step of two orders: this reduce-only close of the
    #: whole booked position is sent first, and ``order`` (the opening leg) only once it filled
    #: (:func:`engine.intent.split_flip`). Its client order id and what the broker answered.
    close_first: PlannedOrder | None = None
    close_client_order_id: str | None = None
    close_result: OrderResult | None = None
    #: A refusal the sender must fix (answered 422): (stable code, the alert's field at fault).
    refusal: tuple[str, str] | None = None

    def with_result(self, **changes: Any) -> Decision:
        return replace(self, **changes)

    @property
    def http_status(self) -> int:
        """The status code the alert is answered with (and kept with its row): a broker's
        failure is the gateway's upstream failing (502); a refusal the sender must fix is 422;
        every other decision is 200."""
        if self.refusal is not None:
            return 422
        return 502 if self.status == "failed" else 200

    def as_json(self) -> dict[str, Any]:
        """:meth:`to_dict`, computed once per decision (stored with the alert and returned)."""
        cached: dict[str, Any] | None = self.__dict__.get("_json")
        if cached is None:
            cached = self.to_dict()
            object.__setattr__(self, "_json", cached)
        return cached

    def to_dict(self) -> dict[str, Any]:
        """The JSON form stored with the alert and returned in the response."""
        out: dict[str, Any] = {
            "status": self.status, "mode": self.mode, "action": self.action, "reason": self.reason,
            "symbol": self.symbol, "current_position": self.current_position,
            "target_position": self.target_position,
        }  # fmt: skip
        if self.order is not None:
            o = self.order
            out["order"] = {
                "symbol": o.symbol, "side": o.side, "amount": o.amount, "price": o.price,
                "reduce_only": o.reduce_only, "client_order_id": self.client_order_id,
            }  # fmt: skip
            if o.leverage is not None or o.margin_mode is not None:
                out["order"].update(leverage=o.leverage, margin_mode=o.margin_mode)
        if self.result is not None:
            out["fill"] = {
                "status": self.result.status, "filled": self.result.filled,
                "average": self.result.average, "fee": self.result.fee,
                "fee_currency": self.result.fee_currency,
                "exchange_order_id": self.result.exchange_order_id,
                "fees": [{"currency": f.currency, "cost": f.cost, "value": f.value, "note": f.note}
                         for f in self.result.fees],
            }  # fmt: skip
        if self.close_first is not None:
            c, r = self.close_first, self.close_result
            out["close_first"] = {
                "side": c.side, "amount": c.amount, "reduce_only": c.reduce_only,
                "client_order_id": self.close_client_order_id,
                "fill": None if r is None else {"status": r.status, "filled": r.filled, "average": r.average},
            }  # fmt: skip
        if self.risk_codes:
            out["risk"] = {"codes": list(self.risk_codes), "reasons": list(self.risk_reasons)}
        if self.details:
            out["details"] = self.details
        if self.refusal is not None:
            out["refusal"] = {"code": self.refusal[0], "field": self.refusal[1]}
        if self.account is not None:
            out["account"] = self.account
        if self.accounts:
            out["accounts"] = [a.account_outcome() for a in self.accounts]
        return out

    def account_outcome(self) -> dict[str, Any]:
        """This account's line in the answer's ``accounts`` list."""
        order, result = self.order, self.result
        out: dict[str, Any] = {
            "account": self.account, "status": self.status, "reason": self.reason,
            "symbol": self.symbol, "side": order.side if order else None,
            "amount": order.amount if order else None, "client_order_id": self.client_order_id,
            "filled": result.filled if result else None, "average": result.average if result else None,
        }  # fmt: skip
        if self.risk_codes:
            out["risk_codes"] = list(self.risk_codes)
        return out


#: Which account's decision leads an alert's answer: the first that filled, else the first the
#: exchange holds, else the first still sending, else the first whose broker failed, else the
#: first (routing order breaks ties).
_LEAD_RANK: dict[str, int] = {"executed": 0, "placed": 1, "processing": 2, "failed": 3}


def combine(decisions: list[Decision] | tuple[Decision, ...]) -> Decision:
    """One alert's decision over the accounts it was routed to: the leading account's decision
    (see ``_LEAD_RANK``) carrying every account's own in ``accounts``. So the alert is answered
    200 when any account filled (a 502 would invite a resend of what did fill), 502 only when
    none filled and a broker failed, and a single account answers exactly as before."""
    lead = min(decisions, key=lambda d: _LEAD_RANK.get(d.status, 3))
    return lead.with_result(accounts=tuple(decisions))
