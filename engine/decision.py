"""What the engine decided for one alert, and the ML opinion it was given.

``MLOpinion`` is the engine's view of an ML signal: the few numbers a decision needs. The
webhook builds it from ``ml_integration``'s richer signal, so the engine never imports the ML
library (and works unchanged without one).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

from engine.brokers.base import OrderRequest, OrderResult
from engine.market import ReferencePrice

__all__ = ["Decision", "DecisionStatus", "MLOpinion", "MarketSnapshot", "PlannedOrder", "SignalFields"]

DecisionStatus = Literal["executed", "annotated", "rejected", "failed", "processing"]


class SignalFields(Protocol):
    """What :meth:`MLOpinion.from_signal` reads from ``ml_integration``'s ``TradingSignal``,
    declared here so that the engine never imports the ML library."""

    @property
    def ml_probability(self) -> float | None: ...
    @property
    def confidence(self) -> float: ...
    @property
    def combined_probability(self) -> float | None: ...
    @property
    def kelly_fraction(self) -> float: ...
    @property
    def action(self) -> str: ...
    @property
    def magnitude(self) -> float | None: ...
    @property
    def sentiment_score(self) -> float: ...
    @property
    def quality_grade(self) -> str: ...
    @property
    def stop_loss(self) -> float | None: ...
    @property
    def take_profit(self) -> float | None: ...
    @property
    def entry_price(self) -> float: ...
    @property
    def model_version(self) -> str | None: ...
    @property
    def synthetic(self) -> bool: ...


@dataclass(frozen=True, kw_only=True)
class MLOpinion:
    """The ML strategy's view of this market, as far as decisions are concerned."""

    direction_probability: float  # calibrated P(price up over the horizon)
    confidence: float  # 0..1, the strategy's combined confidence
    combined_probability: float  # ML and sentiment blended, P(up)
    kelly_fraction: float  # fraction of equity; 0 when there is no edge
    action: str  # the strategy's own call: buy, sell or hold
    magnitude: float | None = None
    sentiment_score: float | None = None
    quality_grade: str | None = None
    stop_loss: float | None = None
    take_profit: float | None = None
    entry_price: float | None = None  # the close the model saw; stops are relative to it
    model_version: str | None = None
    synthetic: bool = False

    @classmethod
    def from_signal(cls, signal: SignalFields) -> MLOpinion:
        """The opinion a strategy signal gives: the one conversion, used by the webhook and the
        backtest alike, so both hand the engine the same numbers. A signal without a
        probability (a hold over a gap) reads as 0.5: no view either way."""
        probability = signal.ml_probability if signal.ml_probability is not None else 0.5
        combined = signal.combined_probability
        return cls(
            direction_probability=probability,
            confidence=signal.confidence,
            combined_probability=combined if combined is not None else 0.5,
            kelly_fraction=signal.kelly_fraction,
            action=signal.action,
            magnitude=signal.magnitude,
            sentiment_score=signal.sentiment_score,
            quality_grade=signal.quality_grade,
            stop_loss=signal.stop_loss,
            take_profit=signal.take_profit,
            entry_price=signal.entry_price,
            model_version=signal.model_version,
            synthetic=signal.synthetic,
        )

    def agrees_with(self, side: str) -> bool:
        return self.direction_probability > 0.5 if side == "buy" else self.direction_probability < 0.5

    def stop_for(self, side: str, price: float) -> float | None:
        """The model's stop, moved to ``price``, when the model agrees with ``side``.

        The model measured its stop from its own last close; the order fills near the alert's
        price, so the same *distance* is applied there. A model that disagrees has no stop for
        this side (the risk manager then uses its default).
        """
        if self.stop_loss is None or not self.entry_price or not self.agrees_with(side):
            return None
        distance = abs(self.entry_price - self.stop_loss) / self.entry_price
        return price * (1 - distance) if side == "buy" else price * (1 + distance)

    def probability_for(self, side: str) -> float:
        """Combined probability that a trade on ``side`` goes the right way."""
        return self.combined_probability if side == "buy" else 1.0 - self.combined_probability


@dataclass(frozen=True, kw_only=True)
class MarketSnapshot:
    """Inputs gathered *before* the write transaction (they may need the network)."""

    equity: float | None  # None: the broker could not say
    price: ReferencePrice | None  # the price the gateway trusts, never the alert's claim
    candles: Any = None  # recent OHLCV DataFrame, when the candle store has one


@dataclass(frozen=True, kw_only=True)
class PlannedOrder:
    """An order the engine intends; the client order id is assigned once the alert has an id."""

    symbol: str
    side: Literal["buy", "sell"]
    amount: float
    price: float | None
    reduce_only: bool
    stop_loss: float | None = None  # protective stop of the exposure it adds (risk accounting)

    def request(self, client_order_id: str) -> OrderRequest:
        return OrderRequest(
            client_order_id=client_order_id, symbol=self.symbol, side=self.side,
            amount=self.amount, price=self.price, reduce_only=self.reduce_only,
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

    def with_result(self, **changes: Any) -> Decision:
        return replace(self, **changes)

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
        if self.result is not None:
            out["fill"] = {
                "status": self.result.status, "filled": self.result.filled,
                "average": self.result.average, "fee": self.result.fee,
                "fee_currency": self.result.fee_currency,
                "exchange_order_id": self.result.exchange_order_id,
            }  # fmt: skip
        if self.risk_codes:
            out["risk"] = {"codes": list(self.risk_codes), "reasons": list(self.risk_reasons)}
        if self.details:
            out["details"] = self.details
        return out
