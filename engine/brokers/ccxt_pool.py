"""A small pool of ccxt instances of one exchange account: one market table and one rate limit
shared by all, each instance used by one thread at a time.

Why a pool: ccxt's synchronous client is not made for concurrent calls on one instance (its
HTTP session, its last-response fields and its rate limiter's timestamp are per instance, and
its maintainers advise one instance per thread with the markets loaded once and handed to each).
One instance behind one lock made every symbol wait behind the slowest: a ticker answering
after 10 s held every other symbol's alerts for 5 s. With a pool, a slow answer holds one
instance; the other threads lease others.

What stays shared, so the exchange still sees one polite client:

* the rate limit: ccxt calls ``throttle(cost)`` before each request; every instance here calls
  one :class:`SharedThrottle`, which spaces the *starts* of all the pool's requests by
  ``rateLimit x cost`` ms as one instance would. A request that stalls holds no one's turn.
* the markets: loaded once (:meth:`ExchangePool.install_markets`) and given to each instance the
  next time it is leased, so no instance loads them inside a caller's request.

Several gunicorn workers still have a pool each, as they had an instance each before.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import ccxt

from engine.exceptions import ExchangeUnavailableError

__all__ = ["ExchangePool", "SharedThrottle"]

#: What ccxt's ``set_markets_from_exchange`` copies from a loaded instance (shared, not rebuilt:
#: the tables are replaced, never changed in place, when markets are loaded again).
_MARKET_TABLES = (
    "id", "markets", "markets_by_id", "symbols", "ids", "currencies", "currencies_by_id",
    "baseCurrencies", "quoteCurrencies", "codes",
)  # fmt: skip


class SharedThrottle:
    """ccxt's request spacing for a whole pool: a request of ``cost`` starts no sooner than
    ``rate_limit_ms x cost`` after the previous request's start (ccxt's own rule for one
    instance), whichever instance sends it. Thread-safe; a caller sleeps outside the lock."""

    def __init__(self, rate_limit_ms: float):
        self.rate_limit_ms = float(rate_limit_ms)
        self._lock = threading.Lock()
        self._last_start = float("-inf")

    def __call__(self, cost: float | None = None) -> None:
        spacing = self.rate_limit_ms * (1.0 if cost is None else float(cost)) / 1000.0
        with self._lock:
            now = time.monotonic()
            start = max(now, self._last_start + spacing)
            self._last_start = start
        if start > now:
            time.sleep(start - now)


class ExchangePool:
    """Up to ``size`` instances made by ``make`` (on demand; idle ones are reused). A caller
    that finds all of them busy waits up to ``wait_s`` for one, then fails with
    :class:`ExchangeUnavailableError` (every instance is then stuck on a slow exchange)."""

    def __init__(self, name: str, make: Callable[[], ccxt.Exchange], *, size: int, wait_s: float):
        if size < 1:
            raise ValueError(f"pool size must be >= 1, got {size}")
        self.name = name
        self.size = size
        self.wait_s = wait_s
        self._make = make
        self._cv = threading.Condition()
        self._idle: list[ccxt.Exchange] = []
        self._made = 0
        self._throttle: SharedThrottle | None = None
        #: The shared market tables (a snapshot of the instance that loaded them), their
        #: generation and when they were loaded.
        self._markets: SimpleNamespace | None = None
        self._generation = 0
        self._loaded_at: float | None = None
        self._given: dict[int, int] = {}  # id(instance) -> generation of the markets it holds
        self.first = self._new()  # made now: the caller configures and inspects it
        self._idle.append(self.first)

    # --- leasing ------------------------------------------------------------------------------
    @contextmanager
    def lease(self) -> Iterator[ccxt.Exchange]:
        """An instance for this thread alone, with the current markets, until the block ends."""
        exchange = self._acquire()
        try:
            self._refresh_markets(exchange)
            yield exchange
        finally:
            with self._cv:
                self._idle.append(exchange)
                self._cv.notify()

    def _acquire(self) -> ccxt.Exchange:
        deadline = time.monotonic() + self.wait_s
        with self._cv:
            while not self._idle:
                if self._made < self.size:
                    self._made += 1
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ExchangeUnavailableError(
                        f"{self.name}: all {self.size} connections are waiting on the exchange; "
                        f"none was free within {self.wait_s:.1f} s"
                    )
                self._cv.wait(left)
            else:
                return self._idle.pop()
        try:
            return self._new(counted=True)
        except BaseException:
            with self._cv:
                self._made -= 1
                self._cv.notify()
            raise

    def _new(self, *, counted: bool = False) -> ccxt.Exchange:
        exchange = self._make()
        if not counted:
            self._made += 1
        if self._throttle is None:
            self._throttle = SharedThrottle(exchange.rateLimit)
        exchange.throttle = self._throttle  # every request of every instance spaced as one
        return exchange

    # --- markets ------------------------------------------------------------------------------
    def install_markets(self, loaded: ccxt.Exchange) -> None:
        """Share the markets ``loaded`` (a leased instance that just loaded them) with the pool:
        a snapshot of its tables, given to each other instance when it is next leased."""
        helpers = loaded.options.get("marketHelperProps") or []
        snapshot = SimpleNamespace(
            **{name: getattr(loaded, name) for name in _MARKET_TABLES},
            options={"marketHelperProps": helpers, **{key: loaded.options.get(key) for key in helpers}},
        )
        with self._cv:
            self._markets = snapshot
            self._generation += 1
            self._given[id(loaded)] = self._generation
            self._loaded_at = time.time()

    @property
    def markets(self) -> Mapping[str, Mapping[str, Any]] | None:
        """The shared market table (None until loaded)."""
        return None if self._markets is None else self._markets.markets

    @property
    def loaded_at(self) -> float | None:
        """When the markets were last loaded (epoch seconds), or None."""
        return self._loaded_at

    def _refresh_markets(self, exchange: ccxt.Exchange) -> None:
        with self._cv:
            markets, generation = self._markets, self._generation
        if markets is not None and self._given.get(id(exchange)) != generation:
            exchange.set_markets_from_exchange(markets)
            self._given[id(exchange)] = generation

    def close(self) -> None:
        with self._cv:
            idle, self._idle = self._idle, []
        for exchange in idle:
            exchange.close()
