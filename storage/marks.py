"""Marks: the last market price the gateway trusted for each (broker, symbol).

They live in SQLite rather than in a worker's memory so that every gunicorn worker values the
same positions at the same prices: equity, ``/api/positions`` and the risk limits that read
equity (drawdown, daily loss) are then one truth, whichever worker answers.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from storage.database import Db, query_one, writing

__all__ = ["Mark", "get_mark", "marked_positions_value", "set_mark"]


@dataclass(frozen=True)
class Mark:
    symbol: str
    price: float
    source: str  # where the price came from: "candles 1h", "ticker", ...
    at: float  # epoch seconds when it was recorded


def set_mark(db: Db, broker: str, symbol: str, price: float, source: str, at: float | None = None) -> None:
    """Record a trusted price (inside the caller's transaction). A newer mark replaces an older
    one only: two workers committing out of order never move the mark back in time."""
    with writing(db) as conn:
        if not (math.isfinite(price) and price > 0):
            raise ValueError(f"mark for {symbol}: {price!r} is not a positive finite price")
        conn.execute(
            "INSERT INTO marks (broker, symbol, price, source, at) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (broker, symbol) DO UPDATE SET price = excluded.price,"
            " source = excluded.source, at = excluded.at WHERE excluded.at >= marks.at",
            (broker, symbol, price, source, at if at is not None else time.time()),
        )


def get_mark(db: Db, broker: str, symbol: str) -> Mark | None:
    row = query_one(
        db, "SELECT symbol, price, source, at FROM marks WHERE broker = ? AND symbol = ?", (broker, symbol)
    )
    if row is None:
        return None
    return Mark(symbol=row["symbol"], price=float(row["price"]), source=row["source"], at=float(row["at"]))


def marked_positions_value(db: Db, broker: str) -> float:
    """Sum of every open position times its mark (its average entry price when it has none):
    one statement, so the value is read from one consistent state of the file."""
    row = query_one(
        db,
        "SELECT COALESCE(SUM(p.amount * COALESCE(m.price, p.avg_price, 0)), 0) FROM positions p"
        " LEFT JOIN marks m ON m.broker = p.broker AND m.symbol = p.symbol"
        " WHERE p.broker = ? AND p.amount != 0",
        (broker,),
    )
    return 0.0 if row is None else float(row[0])
