"""The one Broker interface: paper and live trading share it; the engine never knows which."""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from typing import Any, Literal

from engine.brokers.readings import Reading

__all__ = [
    "Broker",
    "ExitHolder",
    "Fee",
    "MarginMode",
    "MarketLimits",
    "OrderRequest",
    "OrderResult",
    "OrderStatus",
    "ProtectiveOrder",
    "Side",
]

Side = Literal["buy", "sell"]
MarginMode = Literal["isolated", "cross"]
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
    #: For a contract market (a perpetual): the leverage and margin mode the position trades
    #: at, set on the exchange before the order when they change. None leaves them as they are.
    leverage: float | None = None
    margin_mode: MarginMode | None = None


@dataclass(frozen=True, kw_only=True)
class ProtectiveOrder:
    """A stop or take-profit that closes (part of) a position when the price reaches
    ``trigger``: a market order the exchange holds and fires itself, reduce-only on contracts.
    ``client_order_id`` makes its placement idempotent (derived from the exit's row)."""

    client_order_id: str
    symbol: str
    side: Side  # the closing side
    amount: float
    trigger: float
    kind: Literal["stop", "take_profit"]


@dataclass(frozen=True)
class ExitHolder:
    """Who acts on a market's protective exits: the exchange (a resting order that holds while
    the gateway is down) or the gateway's own watcher, and why. ``known`` is False when the
    broker could not be asked (a transient error): the question is asked again later, and the
    gateway's watcher acts on the exits meanwhile."""

    on_exchange: bool
    reason: str
    known: bool = True

    @property
    def held_by(self) -> str:
        """What an exit's row records: ``exchange``, ``gateway``, or ``undecided``."""
        if not self.known:
            return "undecided"
        return "exchange" if self.on_exchange else "gateway"


@dataclass(frozen=True)
class Fee:
    """A fee as the exchange charged it, in one currency (fees in different currencies are
    never added together), and what it is worth in the account's quote currency: ``value`` is
    None when it could not be valued (a third currency with no market to the quote), and
    ``note`` says why."""

    currency: str
    cost: float
    value: float | None = None
    note: str | None = None


@dataclass(frozen=True, kw_only=True)
class OrderResult:
    """What the broker says happened to an order, cumulatively: ``filled`` is the gross amount
    the exchange has filled so far, at ``average`` (``cost`` in quote), with ``fees``.

    ``net`` is how far the fills moved the account's holding of the base coin when that differs
    from ``filled``: a buy whose fee was taken in the base coin received ``filled`` less that
    fee (rounded down to the market's step: what can be sold again), a sell with such a fee gave
    ``filled`` plus it. None means ``filled``."""

    client_order_id: str
    status: OrderStatus
    filled: float
    average: float | None
    fees: tuple[Fee, ...] = ()
    cost: float | None = None
    net: float | None = None
    exchange_order_id: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def fee(self) -> float:
        """The fee's cost when it was charged in one currency (0.0 when in several: see ``fees``)."""
        return self.fees[0].cost if len(self.fees) == 1 else 0.0

    @property
    def fee_currency(self) -> str | None:
        """The one currency the fee was charged in (None when none or several)."""
        return self.fees[0].currency if len(self.fees) == 1 else None

    @property
    def fee_value(self) -> float:
        """The fees that could be valued, in the account's quote currency."""
        return sum(f.value for f in self.fees if f.value is not None)


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

    def equity_reading(self) -> Reading[float]:
        """:meth:`equity` with the time it was read. A broker that reads it over the network
        caches it and says how old it is; here it is read now."""
        return Reading(self.equity(), time.time(), f"{self.name} book")

    def price_reading(self, symbol: str, *, wait_s: float | None = None) -> Reading[float | None]:
        """:meth:`last_price` with the time it was read (see :meth:`equity_reading`)."""
        return Reading(self.last_price(symbol), time.time(), f"{self.name} price")

    def limits_reading(self, symbol: str) -> Reading[MarketLimits]:
        """:meth:`market_limits` with the time they were read (see :meth:`equity_reading`)."""
        return Reading(self.market_limits(symbol), time.time(), f"{self.name} settings")

    def start(self, *, refresh_s: float) -> None:  # noqa: B027 - optional hook
        """Begin what a serving process keeps up in the background (an exchange's market table,
        refreshed every ``refresh_s``); nothing to do for a broker that reads nothing remote."""

    def ready(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for what :meth:`start` loads first; True when ready."""
        return True

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

    def can_short(self, symbol: str) -> bool:
        """Whether the account can hold a short on ``symbol``. The base broker simulates one
        account that can (the paper book)."""
        return True

    def exit_holder(self, symbol: str) -> ExitHolder:
        """Whether ``symbol``'s exits can rest on the exchange. The base broker has none, so
        the gateway's watcher acts on them."""
        return ExitHolder(False, f"{self.name} holds no orders of its own: the gateway watches its exits")

    def exit_notice(self) -> str | None:
        """One line for the start-up log saying where this broker's exits are held (None: the
        paper book, nothing to warn about)."""
        return None

    def place_exit(self, order: ProtectiveOrder) -> OrderResult:
        """Place a stop or take-profit the exchange holds, once (a lost answer is reconciled
        by client order id, never re-sent). Only called where :meth:`exit_holder` said so."""
        raise NotImplementedError(f"{self.name} cannot hold exits")

    def fetch_exit(self, client_order_id: str, symbol: str) -> OrderResult | None:
        """A placed exit's state; once it fired, the fill of the order it became."""
        raise NotImplementedError(f"{self.name} cannot hold exits")

    def cancel_exit(self, client_order_id: str, symbol: str) -> OrderResult | None:
        """Cancel a resting exit; its final state (None when the exchange has no such order)."""
        raise NotImplementedError(f"{self.name} cannot hold exits")

    def balances(self) -> dict[str, float]:
        """What the account holds per currency (free and locked), for the reconciler. The base
        broker keeps no account apart from the gateway's own book."""
        raise NotImplementedError(f"{self.name} has no account of its own to compare the book with")

    def contract_positions(self, symbols: list[str]) -> dict[str, float]:
        """The signed position the exchange holds in each contract market of ``symbols``."""
        raise NotImplementedError(f"{self.name} has no account of its own to compare the book with")

    def open_client_ids(self, symbol: str) -> set[str]:
        """Client order ids of the orders open on ``symbol`` (the exchange's view)."""
        raise NotImplementedError(f"{self.name} has no account of its own to compare the book with")

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
