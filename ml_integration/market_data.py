"""Fetching OHLCV history through ccxt (public endpoints only) into the local candle store.

``fetch_ohlcv_history`` pages forward from ``since`` with the exchange's own ``limit`` until it
reaches ``until`` or the exchange has nothing newer. Outages are not papered over: bars the
exchange does not return are simply absent, and :func:`candles.find_gaps` reports them later.
Every ccxt error becomes a :class:`MarketDataError` naming the exchange, symbol and time.
"""

from __future__ import annotations

import errno
import logging
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from ml_integration.candles import timeframe_seconds
from ml_integration.exceptions import MLError

__all__ = [
    "MarketDataError",
    "OhlcvSource",
    "create_exchange",
    "fetch_ohlcv_history",
    "fill_candle_store",
    "format_ms",
    "network_cause",
]


log = logging.getLogger(__name__)


class MarketDataError(MLError):
    """The exchange refused or failed a history request. Check the symbol and timeframe, the
    network, or try again later (rate limits and maintenance are temporary)."""


class OhlcvSource(Protocol):
    """The part of a ccxt exchange this module uses."""

    id: str

    def fetch_ohlcv(
        self, symbol: str, timeframe: str = ..., since: int | None = ..., limit: int | None = ...
    ) -> list[list[float]]: ...


def create_exchange(
    exchange_id: str = "binance", *, timeout_ms: int = 10_000, api_url: str | None = None
) -> Any:
    """A ccxt exchange for public market data (no credentials), rate limit on.

    ``api_url`` replaces the public REST base URL (a local fake exchange in tests, a proxy).
    """
    import ccxt

    if exchange_id not in ccxt.exchanges:
        raise MarketDataError(
            f"unknown exchange {exchange_id!r} (ccxt knows {len(ccxt.exchanges)} exchanges)"
        )
    exchange = getattr(ccxt, exchange_id)({"enableRateLimit": True, "timeout": timeout_ms})
    if api_url:
        urls = exchange.urls.get("api")
        if isinstance(urls, dict):
            exchange.urls["api"] = {key: api_url.rstrip("/") + _path_of(value) for key, value in urls.items()}
        else:
            exchange.urls["api"] = api_url
    return exchange


def _path_of(url: Any) -> str:
    from urllib.parse import urlparse

    return urlparse(str(url)).path if isinstance(url, str) else ""


def format_ms(ms: int) -> str:
    """An exchange timestamp (epoch milliseconds) as a date people read: ``2024-05-01 12:00 UTC``."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


def network_cause(exc: BaseException) -> str | None:
    """What went wrong on the network, in words, from the chain of causes under a ccxt error
    (ccxt wraps requests, which wraps urllib3, which wraps the socket error that says it)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, socket.gaierror):
            return f"DNS lookup failed ({current.strerror or current}): no network, or no DNS server"
        if isinstance(current, ConnectionRefusedError):
            return "connection refused: nothing listens at that address (or a firewall rejects it)"
        if isinstance(current, TimeoutError):
            return "timed out: the network or the exchange is slow or unreachable"
        if isinstance(current, OSError) and current.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
            return "no network: the host is unreachable"
        current = current.__cause__ or current.__context__
    return None


def _step_ms(timeframe: str) -> int:
    return timeframe_seconds(timeframe) * 1000


def fetch_ohlcv_history(
    exchange: OhlcvSource,
    symbol: str,
    timeframe: str,
    since_ms: int,
    *,
    until_ms: int | None = None,
    limit: int = 1000,
    on_batch: Callable[[int, int], None] | None = None,
) -> list[list[float]]:
    """All candles with open time in [since_ms, until_ms], ascending, de-duplicated.

    ``on_batch(rows_so_far, last_ms)`` is called after each page (for progress bars).
    """
    import ccxt

    step_ms = timeframe_seconds(timeframe) * 1000
    end = until_ms if until_ms is not None else int(time.time() * 1000)
    rows: dict[int, list[float]] = {}
    cursor = since_ms
    while cursor <= end:
        try:
            batch = exchange.fetch_ohlcv(symbol, timeframe, since=cursor, limit=limit)
        except ccxt.BaseError as exc:
            cause = network_cause(exc)
            detail = f"{cause} ({type(exc).__name__})" if cause else f"{type(exc).__name__}: {exc}"
            raise MarketDataError(
                f"{exchange.id}: fetching {symbol} {timeframe} candles since {format_ms(cursor)} "
                f"failed: {detail}"
            ) from exc
        fresh = [r for r in batch if cursor <= int(r[0]) <= end]
        if not fresh:
            break
        for row in fresh:
            rows[int(row[0])] = [float(v) for v in row[:6]]
        last = max(int(r[0]) for r in fresh)
        if on_batch is not None:
            on_batch(len(rows), last)
        cursor = last + step_ms
    return [rows[k] for k in sorted(rows)]


def fill_candle_store(
    storage: Any,
    exchange: OhlcvSource,
    symbol: str,
    timeframe: str,
    *,
    days: float,
    now_ms: int | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> int:
    """Fetch what the store is missing of the last ``days`` days and upsert it; returns the
    number of rows written. When the store already covers the start of the period, only bars
    from the newest stored one on are fetched (that bar again: it may have been stored while
    still open).

    A market whose stored candles are synthetic (the offline quickstart's) is fetched whole, and
    its synthetic candles are removed once real ones arrived: a history is never half generated.
    Positions opened on the paper book at synthetic prices are then marked at real ones (the
    warning says so); a fetch that fails leaves the synthetic history as it was."""
    from storage.candles import (
        delete_synthetic,
        is_synthetic_market,
        latest_candle_ms,
        load_candles,
        upsert_candles,
    )

    end = now_ms if now_ms is not None else int(time.time() * 1000)
    since = end - int(days * 86_400_000)
    synthetic = is_synthetic_market(storage, symbol)
    newest = None if synthetic else latest_candle_ms(storage, symbol, timeframe)
    if newest is not None and newest >= since:
        stored = load_candles(
            storage, symbol, timeframe, since_ms=since, until_ms=since + 2 * _step_ms(timeframe)
        )
        if len(stored):
            since = newest
    rows = fetch_ohlcv_history(exchange, symbol, timeframe, since, until_ms=end, on_batch=on_batch)
    if synthetic and rows:
        removed = delete_synthetic(storage, symbol)
        log.warning(
            "%s: replaced %d SYNTHETIC candles with real ones from %s; paper positions opened at "
            "synthetic prices are now marked at real prices (start a fresh TVGW_DATABASE for a clean book)",
            symbol, removed, exchange.id,
        )  # fmt: skip
    return upsert_candles(storage, symbol, timeframe, rows, source=f"ccxt:{exchange.id}")
