"""The paper book: fills at the gateway's reference price with fee and slippage; state lives
in SQLite.

It keeps no state of its own: cash and positions are the storage ledger (``storage.orders``)
and positions are valued at the shared marks (``storage.marks``), so the book survives
restarts and every gunicorn worker sees the same account and the same equity.
"""

from __future__ import annotations

import math

from common.errors import ConfigError
from engine.brokers.base import Broker, Fee, MarketLimits, OrderRequest, OrderResult
from engine.exceptions import InsufficientFundsError, InvalidOrderError
from engine.settings import PaperSettings
from engine.symbols import to_ccxt_symbol
from storage import Storage
from storage.marks import marked_positions_value
from storage.orders import get_cash, ledger_start, order_record

__all__ = ["PaperBroker"]


class PaperBroker(Broker):
    """Simulated execution. A market order fills completely at the reference price moved
    against the trader by ``slippage_bps``, and pays ``fee_rate`` of its notional."""

    name = "paper"
    settles_instantly = True
    live = False

    def __init__(self, storage: Storage, settings: PaperSettings, *, max_leverage: float = 1.0):
        self.storage = storage
        self.settings = settings
        self.max_leverage = max_leverage
        self._symbols: dict[tuple[str, str | None], str] = {}

    def resolve_symbol(self, ticker: str, exchange: str | None = None) -> str:
        key = (ticker, exchange)
        symbol = self._symbols.get(key)
        if symbol is None:
            symbol = self._symbols[key] = to_ccxt_symbol(ticker, None, exchange)
        return symbol

    def check_starting_balance(self, database: object) -> None:
        """Refuse a ``starting_balance`` that the existing book cannot honour.

        The ledger's cash is the truth once a book has fills, so a changed setting would
        otherwise be silently ignored; the trader must choose: a new book or the old figure."""
        started = ledger_start(self.storage, self.name, self.settings.quote_currency)
        wanted = self.settings.starting_balance
        if started is None or abs(started - wanted) <= 1e-6 * max(1.0, abs(wanted)):
            return
        setting = (
            "[paper] starting_balance (TVGW_PAPER_BALANCE)"
            if self.name == "paper"
            else f"[accounts.{self.name}] starting_balance (else [paper]'s)"
        )
        raise ConfigError(
            f"{setting} is {wanted:g} but the paper book {self.name!r} in "
            f"{database} started with {started:.2f} {self.settings.quote_currency} and has trades: "
            f"set it back to {started:.2f}, or point TVGW_DATABASE at a new file to start a new book"
        )

    def starting_cash(self) -> float:
        return self.settings.starting_balance

    def cash(self) -> float:
        return get_cash(self.storage, self.name, self.settings.quote_currency, self.settings.starting_balance)

    def equity(self) -> float:
        """Cash plus open positions valued at the shared marks (entry price if none): the same
        number in every worker."""
        return self.cash() + marked_positions_value(self.storage, self.name)

    def market_limits(self, symbol: str) -> MarketLimits:
        limits = self.settings.limits_for(symbol)
        return MarketLimits(**limits.model_dump())

    def execute(self, order: OrderRequest) -> OrderResult:
        """Fill at ``order.price`` (the engine's reference price, never the alert's). Pure:
        it changes nothing; the engine records the fill with the order, in one transaction."""
        if order.price is None or not (math.isfinite(order.price) and order.price > 0):
            raise InvalidOrderError(
                f"paper {order.side} {order.amount} {order.symbol}: no reference price to fill at"
            )
        _, problem = self.market_limits(order.symbol).fit(order.amount, order.price)
        if problem is not None:
            raise InvalidOrderError(f"paper {order.side} {order.amount:.10g} {order.symbol}: {problem}")
        slip = order.price * self.settings.slippage_bps / 10_000
        fill = order.price + slip if order.side == "buy" else order.price - slip
        notional = order.amount * fill
        fee = notional * self.settings.fee_rate
        if not math.isfinite(notional + fee):
            raise InvalidOrderError(f"paper {order.side} {order.symbol}: order value is not finite")
        if not order.reduce_only:
            # A perpetual's order names its leverage: its margin (notional / leverage) must fit
            # the equity. The ledger still books the notional (cash may go below zero; equity,
            # cash plus the marked position, stays right).
            leverage = order.leverage or self.max_leverage
            available = max(self.equity(), 0.0) * leverage
            if notional + fee > available:
                raise InsufficientFundsError(
                    f"paper {order.side} {order.amount} {order.symbol} at {fill:.8g} needs "
                    f"{notional + fee:.2f} {self.settings.quote_currency}; "
                    f"{available:.2f} available at {leverage:g}x"
                )
        return OrderResult(
            client_order_id=order.client_order_id,
            status="filled",
            filled=order.amount,
            average=fill,
            fees=(Fee(self.settings.quote_currency, fee, fee),),
            cost=notional,
            exchange_order_id=f"paper-{order.client_order_id}",
        )

    def fetch_order(self, client_order_id: str, symbol: str) -> OrderResult | None:
        """A paper order exists only once its fill was recorded with it; a ``pending`` row
        left by a crash never filled, because the fill and its record commit together."""
        order = order_record(self.storage, client_order_id)
        if order is not None and order.status == "filled":
            return OrderResult(
                client_order_id=client_order_id,
                status="filled",
                filled=order.filled,
                average=order.average,
                fees=tuple(Fee(currency, cost, cost) for currency, cost in order.fees.items()),
                exchange_order_id=order.exchange_order_id,
            )
        return None
