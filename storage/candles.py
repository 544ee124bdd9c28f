"""The local candle store: OHLCV rows keyed by (symbol, timeframe, open time in ms)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import pandas as pd

from storage.database import Db, query, query_one, writing

__all__ = [
    "SYNTHETIC",
    "bars_since",
    "candle_source",
    "candle_sources",
    "close_at",
    "delete_synthetic",
    "has_real_candles",
    "is_synthetic_market",
    "latest_candle_ms",
    "load_candles",
    "newest_candle",
    "newest_synthetic_close",
    "recent_bars",
    "upsert_candles",
]

_COLUMNS = ["ts_ms", "open", "high", "low", "close", "volume"]

#: The ``source`` of generated candles (``tvgw train --synthetic``, the offline quickstart).
SYNTHETIC = "synthetic"


def upsert_candles(db: Db, symbol: str, timeframe: str, rows: Iterable[Sequence[float]], source: str) -> int:
    """Insert or replace ``[ms, open, high, low, close, volume]`` rows; returns how many. With a
    connection, inside the caller's transaction (an alert's bar commits with the alert)."""
    data = [
        (
            symbol,
            timeframe,
            int(r[0]),
            float(r[1]),
            float(r[2]),
            float(r[3]),
            float(r[4]),
            float(r[5]),
            source,
        )
        for r in rows
    ]
    with writing(db) as conn:
        conn.executemany(
            "INSERT INTO candles (symbol, timeframe, ts_ms, open, high, low, close, volume, source)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (symbol, timeframe, ts_ms) DO UPDATE SET"
            " open = excluded.open, high = excluded.high, low = excluded.low, close = excluded.close,"
            " volume = excluded.volume, source = excluded.source",
            data,
        )
    return len(data)


def load_candles(
    db: Db,
    symbol: str,
    timeframe: str,
    *,
    limit: int | None = None,
    until_ms: int | None = None,
    since_ms: int | None = None,
) -> pd.DataFrame:
    """Candles ascending, as a DataFrame indexed by UTC open time with open..volume columns.

    ``limit`` keeps the newest ``limit`` rows at or before ``until_ms``.
    """
    clauses = ["symbol = ?", "timeframe = ?"]
    params: list[object] = [symbol, timeframe]
    if until_ms is not None:
        clauses.append("ts_ms <= ?")
        params.append(int(until_ms))
    if since_ms is not None:
        clauses.append("ts_ms >= ?")
        params.append(int(since_ms))
    sql = f"SELECT {', '.join(_COLUMNS)} FROM candles WHERE {' AND '.join(clauses)} ORDER BY ts_ms DESC"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(int(limit))
    rows = query(db, sql, params)
    frame = pd.DataFrame([tuple(r) for r in reversed(rows)], columns=_COLUMNS)
    frame.index = pd.to_datetime(frame.pop("ts_ms"), unit="ms", utc=True)
    frame.index.name = "time"
    return frame.astype(float)


def latest_candle_ms(db: Db, symbol: str, timeframe: str) -> int | None:
    row = query_one(
        db, "SELECT MAX(ts_ms) FROM candles WHERE symbol = ? AND timeframe = ?", (symbol, timeframe)
    )
    return None if row is None or row[0] is None else int(row[0])


def newest_candle(db: Db, symbol: str, timeframe: str) -> tuple[float, ...] | None:
    """The newest stored row ``(ms, open, high, low, close, volume)``: one index seek. A window
    cached in memory compares it with its own last row to see a bar replaced in place."""
    row = query_one(
        db,
        f"SELECT {', '.join(_COLUMNS)} FROM candles WHERE symbol = ? AND timeframe = ?"
        " ORDER BY ts_ms DESC LIMIT 1",
        (symbol, timeframe),
    )
    return None if row is None else tuple(float(v) for v in row)


def candle_sources(db: Db, symbol: str, timeframe: str) -> set[str]:
    """Where the stored candles of a market came from (``synthetic``, ``ccxt:binance``, ...)."""
    rows = query(
        db, "SELECT DISTINCT source FROM candles WHERE symbol = ? AND timeframe = ?", (symbol, timeframe)
    )
    return {str(r[0]) for r in rows}


def close_at(db: Db, symbol: str, timeframe: str, opened_ms: int) -> float | None:
    """The close of the candle that opened at ``opened_ms``, or None when the store lacks it."""
    row = query_one(
        db,
        "SELECT close FROM candles WHERE symbol = ? AND timeframe = ? AND ts_ms = ?",
        (symbol, timeframe, opened_ms),
    )
    return None if row is None else float(row[0])


def is_synthetic_market(db: Db, symbol: str) -> bool:
    """Whether ``symbol`` has synthetic candles in the store (any timeframe): its prices are then
    generated, not a market's, and no real bar may be mixed in (one seek, on
    ``candles_symbol_source``)."""
    row = query_one(db, "SELECT 1 FROM candles WHERE symbol = ? AND source = ? LIMIT 1", (symbol, SYNTHETIC))
    return row is not None


def has_real_candles(db: Db, symbol: str) -> bool:
    """Whether ``symbol`` has any candle that is not synthetic (any timeframe)."""
    row = query_one(db, "SELECT 1 FROM candles WHERE symbol = ? AND source <> ? LIMIT 1", (symbol, SYNTHETIC))
    return row is not None


def delete_synthetic(db: Db, symbol: str) -> int:
    """Remove ``symbol``'s synthetic candles (every timeframe) before real ones are written, so
    a market's history is never half generated; returns how many rows went."""
    with writing(db) as conn:
        cursor = conn.execute("DELETE FROM candles WHERE symbol = ? AND source = ?", (symbol, SYNTHETIC))
        return int(cursor.rowcount)


