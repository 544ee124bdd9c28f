"""Armed protective exits (table ``exits``, schema versions 5 and 6).

An exit belongs to the entry order that armed it (its alert) and closes that position when a
later bar crosses its trigger. Every write runs inside the caller's write transaction, so the
claim in :func:`claim_exit` and the exit's order commit together: one fill across workers.

An exit held on the exchange also mirrors its resting order there (version 6): placing it is
claimed first (:func:`begin_placement`, a guarded UPDATE), so two workers never place it twice,
and a placement whose answer was lost stays ``placing`` until its client id is looked up.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields

from storage.database import Db, Row, insert_id, reading, writing

__all__ = [
    "ArmedExit",
    "arm_exit",
    "begin_firing",
    "begin_placement",
    "cancel_exits",
    "claim_exit",
    "end_firing",
    "exchange_exits",
    "exit_for_order",
    "move_trigger",
    "open_exit_symbols",
    "open_exits",
    "resize_exits",
    "scale_exits",
    "set_checked",
    "set_exchange_state",
    "set_held_by",
    "watched_symbols",
]


@dataclass(frozen=True)
class ArmedExit:
    """One ``exits`` row: an exit armed for an entry, and its state on the exchange."""

    id: int
    broker: str
    symbol: str
    timeframe: str
    alert_id: int
    entry_side: str
    entry_price: float
    entry_amount: float
    kind: str  # stop | trailing | take_profit_N
    trigger: float
    share: float | None
    trail: float | None
    armed_ms: int
    checked_ms: int
    break_even: bool = False
    seen_high: float | None = None
    seen_low: float | None = None
    status: str = "open"
    #: ``exchange`` (a resting order there acts on it) or ``gateway`` (the watcher does).
    held_by: str = "gateway"
    placements: int = 0
    exchange_cid: str | None = None
    exchange_order_id: str | None = None
    exchange_status: str | None = None
    placed_trigger: float | None = None
    placed_amount: float | None = None
    #: A gateway-held exit whose market order is in flight under this client id (see
    #: :func:`begin_firing`), and how many times it was fired.
    firing_cid: str | None = None
    firings: int = 0


#: The ``exits`` columns :class:`ArmedExit` holds: its fields, by name.
_FIELDS = tuple(f.name for f in fields(ArmedExit))


def _exit(r: Row) -> ArmedExit:
    """An ``exits`` row as its record, each field read by its column's name (the one mapping of
    this table: a column added to the table and the record is read without counting places)."""
    values = {name: r[name] for name in _FIELDS}
    values["break_even"] = bool(values["break_even"])  # an INTEGER column on SQLite
    return ArmedExit(**values)


def arm_exit(
    db: Db,
    *,
    broker: str,
    symbol: str,
    timeframe: str,
    alert_id: int,
    entry_side: str,
    entry_price: float,
    entry_amount: float,
    kind: str,
    trigger: float,
    armed_ms: int,
    share: float | None = None,
    trail: float | None = None,
    break_even: bool = False,
    held_by: str = "gateway",
) -> int:
    with writing(db) as conn:
        now = time.time()
        return insert_id(
            conn,
            "INSERT INTO exits (broker, symbol, timeframe, alert_id, entry_side, entry_price, entry_amount,"
            " kind, trigger, share, trail, break_even, armed_ms, checked_ms, created_at, updated_at, held_by)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (broker, symbol, timeframe, alert_id, entry_side, entry_price, entry_amount, kind, trigger,
             share, trail, int(break_even), armed_ms, armed_ms, now, now, held_by),
        )  # fmt: skip


def open_exits(db: Db, broker: str, symbol: str) -> list[ArmedExit]:
    """The symbol's open exits, stops before targets, nearest target first."""
    rows = (
        reading(db)
        .execute(
            "SELECT * FROM exits WHERE broker = ? AND symbol = ? AND status = 'open' ORDER BY id",
            (broker, symbol),
        )
        .fetchall()
    )
    return [_exit(r) for r in rows]


