"""The prediction log: one row per enrichment, its outcome filled in once the horizon passed."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from storage.database import Storage

__all__ = ["insert_prediction", "recent_outcomes", "resolve_prediction", "resolved_since", "unresolved_due"]


def insert_prediction(conn: sqlite3.Connection, **row: Any) -> int:
    """Insert inside the caller's transaction (the alert's), so no alert lacks its prediction."""
    names = ", ".join(row)
    cur = conn.execute(
        f"INSERT INTO ml_predictions ({names}) VALUES ({', '.join('?' * len(row))})", tuple(row.values())
    )
    return int(cur.lastrowid or 0)


def unresolved_due(storage: Storage, now: float, limit: int = 500) -> list[dict[str, Any]]:
    """Predictions whose target time has passed and whose outcome is not yet known."""
    rows = storage.query(
        "SELECT id, symbol, timeframe, direction_prob, price_at_prediction, target_time FROM ml_predictions"
        " WHERE resolved_at IS NULL AND target_time <= ? ORDER BY target_time LIMIT ?",
        (now, limit),
    )
    return [dict(r) for r in rows]


def resolve_prediction(
    conn: sqlite3.Connection,
    prediction_id: int,
    *,
    actual_direction: int,
    actual_magnitude: float,
    prediction_accuracy: float,
) -> bool:
    """Fill an outcome once: the ``resolved_at IS NULL`` guard makes concurrent resolvers safe."""
    cur = conn.execute(
        "UPDATE ml_predictions SET actual_direction = ?, actual_magnitude = ?, prediction_accuracy = ?,"
        " resolved_at = ? WHERE id = ? AND resolved_at IS NULL",
        (actual_direction, actual_magnitude, prediction_accuracy, time.time(), prediction_id),
    )
    return cur.rowcount == 1


def resolved_since(storage: Storage, since: float, symbol: str | None = None) -> list[dict[str, Any]]:
    """Resolved predictions made at or after ``since`` (epoch seconds), oldest first."""
    sql = (
        "SELECT timestamp, symbol, model_version, direction_prob, magnitude_pred, confidence,"
        " actual_direction, actual_magnitude, prediction_accuracy, synthetic FROM ml_predictions"
        " WHERE resolved_at IS NOT NULL AND timestamp >= ?"
    )
    params: list[Any] = [since]
    if symbol:
        sql += " AND symbol = ?"
        params.append(symbol)
    return [dict(r) for r in storage.query(sql + " ORDER BY timestamp", params)]


def recent_outcomes(storage: Storage, since: float, limit: int) -> list[dict[str, Any]]:
    """The newest ``limit`` resolved predictions made at or after ``since``, oldest first.

    Only what the drift report needs, read backwards along the ``ml_predictions_resolved_time``
    partial index and stopped by the LIMIT: its cost is fixed, however long the log grows.
    """
    rows = storage.query(
        "SELECT timestamp, direction_prob, actual_magnitude, prediction_accuracy FROM ml_predictions"
        " WHERE resolved_at IS NOT NULL AND timestamp >= ? ORDER BY timestamp DESC LIMIT ?",
        (since, limit),
    )
    return [dict(r) for r in reversed(rows)]
