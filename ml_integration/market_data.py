"""Fetching OHLCV history through ccxt (public endpoints only) into the local candle store.

``fetch_ohlcv_history`` pages forward from ``since`` with the exchange's own ``limit`` until it
reaches ``until`` or the exchange has nothing newer. Outages are not papered over: bars the
exchange does not return are simply absent, and :func:`candles.find_gaps` reports them later.
Every ccxt error becomes a :class:`MarketDataError` naming the exchange, symbol and time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from ml_integration.candles import timeframe_seconds
from ml_integration.exceptions import MLError

__all__ = ["MarketDataError", "OhlcvSource", "create_exchange", "fetch_ohlcv_history", "fill_candle_store"]


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
            raise MarketDataError(
                f"{exchange.id}: fetching {symbol} {timeframe} candles since {cursor} ms failed: {exc}"
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
    still open)."""
    from storage.candles import latest_candle_ms, load_candles, upsert_candles

    end = now_ms if now_ms is not None else int(time.time() * 1000)
    since = end - int(days * 86_400_000)
    newest = latest_candle_ms(storage, symbol, timeframe)
    if newest is not None and newest >= since:
        stored = load_candles(
            storage, symbol, timeframe, since_ms=since, until_ms=since + 2 * _step_ms(timeframe)
        )
        if len(stored):
            since = newest
    rows = fetch_ohlcv_history(exchange, symbol, timeframe, since, until_ms=end, on_batch=on_batch)
    return upsert_candles(storage, symbol, timeframe, rows, source=f"ccxt:{exchange.id}")
