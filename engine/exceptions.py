"""The project's exception tree. Each docstring says what the operator must do.

ccxt errors never leak past ``engine.brokers.ccxt_broker``: they are mapped here with
``raise ... from e`` so that callers catch one tree.
"""

from __future__ import annotations

from common.errors import TvgwError

__all__ = [
    "AlertRefusedError",
    "BrokerError",
    "ExchangeUnavailableError",
    "InsufficientFundsError",
    "InvalidOrderError",
    "OperationalError",
    "OrderUncertainError",
    "PriceCheckError",
    "TemporaryError",
    "TvgwError",
    "UnknownSymbolError",
]


class BrokerError(TvgwError):
    """Something went wrong talking to a broker (paper or exchange)."""


class OperationalError(BrokerError):
    """A human must act: bad API keys, permissions, exchange config. Trading stops for this
    broker until fixed; retrying will not help."""


class TemporaryError(BrokerError):
    """Network trouble, rate limits, exchange maintenance. Reads may be retried with backoff;
    an order is never re-sent blindly because of one (see OrderUncertainError)."""


class ExchangeUnavailableError(TemporaryError):
    """The exchange did not answer or answered 5xx; try again later."""


class InvalidOrderError(BrokerError):
    """The exchange refused this order (size, precision, minimum notional, market closed).
    Fix the alert or the sizing; the same order will be refused again."""


class InsufficientFundsError(InvalidOrderError):
    """Not enough balance for this order. Deposit, or reduce the size or the leverage."""


class UnknownSymbolError(BrokerError):
    """The alert's ticker maps to no market on this exchange. Check the ticker, or add an
    explicit mapping."""


class OrderUncertainError(BrokerError):
    """An order was sent but its fate is unknown (timeout) and reconciliation by client order
    id could not settle it. It is recorded as ``unknown``; check the exchange before acting."""

    def __init__(self, message: str, *, client_order_id: str):
        super().__init__(message)
        self.client_order_id = client_order_id


class AlertRefusedError(TvgwError):
    """The alert asks for something the gateway will not do (answered 422 with ``code`` and
    the ``field`` at fault, and recorded as refused). Fix the alert or the strategy's limits."""

    def __init__(self, code: str, field: str | None, message: str):
        super().__init__(message)
        self.code = code
        self.field = field
        self.message = message


class PriceCheckError(AlertRefusedError):
    """The alert's price cannot be trusted: it strays from the market price the gateway knows
    (``price_out_of_band``), or the gateway knows no market price to check it against
    (``no_market_price``). Fix the alert, or give the gateway a price source (``tvgw data
    fetch``, bars in alerts, ``TVGW_MARKET_DATA``)."""