def newest_synthetic_close(db: Db, symbol: str, timeframe: str) -> float | None:
    """The close of the newest synthetic candle of a market, or None: a synthetic history that
    is extended keeps the level it was anchored at."""
    row = query_one(
        db,
        "SELECT close FROM candles WHERE symbol = ? AND timeframe = ? AND source = ?"
        " ORDER BY ts_ms DESC LIMIT 1",
        (symbol, timeframe, SYNTHETIC),
    )
    return None if row is None else float(row[0])


def candle_source(db: Db, symbol: str, timeframe: str, opened_ms: int) -> str | None:
    """Where the candle that opened at ``opened_ms`` came from (``alert``, ``ccxt:binance``, ...)."""
    row = query_one(
        db,
        "SELECT source FROM candles WHERE symbol = ? AND timeframe = ? AND ts_ms = ?",
        (symbol, timeframe, opened_ms),
    )
    return None if row is None else str(row[0])


def recent_bars(db: Db, symbol: str, timeframe: str, limit: int) -> list[tuple[float, ...]]:
    """The newest ``limit`` stored bars ``(ms, open, high, low, close)``, ascending (for an ATR)."""
    rows = query(
        db,
        "SELECT ts_ms, open, high, low, close FROM candles WHERE symbol = ? AND timeframe = ?"
        " ORDER BY ts_ms DESC LIMIT ?",
        (symbol, timeframe, limit),
    )
    return [tuple(float(r[k]) for k in ("ts_ms", "open", "high", "low", "close")) for r in reversed(rows)]


def bars_since(
    db: Db, symbol: str, timeframe: str, since_ms: int, *, after_ms: int
) -> list[tuple[int, float, float, float]]:
    """Stored bars ``(ms, open, high, low)`` opening at or after ``since_ms`` (the last checked
    bar is read again: it may have grown) and strictly after ``after_ms`` (an entry's bar: the
    exits armed in it watch only the bars after it)."""
    rows = query(
        db,
        "SELECT ts_ms, open, high, low FROM candles WHERE symbol = ? AND timeframe = ?"
        " AND ts_ms >= ? AND ts_ms > ? ORDER BY ts_ms",
        (symbol, timeframe, since_ms, after_ms),
    )
    return [(int(r["ts_ms"]), float(r["open"]), float(r["high"]), float(r["low"])) for r in rows]
