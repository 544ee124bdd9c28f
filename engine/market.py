"""What the gateway itself believes about a market: its price and its order limits.

An alert's ``price`` (and the bar it carries) is a *claim* by whoever holds the passphrase. The
engine sizes, risk-checks and fills with a *reference* price the gateway trusts instead: the
candle store's latest close when it is recent, else the broker's ticker. The alert's price is
only compared with it (:func:`check_alert_price`), and refused when it strays outside the
configured band, so that no alert can move the book by naming a price.

Market limits (minimum and maximum amount, amount step, minimum cost, price tick) are one
table shape for every broker: ccxt's ``load_markets()`` for an exchange, the ``[paper]``
settings for the paper book.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from common.timeframes import seconds
from engine.brokers.base import Broker, MarketLimits
from engine.exceptions import BrokerError, PriceCheckError
from storage import Storage
from storage import candles as candle_store
from storage import marks as mark_store
from storage import orders as order_store

__all__ = ["MarketLimits", "MarketPrices", "PriceSource", "ReferencePrice", "check_alert_price"]

#: Timeframes looked at, after the alert's own, for a recent close (shortest first: freshest).
_FALLBACK_TIMEFRAMES = ("1m", "5m", "15m", "1h", "4h", "1d")


@dataclass(frozen=True)
class ReferencePrice:
    """A price the gateway trusts for ``symbol``, and where it came from.

    ``trusted`` is False for the last recorded mark (or the entry price) used when no current
    price is known: good enough to value an exit, never to open or add exposure. ``taken_at``
    is when an exchange's ticker was read (it may be a cached reading a few seconds old); None
    for a price whose source names its own time (a bar's close, a mark).
    """

    price: float
    source: str
    trusted: bool = True
    taken_at: float | None = None

    def age(self, now: float) -> float | None:
        """Seconds since the price was read, when known."""
        return None if self.taken_at is None else round(max(0.0, now - self.taken_at), 3)


class PriceSource(Protocol):
    """What the engine asks of market prices: the live :class:`MarketPrices` (candle store, then
    ticker), or a replay's prices on simulated time."""

    def reference(self, symbol: str, timeframe: str) -> ReferencePrice | None: ...

    def last_known(self, symbol: str) -> ReferencePrice | None: ...


class MarketPrices:
    """The reference-price collaborator: what a symbol trades at, as far as the gateway knows.

    Read outside the write transaction (the ticker may need the network). ``clock`` is passed
    in so that a replay can run the same rule on simulated time.
    """

    def __init__(self, storage: Storage, broker: Broker, *, clock: Callable[[], float] = time.time):
        self.storage = storage
        self.broker = broker
        self.clock = clock

    def reference(self, symbol: str, timeframe: str) -> ReferencePrice | None:
        """The candle store's latest close when recent, else the broker's ticker (a cached
        reading, with the time it was read), else None."""
        candle = self._recent_close(symbol, timeframe)
        if candle is not None:
            return candle
        try:
            reading = self.broker.price_reading(symbol)
        except BrokerError:
            return None
        price = reading.value
        if price is None or not (math.isfinite(price) and price > 0):
            return None
        return ReferencePrice(float(price), reading.source, taken_at=reading.taken_at)

    def last_known(self, symbol: str) -> ReferencePrice | None:
        """For exits without a current price: the shared mark, else the position's entry price.
        Valuing an exit there moves equity by fees and slippage only: no cash from thin air."""
        mark = mark_store.get_mark(self.storage, self.broker.name, symbol)
        if mark is not None:
            return ReferencePrice(mark.price, f"last mark ({mark.source})", trusted=False)
        for position in order_store.list_positions(self.storage, self.broker.name):
            if position.symbol == symbol and position.avg_price:
                return ReferencePrice(position.avg_price, "position entry price", trusted=False)
        return None

    def _recent_close(self, symbol: str, timeframe: str) -> ReferencePrice | None:
        """The close of the current or last closed bar: the alert's timeframe first, then the
        shorter timeframes (their closes are the freshest)."""
        now = self.clock()
        for tf in dict.fromkeys((timeframe, *_FALLBACK_TIMEFRAMES)):
            row = candle_store.newest_candle(self.storage, symbol, tf)
            if row is None:
                continue
            opened = row[0] / 1000
            step = seconds(tf)
            # Current bar (its close is the latest trade) or the one just closed; never a bar
            # from the future (a clock or data error).
            if now - 2 * step <= opened <= now + 60 and row[4] > 0:
                return _store_close(self.storage, symbol, tf, row)
        return None


def _store_close(storage: Storage, symbol: str, timeframe: str, row: tuple[float, ...]) -> ReferencePrice:
    """A stored candle's close as a reference price, its source saying when it is synthetic (the
    market's candles are generated: every answer and refusal that shows the price says so) or an
    alert's own bar (the first price a paper gateway had)."""
    close = row[4]
    if candle_store.is_synthetic_market(storage, symbol):
        return ReferencePrice(close, f"candle store {timeframe} close, SYNTHETIC")
    if candle_store.candle_source(storage, symbol, timeframe, int(row[0])) == "alert":
        return ReferencePrice(close, f"candle store {timeframe} close (an alert's bar)")
    return ReferencePrice(close, f"candle store {timeframe} close")


def check_alert_price(field: str, claimed: float, reference: ReferencePrice, max_deviation: float) -> None:
    """Refuse an alert price outside ``max_deviation`` of the trusted reference.

    Raises :class:`PriceCheckError` naming the field, both prices and the setting.
    """
    deviation = abs(claimed - reference.price) / reference.price
    if not math.isfinite(deviation) or deviation > max_deviation:
        raise PriceCheckError(
            "price_out_of_band",
            field,
            f"{field} {claimed:.10g} is {deviation:.2%} away from the market price "
            f"{reference.price:.10g} ({reference.source}); TVGW_MAX_PRICE_DEVIATION is "
            f"{max_deviation:.2%}",
        )