def open_exit_symbols(db: Db, broker: str) -> list[str]:
    """Symbols with at least one open exit (what the periodic watcher visits)."""
    rows = (
        reading(db)
        .execute(
            "SELECT DISTINCT symbol FROM exits WHERE broker = ? AND status = 'open' ORDER BY symbol",
            (broker,),
        )
        .fetchall()
    )
    return [str(r[0]) for r in rows]


def exchange_exits(
    db: Db, broker: str, symbol: str, *, placing_grace_s: float | None = None
) -> list[ArmedExit]:
    """Exits of the symbol whose order may rest on the exchange (``placing``, ``unknown`` or
    ``open``), whatever the exit's own status: a canceled exit's order must still be cancelled
    there. With ``placing_grace_s``, a ``placing`` exit only once its placement began that long
    ago: until then its sender may still be waiting on the exchange, and a look-up from another
    worker would find nothing yet, call it gone and place it a second time."""
    sql = (
        "SELECT * FROM exits WHERE broker = ? AND symbol = ? AND (exchange_status IN ('unknown', 'open')"
        " OR (exchange_status = 'placing' AND updated_at <= ?)) ORDER BY id"
    )
    cutoff = float("inf") if placing_grace_s is None else time.time() - placing_grace_s
    rows = reading(db).execute(sql, (broker, symbol, cutoff)).fetchall()
    return [_exit(r) for r in rows]


def watched_symbols(db: Db, broker: str) -> list[str]:
    """Symbols with an open exit or an order resting on the exchange for one (what a live
    broker's watcher visits)."""
    rows = (
        reading(db)
        .execute(
            "SELECT DISTINCT symbol FROM exits WHERE broker = ?"
            " AND (status = 'open' OR exchange_status IN ('placing', 'unknown', 'open')) ORDER BY symbol",
            (broker,),
        )
        .fetchall()
    )
    return [str(r[0]) for r in rows]


def begin_placement(db: Db, e: ArmedExit, cid: str, trigger: float, amount: float) -> bool:
    """Claim the next placement of exit ``e`` on the exchange under ``cid`` (written before the
    request goes out). False when another worker placed it since ``e`` was read, or an earlier
    placement may still rest there: the caller then places nothing."""
    with writing(db) as conn:
        cur = conn.execute(
            "UPDATE exits SET exchange_cid = ?, placements = placements + 1, exchange_status = 'placing',"
            " exchange_order_id = NULL, placed_trigger = ?, placed_amount = ?, updated_at = ?"
            " WHERE id = ? AND status = 'open' AND placements = ?"
            " AND (exchange_status IS NULL OR exchange_status NOT IN ('placing', 'unknown', 'open'))",
            (cid, trigger, amount, time.time(), e.id, e.placements),
        )
        return cur.rowcount == 1


def set_exchange_state(
    db: Db, exit_id: int, cid: str, status: str, exchange_order_id: str | None = None
) -> None:
    """What the exchange says of placement ``cid`` of the exit (a later placement is untouched)."""
    with writing(db) as conn:
        conn.execute(
            "UPDATE exits SET exchange_status = ?, exchange_order_id = COALESCE(?, exchange_order_id),"
            " updated_at = ? WHERE id = ? AND exchange_cid = ?",
            (status, exchange_order_id, time.time(), exit_id, cid),
        )


def set_held_by(db: Db, exit_id: int, held_by: str) -> None:
    """Who acts on the exit from now on (``gateway`` when the exchange refused to hold it)."""
    with writing(db) as conn:
        conn.execute(
            "UPDATE exits SET held_by = ?, updated_at = ? WHERE id = ?", (held_by, time.time(), exit_id)
        )


def scale_exits(db: Db, broker: str, symbol: str, factor: float) -> None:
    """A partial close kept ``factor`` of the position: each open exit now protects that share
    of its entry (a take-profit of 50% closes half of what is left, as it would have of all)."""
    with writing(db) as conn:
        conn.execute(
            "UPDATE exits SET entry_amount = entry_amount * ?, updated_at = ?"
            " WHERE broker = ? AND symbol = ? AND status = 'open'",
            (factor, time.time(), broker, symbol),
        )


