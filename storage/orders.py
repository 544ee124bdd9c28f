"""Orders, positions and the cash ledger.

Accounting is the same for every broker: a fill moves the signed position and the cash ledger
(``cash -= signed amount * price + fee``), so equity is ``cash + sum(position * mark)`` for longs
and shorts alike. For the paper broker this ledger *is* the account; for an exchange it is the
gateway's own view of what it traded.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from storage.database import Db, Row, insert_id, query, query_one, reading, writing

__all__ = [
    "FLAT",
    "NON_TERMINAL",
    "Order",
    "Position",
    "adopt_position",
    "apply_fill",
    "book_fill",
    "charge",
    "close_order",
    "create_pending_order",
    "equity_marks",
    "following",
    "get_cash",
    "ledger_start",
    "list_orders",
    "list_positions",
    "newest_equity_at",
    "order_record",
    "pending_exposure",
    "pending_orders",
    "position_amount",
    "record_equity",
    "schedule_poll",
    "unsettled_orders",
    "update_order",
]

#: The one "flat" threshold, in base units: a position, or a difference between two positions,
#: no bigger than this is nothing (the book is flat, the target is reached, no exit is left to
#: arm). It must stay below every market's amount step, or a real, tradable remainder would be
#: treated as nothing: the finest steps exchanges list are 1e-8 (a satoshi; Binance, Coinbase and
#: Kraken go no finer). It must also stay above what float arithmetic leaves when fills that
#: cancel out are added up (a few units in the 16th digit: 1e-10 on a million units), so a
#: position closed in several fills reads as flat. 1e-9 is both.
FLAT = 1e-9

#: Order states the exchange has not closed yet: the order lifecycle follows each until it is
#: ``filled``, ``canceled``, ``rejected``, ``failed`` (refused before it reached the exchange)
#: or ``not_placed`` (the exchange never saw it).
NON_TERMINAL = ("pending", "open", "partially_filled", "unknown")
_NON_TERMINAL_SQL = "('pending', 'open', 'partially_filled', 'unknown')"


@dataclass(frozen=True)
class Position:
    symbol: str
    amount: float
    avg_price: float | None
    realized_pnl: float
    opened_at: float | None
    stop_loss: float | None = None
    updated_at: float | None = None
    entries: int = 0  # fills that opened or added to it (the pyramiding limit counts them)


@dataclass(frozen=True)
class Order:
    """One order row, by column name. ``filled`` is the exchange's gross amount; ``booked`` the
    part of it already in the ledger (see the schema's version 7)."""

    id: int
    alert_id: int
    client_order_id: str
    broker: str
    symbol: str
    side: str
    amount: float
    price: float | None
    status: str
    filled: float
    average: float | None
    exchange_order_id: str | None
    reason: str | None
    error: str | None
    created_at: float
    booked: float = 0.0
    booked_cost: float = 0.0
    booked_net: float = 0.0
    booked_fees: dict[str, float] = field(default_factory=dict)
    fees: dict[str, float] = field(default_factory=dict)
    fee_value: float | None = None
    fee_note: str | None = None
    exits: str | None = None
    polls: int = 0
    next_poll_at: float | None = None

    @property
    def is_open(self) -> bool:
        """Whether the exchange may still fill (more of) it."""
        return self.status in NON_TERMINAL


def _order(r: Row) -> Order:
    return Order(
        id=r["id"], alert_id=r["alert_id"], client_order_id=r["client_order_id"], broker=r["broker"],
        symbol=r["symbol"], side=r["side"], amount=r["amount"], price=r["price"], status=r["status"],
        filled=r["filled"], average=r["average"], exchange_order_id=r["exchange_order_id"],
        reason=r["reason"], error=r["error"], created_at=r["created_at"], booked=r["booked"],
        booked_cost=r["booked_cost"], booked_net=r["booked_net"], booked_fees=_amounts(r["booked_fees"]),
        fees=_amounts(r["fees"]), fee_value=r["fee_value"], fee_note=r["fee_note"], exits=r["exits"],
        polls=r["polls"], next_poll_at=r["next_poll_at"],
    )  # fmt: skip


def _json(amounts: dict[str, float]) -> str | None:
    return json.dumps(amounts, sort_keys=True) if amounts else None


def _amounts(text: str | None) -> dict[str, float]:
    return {str(k): float(v) for k, v in json.loads(text).items()} if text else {}


def _position(r: Row) -> Position:
    """A ``positions`` row as its record, each field by its column's name."""
    return Position(
        symbol=r["symbol"], amount=r["amount"], avg_price=r["avg_price"], realized_pnl=r["realized_pnl"],
        opened_at=r["opened_at"], stop_loss=r["stop_loss"], updated_at=r["updated_at"], entries=r["entries"],
    )  # fmt: skip


def create_pending_order(
    db: Db,
    *,
    alert_id: int,
    client_order_id: str,
    broker: str,
    symbol: str,
    side: str,
    order_type: str,
    amount: float,
    price: float | None,
    reason: str | None = None,
    exits: str | None = None,
    next_poll_at: float | None = None,
) -> int:
    """Record the intent to place an order *before* it is sent (inside the caller's transaction).
    ``reason`` names what placed it when not the alert itself (an exit: ``stop``, ...); ``exits``
    is the entry's exit plan (JSON); ``next_poll_at`` when the lifecycle may first ask the
    exchange about it (None: the caller settles it in this transaction)."""
    with writing(db) as conn:
        now = time.time()
        return insert_id(
            conn,
            "INSERT INTO orders (alert_id, client_order_id, broker, symbol, side, order_type, amount,"
            " price, status, reason, exits, next_poll_at, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?) RETURNING id",
            (alert_id, client_order_id, broker, symbol, side, order_type, amount, price, reason, exits,
             next_poll_at, now, now),
        )  # fmt: skip


def order_record(db: Db, client_order_id: str) -> Order | None:
    """The order placed under ``client_order_id``, as the caller's transaction sees it."""
    row = query_one(db, "SELECT * FROM orders WHERE client_order_id = ?", (client_order_id,))
    return None if row is None else _order(row)


def book_fill(
    db: Db,
    client_order_id: str,
    *,
    status: str,
    filled: float,
    average: float | None,
    fees: dict[str, float],
    exchange_order_id: str | None,
    booked: float,
    booked_cost: float,
    booked_net: float,
    booked_fees: dict[str, float],
    fee_value: float | None,
    fee_note: str | None,
    next_poll_at: float | None,
) -> None:
    """What the exchange says of the order now, and how much of it the ledger holds (inside the
    transaction that booked the increment). ``fee``/``fee_currency`` keep the fee when it was
    charged in one currency (0 and NULL when in several: see ``fees``)."""
    single = next(iter(fees.items())) if len(fees) == 1 else (None, 0.0)
    with writing(db) as conn:
        conn.execute(
            "UPDATE orders SET status = ?, filled = ?, average = ?, fee = ?, fee_currency = ?, fees = ?,"
            " exchange_order_id = COALESCE(?, exchange_order_id), booked = ?, booked_cost = ?,"
            " booked_net = ?, booked_fees = ?, fee_value = ?, fee_note = ?, next_poll_at = ?,"
            " polls = polls + 1, error = NULL, updated_at = ? WHERE client_order_id = ?",
            (status, filled, average, single[1], single[0], _json(fees), exchange_order_id, booked,
             booked_cost, booked_net, _json(booked_fees), fee_value, fee_note, next_poll_at, time.time(),
             client_order_id),
        )  # fmt: skip


def close_order(db: Db, client_order_id: str, status: str, error: str | None) -> None:
    """End the order as ``status`` (it will not be followed again), saying why."""
    with writing(db) as conn:
        conn.execute(
            "UPDATE orders SET status = ?, error = ?, next_poll_at = NULL, updated_at = ?"
            " WHERE client_order_id = ?",
            (status, error, time.time(), client_order_id),
        )


def schedule_poll(
    db: Db, client_order_id: str, at: float, *, status: str | None = None, error: str | None = None
) -> None:
    """Ask the exchange about the order again at ``at`` (one more poll counted); ``status`` and
    ``error`` when the answer changed what is known (``unknown`` after a lost answer)."""
    with writing(db) as conn:
        conn.execute(
            "UPDATE orders SET next_poll_at = ?, polls = polls + 1, status = COALESCE(?, status),"
            " error = COALESCE(?, error), updated_at = ? WHERE client_order_id = ?",
            (at, status, error, time.time(), client_order_id),
        )


def following(db: Db, now: float, *, limit: int = 200) -> list[Order]:
    """Orders not yet terminal whose next poll is due, the longest waiting first."""
    rows = query(
        db,
        "SELECT * FROM orders WHERE next_poll_at IS NOT NULL AND next_poll_at <= ?"
        f" AND status IN {_NON_TERMINAL_SQL} ORDER BY next_poll_at LIMIT ?",
        (now, limit),
    )
    return [_order(r) for r in rows]


def unsettled_orders(db: Db, broker: str, symbol: str | None = None) -> list[Order]:
    """The account's orders the exchange has not closed yet (of ``symbol``, when given)."""
    sql = f"SELECT * FROM orders WHERE broker = ? AND status IN {_NON_TERMINAL_SQL}"
    params: tuple[Any, ...] = (broker,)
    if symbol is not None:
        sql, params = sql + " AND symbol = ?", (broker, symbol)
    return [_order(r) for r in query(db, sql + " ORDER BY id", params)]


def update_order(
    db: Db,
    client_order_id: str,
    *,
    status: str,
    filled: float = 0.0,
    average: float | None = None,
    fee: float = 0.0,
    fee_currency: str | None = None,
    exchange_order_id: str | None = None,
    error: str | None = None,
) -> None:
    with writing(db) as conn:
        conn.execute(
            "UPDATE orders SET status = ?, filled = ?, average = ?, fee = ?, fee_currency = ?,"
            " exchange_order_id = ?, error = ?, updated_at = ? WHERE client_order_id = ?",
            (
                status,
                filled,
                average,
                fee,
                fee_currency,
                exchange_order_id,
                error,
                time.time(),
                client_order_id,
            ),
        )


def _position_row(db: Db, broker: str, symbol: str) -> Row | None:
    conn = reading(db)
    return conn.execute(
        "SELECT * FROM positions WHERE broker = ? AND symbol = ?", (broker, symbol)
    ).fetchone()


def apply_fill(
    db: Db,
    *,
    broker: str,
    symbol: str,
    side: str,
    filled: float,
    price: float,
    fee: float,
    quote_currency: str,
    starting_cash: float,
    stop_loss: float | None = None,
    at: float | None = None,
) -> Position:
    """Move the position and the cash ledger by one fill (inside the caller's transaction).

    ``stop_loss`` is the protective stop of exposure this fill adds; the portfolio-risk limit
    counts ``|avg price - stop| * size`` of every open position. Reducing fills keep the stop.
    ``at`` is the fill's time (the engine's clock; a replay's is simulated).
    """
    with writing(db) as conn:
        now = time.time() if at is None else at
        signed = filled if side == "buy" else -filled
        row = _position_row(conn, broker, symbol)
        old = row["amount"] if row else 0.0
        avg = row["avg_price"] if row else None
        realized = row["realized_pnl"] if row else 0.0
        opened_at = row["opened_at"] if row else None
        stop = row["stop_loss"] if row else None
        entries = row["entries"] if row and old != 0 else 0
        new = old + signed
        if old == 0 or (old > 0) == (signed > 0):
            avg = (abs(old) * (avg or 0.0) + abs(signed) * price) / abs(new) if new else None
            opened_at = opened_at or now
            stop = stop_loss if stop_loss is not None else stop
            entries += 1
        else:
            closed = min(abs(old), abs(signed))
            realized += (price - (avg or price)) * closed * (1 if old > 0 else -1)
            if abs(new) <= FLAT:
                new, avg, opened_at, stop, entries = 0.0, None, None, None, 0
            elif (new > 0) != (old > 0):
                # Crossed through flat: the remainder opens at this price, with this fill's stop.
                avg, opened_at, stop, entries = price, now, stop_loss, 1
        realized -= fee
        conn.execute(
            "INSERT INTO positions (broker, symbol, amount, avg_price, realized_pnl, stop_loss, opened_at,"
            " updated_at, entries) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (broker, symbol) DO UPDATE"
            " SET amount = excluded.amount, avg_price = excluded.avg_price,"
            " realized_pnl = excluded.realized_pnl, stop_loss = excluded.stop_loss,"
            " opened_at = excluded.opened_at, updated_at = excluded.updated_at, entries = excluded.entries",
            (broker, symbol, new, avg, realized, stop, opened_at, now, entries),
        )
        cash_change = -signed * price - fee
        conn.execute(
            "INSERT INTO balances (broker, currency, total, updated_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (broker, currency) DO UPDATE SET total = balances.total + ?,"
            " updated_at = excluded.updated_at",
            (broker, quote_currency, starting_cash + cash_change, now, cash_change),
        )
        return Position(
            symbol=symbol, amount=new, avg_price=avg, realized_pnl=realized, opened_at=opened_at,
            stop_loss=stop, updated_at=now, entries=entries,
        )  # fmt: skip


def charge(
    db: Db,
    *,
    broker: str,
    symbol: str,
    fee: float,
    position_change: float,
    quote_currency: str,
    at: float | None = None,
) -> None:
    """A fee the exchange reported after the fill it belongs to was booked: ``fee`` (in quote)
    comes off the realised P&L and the cash ledger, and ``position_change`` (a fee taken in the
    base coin) off the position."""
    with writing(db) as conn:
        now = time.time() if at is None else at
        conn.execute(
            "UPDATE positions SET amount = amount + ?, realized_pnl = realized_pnl - ?, updated_at = ?"
            " WHERE broker = ? AND symbol = ?",
            (position_change, fee, now, broker, symbol),
        )
        conn.execute(
            "UPDATE balances SET total = total - ?, updated_at = ? WHERE broker = ? AND currency = ?",
            (fee, now, broker, quote_currency),
        )


def adopt_position(db: Db, *, broker: str, symbol: str, amount: float, price: float | None) -> None:
    """Set the booked position to ``amount`` (the exchange's view, adopted by the operator): its
    entry price is kept while it stays on the same side, else ``price``; flat clears it."""
    with writing(db) as conn:
        now = time.time()
        row = _position_row(conn, broker, symbol)
        old = float(row["amount"]) if row else 0.0
        same_side = old * amount > 0
        avg = (row["avg_price"] if row and same_side else price) if amount else None
        opened = (row["opened_at"] if row and same_side else now) if amount else None
        conn.execute(
            "INSERT INTO positions (broker, symbol, amount, avg_price, realized_pnl, opened_at,"
            " updated_at, entries) VALUES (?, ?, ?, ?, 0, ?, ?, ?) ON CONFLICT (broker, symbol)"
            " DO UPDATE SET amount = excluded.amount, avg_price = excluded.avg_price,"
            " opened_at = excluded.opened_at, updated_at = excluded.updated_at, entries = excluded.entries",
            (broker, symbol, amount, avg, opened, now, 1 if amount else 0),
        )


def position_amount(db: Db, broker: str, symbol: str) -> float:
    """The signed position of ``symbol`` as the caller's transaction sees it (0 when none)."""
    row = _position_row(db, broker, symbol)
    return 0.0 if row is None else float(row["amount"])


def get_cash(db: Db, broker: str, currency: str, default: float) -> float:
    """The ledger's cash in ``currency``; ``default`` before the first fill."""
    row = (
        reading(db)
        .execute("SELECT total FROM balances WHERE broker = ? AND currency = ?", (broker, currency))
        .fetchone()
    )
    return default if row is None else float(row[0])


def ledger_start(db: Db, broker: str, currency: str) -> float | None:
    """The cash the book started with (its cash now minus every fill's cash change), or None
    when the book has no ledger yet. Derived rather than stored, so existing files need no
    migration: each fill moved cash by ``-signed * average - fee`` (fees are in ``currency``)."""
    row = query_one(
        db,
        "SELECT b.total + COALESCE((SELECT SUM(CASE o.side WHEN 'buy' THEN o.filled ELSE -o.filled END"
        " * o.average + o.fee) FROM orders o WHERE o.broker = b.broker AND o.filled > 0), 0) AS start"
        " FROM balances b WHERE b.broker = ? AND b.currency = ?",
        (broker, currency),
    )
    return None if row is None else float(row["start"])


def list_positions(db: Db, broker: str, *, open_only: bool = True) -> list[Position]:
    sql = "SELECT * FROM positions WHERE broker = ?" + (" AND amount != 0" if open_only else "")
    return [_position(r) for r in query(db, sql + " ORDER BY symbol", (broker,))]


def list_orders(db: Db, *, limit: int = 50, alert_id: int | None = None) -> list[dict[str, Any]]:
    if alert_id is not None:
        rows = query(db, "SELECT * FROM orders WHERE alert_id = ? ORDER BY id", (alert_id,))
    else:
        rows = query(db, "SELECT * FROM orders ORDER BY id DESC LIMIT ?", (limit,))
    return [dict(r) for r in rows]


def pending_exposure(db: Db, broker: str, symbol: str) -> float:
    """Signed amount of the symbol's orders the exchange may still fill and the ledger does not
    hold yet: each order not terminal counts its amount less what of it is booked. An order that
    never reached the exchange (``not_placed``) or is done no longer counts."""
    conn = reading(db)
    row = conn.execute(
        "SELECT COALESCE(SUM(CASE WHEN amount <= booked THEN 0 WHEN side = 'buy' THEN amount - booked"
        " ELSE booked - amount END), 0)"
        f" FROM orders WHERE broker = ? AND symbol = ? AND status IN {_NON_TERMINAL_SQL}",
        (broker, symbol),
    ).fetchone()
    return float(row[0])


def pending_orders(db: Db, *, updated_before: float | None = None) -> list[Order]:
    """Every order the exchange has not closed yet, of every account (start-up recovery asks
    the exchange about each: no worker is running, so a ``pending`` one is an orphan); with
    ``updated_before``, a ``pending`` one only when untouched since then (on a store hosts
    share, a younger one may be in flight on another host)."""
    cutoff = float("inf") if updated_before is None else updated_before
    sql = f"SELECT * FROM orders WHERE status IN {_NON_TERMINAL_SQL}"
    sql += " AND (status <> 'pending' OR updated_at < ?)"
    return [_order(r) for r in query(db, sql + " ORDER BY id", (cutoff,))]


def record_equity(db: Db, broker: str, equity: float, at: float | None = None) -> None:
    """Note the account value (inside the caller's transaction); drawdown limits read these."""
    with writing(db) as conn:
        conn.execute(
            "INSERT INTO equity_snapshots (broker, at, equity) VALUES (?, ?, ?)",
            (broker, at or time.time(), equity),
        )


def newest_equity_at(db: Db, broker: str) -> float | None:
    """When the newest equity snapshot of ``broker`` was taken (an index look-up)."""
    conn = reading(db)
    row = conn.execute(
        "SELECT at FROM equity_snapshots WHERE broker = ? ORDER BY at DESC LIMIT 1", (broker,)
    ).fetchone()
    return None if row is None else float(row[0])


def equity_marks(db: Db, broker: str, current: float, *, now: float | None = None) -> tuple[float, float]:
    """(peak equity ever, equity at the start of ``now``'s UTC day), counting ``current`` in both.

    Both are index look-ups (``ORDER BY ... LIMIT 1``), not scans: the table grows by a row per
    order, and this runs for every order.
    """
    day_start = (time.time() if now is None else now) // 86_400 * 86_400
    peak = query_one(
        db, "SELECT equity FROM equity_snapshots WHERE broker = ? ORDER BY equity DESC LIMIT 1", (broker,)
    )
    first = query_one(
        db,
        "SELECT equity FROM equity_snapshots WHERE broker = ? AND at >= ? ORDER BY at LIMIT 1",
        (broker, day_start),
    )
    return (max(current, float(peak[0])) if peak else current), (float(first[0]) if first else current)
