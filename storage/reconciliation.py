"""What the reconciler knows: the coins an account holds besides the gateway's positions, and
the last comparison of each booked position with the exchange.

``holdings.outside`` is, per account and coin, what the exchange holds that is not the gateway's
position: coins held before the gateway traded, and dust that fee rounding leaves behind (a buy
whose fee was taken in the coin books what can be sold again, rounded down to the market's
step). The reconciler expects the exchange to hold ``outside + booked``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from storage.database import Db, Row, query, query_one, writing

__all__ = ["BookCheck", "add_outside", "book_checks", "outside", "record_check", "set_outside"]


@dataclass(frozen=True)
class BookCheck:
    """The reconciler's last comparison of one booked position with the exchange."""

    broker: str
    symbol: str
    kind: str  # "spot" (a coin balance) or "perpetual" (a position)
    booked: float
    exchange: float
    outside: float
    difference: float  # exchange - (outside + booked)
    step: float
    stray_orders: int  # open orders on the exchange under this gateway's ids that its book does not follow
    status: str  # "ok", "off" (beyond one step, confirmed), "checking" (off once: confirmed next pass)
    misses: int  # consecutive passes it was off
    detail: str | None
    checked_at: float
    off_since: float | None


def outside(db: Db, broker: str, currency: str) -> float | None:
    """What the account holds of ``currency`` besides the gateway's positions (None: unknown yet)."""
    row = query_one(db, "SELECT outside FROM holdings WHERE broker = ? AND currency = ?", (broker, currency))
    return None if row is None else float(row["outside"])


def set_outside(db: Db, broker: str, currency: str, amount: float) -> None:
    with writing(db) as conn:
        conn.execute(
            "INSERT INTO holdings (broker, currency, outside, updated_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (broker, currency) DO UPDATE SET outside = excluded.outside,"
            " updated_at = excluded.updated_at",
            (broker, currency, amount, time.time()),
        )


def add_outside(db: Db, broker: str, currency: str, amount: float) -> None:
    """Dust the gateway left in the account (inside the booking's transaction). Before the
    reconciler first saw the coin there is no row to add to: its first look counts it."""
    with writing(db) as conn:
        conn.execute(
            "UPDATE holdings SET outside = outside + ?, updated_at = ? WHERE broker = ? AND currency = ?",
            (amount, time.time(), broker, currency),
        )


def record_check(db: Db, check: BookCheck) -> None:
    with writing(db) as conn:
        conn.execute(
            "INSERT INTO book_checks (broker, symbol, kind, booked, exchange, outside, difference, step,"
            " stray_orders, status, misses, detail, checked_at, off_since)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (broker, symbol) DO UPDATE SET"
            " kind = excluded.kind, booked = excluded.booked, exchange = excluded.exchange,"
            " outside = excluded.outside, difference = excluded.difference, step = excluded.step,"
            " stray_orders = excluded.stray_orders, status = excluded.status, misses = excluded.misses,"
            " detail = excluded.detail, checked_at = excluded.checked_at, off_since = excluded.off_since",
            (check.broker, check.symbol, check.kind, check.booked, check.exchange, check.outside,
             check.difference, check.step, check.stray_orders, check.status, check.misses, check.detail,
             check.checked_at, check.off_since),
        )  # fmt: skip


def book_checks(db: Db, broker: str | None = None) -> list[BookCheck]:
    """The last comparison of every booked position (of ``broker``, when given)."""
    sql, params = "SELECT * FROM book_checks", ()
    if broker is not None:
        sql, params = sql + " WHERE broker = ?", (broker,)  # type: ignore[assignment]
    return [_check(r) for r in query(db, sql + " ORDER BY broker, symbol", params)]


def _check(r: Row) -> BookCheck:
    return BookCheck(
        broker=r["broker"], symbol=r["symbol"], kind=r["kind"], booked=r["booked"], exchange=r["exchange"],
        outside=r["outside"], difference=r["difference"], step=r["step"], stray_orders=r["stray_orders"],
        status=r["status"], misses=r["misses"], detail=r["detail"], checked_at=r["checked_at"],
        off_since=r["off_since"],
    )  # fmt: skip
