"""The one Broker interface: paper and live trading share it; the engine never knows which."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from typing import Any, Literal

__all__ = ["Broker", "MarketLimits", "OrderRequest", "OrderResult", "OrderStatus", "Side"]

Side = Literal["buy", "sell"]
OrderStatus = Literal["filled", "partially_filled", "open", "canceled", "rejected", "unknown"]


@dataclass(frozen=True, kw_only=True)
class OrderRequest:
    """An order the engine wants placed. ``client_order_id`` makes placement idempotent."""

    client_order_id: str
    symbol: str  # ccxt unified symbol, e.g. BTC/USDT or BTC/USDT:USDT
    side: Side
    amount: float  # base units, > 0
    order_type: Literal["market", "limit"] = "market"
    price: float | None = None  # limit price, or the reference price for a market order
    reduce_only: bool = False


@dataclass(frozen=True, kw_only=True)
class OrderResult:
    """What the broker says happened to an order."""

    client_order_id: str
    status: OrderStatus
    filled: float
    average: float | None
    fee: float = 0.0
    fee_currency: str | None = None
    exchange_order_id: str | None = None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MarketLimits:
    """A market's order limits; None means the market sets none."""

    min_amount: float | None = None
    max_amount: float | None = None
    amount_step: float | None = None
    min_cost: float | None = None
    max_cost: float | None = None
    price_tick: float | None = None

    def fit(self, amount: float, price: float) -> tuple[float, str | None]:
        """``amount`` rounded down to the step, and the reason it cannot be sent (or None).

        Rounded *down*: an order never exceeds what sizing and risk allowed.
        """
        if not (math.isfinite(amount) and amount > 0 and math.isfinite(price) and price > 0):
            return 0.0, f"amount {amount!r} at price {price!r} is not a positive finite order"
        if self.amount_step:
            steps = (Decimal(repr(amount)) / Decimal(repr(self.amount_step))).to_integral_value(ROUND_DOWN)
            amount = float(steps * Decimal(repr(self.amount_step)))
        cost = amount * price
        floor = self.min_amount or self.amount_step or 0.0
        if amount <= 0 or amount < floor:
            return amount, f"amount {amount:.10g} is below the market minimum {floor:g}"
        if self.max_amount is not None and amount > self.max_amount:
            return amount, f"amount {amount:.10g} is above the market maximum {self.max_amount:g}"
        if self.min_cost is not None and cost < self.min_cost:
            return amount, f"order value {cost:.8g} is below the market minimum {self.min_cost:g}"
        if self.max_cost is not None and cost > self.max_cost:
            return amount, f"order value {cost:.8g} is above the market maximum {self.max_cost:g}"
        return amount, None


class Broker(ABC):
    """Places orders and reports on them.

    Contract: :meth:`execute` sends an order at most once. When the outcome is unknown
    (timeout), it reconciles by ``client_order_id`` via :meth:`fetch_order` and raises
    :class:`~engine.exceptions.OrderUncertainError` if that cannot settle it; it never re-sends.
    """

    #: Name recorded with orders and positions ("paper" or the ccxt exchange id).
    name: str
    #: True when ``execute`` is local and instant (no network): the engine may then run it
    #: inside the decision's transaction, so order, fill and alert commit atomically.
    settles_instantly: bool = False
    #: True when orders reach a real market (an exchange, sandbox or live); False for the paper
    #: book. What may act on it asks this, never the broker's name.
    live: bool = True

    @abstractmethod
    def resolve_symbol(self, ticker: str, exchange: str | None = None) -> str:
        """Map a TradingView ticker (``BINANCE:BTCUSDT``, ``BTCUSDT.P``) to a unified symbol."""

    @abstractmethod
    def execute(self, order: OrderRequest) -> OrderResult:
        """Place ``order`` once and return its result."""

    @abstractmethod
    def fetch_order(self, client_order_id: str, symbol: str) -> OrderResult | None:
        """The order placed with ``client_order_id``, or None if the broker never saw it."""

    @abstractmethod
    def equity(self) -> float:
        """Account value in the quote currency (cash plus marked positions)."""

    def starting_cash(self) -> float:
        """The cash a ledger of this broker starts from: the paper book's starting balance; an
        exchange account's ledger starts at zero (its fills are recorded, its cash is its own)."""
        return 0.0

    def last_price(self, symbol: str) -> float | None:
        """The latest traded price, when the broker knows one."""
        return None

    def market_limits(self, symbol: str) -> MarketLimits:
        """The market's order limits (amount, step, cost); a broker without any says so."""
        return MarketLimits()

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
