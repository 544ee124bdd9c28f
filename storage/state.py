"""Per-strategy, per-symbol state: the newest alert time applied (for out-of-order alerts)."""

from __future__ import annotations

import time

from storage.database import Db, reading, writing

__all__ = ["claim_notification", "last_alert_time", "set_last_alert_time"]


def last_alert_time(db: Db, strategy_id: str, symbol: str) -> float | None:
    conn = reading(db)
    row = conn.execute(
        "SELECT last_alert_time FROM strategy_state WHERE strategy_id = ? AND symbol = ?",
        (strategy_id, symbol),
    ).fetchone()
    return None if row is None or row[0] is None else float(row[0])


def set_last_alert_time(db: Db, strategy_id: str, symbol: str, at: float) -> None:
    with writing(db) as conn:
        conn.execute(
            "INSERT INTO strategy_state (strategy_id, symbol, last_alert_time) VALUES (?, ?, ?)"
            " ON CONFLICT (strategy_id, symbol) DO UPDATE SET"
            " last_alert_time = CASE WHEN strategy_state.last_alert_time > excluded.last_alert_time"
            " THEN strategy_state.last_alert_time ELSE excluded.last_alert_time END",
            (strategy_id, symbol, at),
        )


def claim_notification(db: Db, key: str) -> bool:
    """True for the first caller of ``key`` across every worker (a UNIQUE key, not a dict)."""
    with writing(db) as conn:
        cur = conn.execute(
            "INSERT INTO notifications_sent (key, sent_at) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
            (key, time.time()),
        )
    return cur.rowcount == 1