def resize_exits(db: Db, broker: str, symbol: str, alert_id: int, entry_amount: float) -> None:
    """A later fill of an entry grew its position: the entry's open exits protect all of it."""
    with writing(db) as conn:
        conn.execute(
            "UPDATE exits SET entry_amount = ?, updated_at = ?"
            " WHERE broker = ? AND symbol = ? AND alert_id = ? AND status = 'open'",
            (entry_amount, time.time(), broker, symbol, alert_id),
        )


def begin_firing(db: Db, exit_id: int, client_order_id: str) -> bool:
    """Claim the firing of a gateway-held exit under ``client_order_id`` (its market order goes
    out next). False when it is already in flight, or no longer open. The exit stays open until
    its order is confirmed (:func:`claim_exit`), or is freed for another attempt
    (:func:`end_firing`)."""
    with writing(db) as conn:
        cur = conn.execute(
            "UPDATE exits SET firing_cid = ?, firings = firings + 1, updated_at = ?"
            " WHERE id = ? AND status = 'open' AND firing_cid IS NULL",
            (client_order_id, time.time(), exit_id),
        )
        return cur.rowcount == 1


def end_firing(db: Db, client_order_id: str) -> None:
    """The firing under ``client_order_id`` did not close the position (refused, or the exchange
    never saw it): the exit is open again, and fires again when its price is crossed."""
    with writing(db) as conn:
        conn.execute(
            "UPDATE exits SET firing_cid = NULL, updated_at = ? WHERE firing_cid = ? AND status = 'open'",
            (time.time(), client_order_id),
        )


def exit_for_order(db: Db, client_order_id: str) -> ArmedExit | None:
    """The exit whose order went out under ``client_order_id``: fired by the gateway
    (``firing_cid``) or resting on the exchange (``exchange_cid``); None for any other order."""
    row = (
        reading(db)
        .execute(
            "SELECT * FROM exits WHERE firing_cid = ? OR exchange_cid = ?", (client_order_id, client_order_id)
        )
        .fetchone()
    )
    return None if row is None else _exit(row)


def claim_exit(db: Db, exit_id: int, client_order_id: str, reason: str) -> bool:
    """Mark the exit filled, once: False when another worker (or an earlier pass) did."""
    with writing(db) as conn:
        cur = conn.execute(
            "UPDATE exits SET status = 'filled', client_order_id = ?, reason = ?, updated_at = ?"
            " WHERE id = ? AND status = 'open'",
            (client_order_id, reason, time.time(), exit_id),
        )
        return cur.rowcount == 1


def cancel_exits(db: Db, broker: str, symbol: str, reason: str) -> int:
    """Cancel every open exit of the symbol (its position closed or reversed); how many."""
    with writing(db) as conn:
        cur = conn.execute(
            "UPDATE exits SET status = 'canceled', reason = ?, updated_at = ?"
            " WHERE broker = ? AND symbol = ? AND status = 'open'",
            (reason, time.time(), broker, symbol),
        )
        return cur.rowcount


def move_trigger(db: Db, exit_id: int, trigger: float) -> None:
    """A trailing stop that followed the price, or a stop moved to break-even."""
    with writing(db) as conn:
        conn.execute(
            "UPDATE exits SET trigger = ?, updated_at = ? WHERE id = ? AND status = 'open'",
            (trigger, time.time(), exit_id),
        )


def set_checked(db: Db, exit_id: int, ms: int, high: float, low: float) -> None:
    """Note the bar ``ms`` as checked up to ``high``/``low`` (widened when the bar grew)."""
    with writing(db) as conn:
        conn.execute(
            "UPDATE exits SET"
            " seen_high = CASE WHEN checked_ms = ? AND seen_high > ? THEN seen_high ELSE ? END,"
            " seen_low = CASE WHEN checked_ms = ? AND seen_low < ? THEN seen_low ELSE ? END,"
            " checked_ms = ? WHERE id = ? AND status = 'open' AND checked_ms <= ?",
            (ms, high, high, ms, low, low, ms, exit_id, ms),
        )
