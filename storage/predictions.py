"""The prediction log: one row per enrichment, its outcome filled in once the horizon passed."""

from __future__ import annotations

import time
from typing import Any

from storage.database import Db, insert_id, query, query_one, where, writing

__all__ = [
    "get_prediction",
    "insert_prediction",
    "list_predictions",
    "recent_accuracy",
    "recent_outcomes",
    "resolve_prediction",
    "resolved_since",
    "set_outcome",
    "unresolved_due",
]


def insert_prediction(db: Db, **row: Any) -> int:
    """Insert inside the caller's transaction (the alert's), so no alert lacks its prediction."""
    with writing(db) as conn:
        names, values = ", ".join(row), ", ".join("?" * len(row))
        sql = f"INSERT INTO ml_predictions ({names}) VALUES ({values}) RETURNING id"
        return insert_id(conn, sql, tuple(row.values()))


def unresolved_due(db: Db, now: float, limit: int = 500) -> list[dict[str, Any]]:
    """Predictions whose target time has passed and whose outcome is not yet known."""
    rows = query(
        db,
        "SELECT id, symbol, timeframe, direction_prob, price_at_prediction, target_time FROM ml_predictions"
        " WHERE resolved_at IS NULL AND target_time <= ? ORDER BY target_time LIMIT ?",
        (now, limit),
    )
    return [dict(r) for r in rows]


def resolve_prediction(
    db: Db,
    prediction_id: int,
    *,
    actual_direction: int,
    actual_magnitude: float,
    prediction_accuracy: float,
) -> bool:
    """Fill an outcome once: the ``resolved_at IS NULL`` guard makes concurrent resolvers safe."""
    with writing(db) as conn:
        cur = conn.execute(
            "UPDATE ml_predictions SET actual_direction = ?, actual_magnitude = ?, prediction_accuracy = ?,"
            " resolved_at = ? WHERE id = ? AND resolved_at IS NULL",
            (actual_direction, actual_magnitude, prediction_accuracy, time.time(), prediction_id),
        )
        return cur.rowcount == 1


def resolved_since(db: Db, since: float, symbol: str | None = None) -> list[dict[str, Any]]:
    """Resolved predictions acted on (a challenger's shadow rows are its own record, not the
    gateway's) made at or after ``since`` (epoch seconds), oldest first."""
    sql = (
        "SELECT timestamp, symbol, model_version, direction_prob, magnitude_pred, confidence,"
        " actual_direction, actual_magnitude, prediction_accuracy, synthetic FROM ml_predictions"
        " WHERE resolved_at IS NOT NULL AND timestamp >= ? AND role = 'champion'"
    )
    params: list[Any] = [since]
    if symbol:
        sql += " AND symbol = ?"
        params.append(symbol)
    return [dict(r) for r in query(db, sql + " ORDER BY timestamp", params)]


def recent_outcomes(db: Db, since: float, limit: int) -> list[dict[str, Any]]:
    """The newest ``limit`` resolved predictions acted on, made at or after ``since``, oldest first.

    Only what the drift report needs, read backwards along the ``ml_predictions_resolved_time``
    partial index and stopped by the LIMIT: its cost is fixed, however long the log grows.
    """
    rows = query(
        db,
        "SELECT timestamp, direction_prob, actual_magnitude, prediction_accuracy FROM ml_predictions"
        " WHERE resolved_at IS NOT NULL AND timestamp >= ? AND role = 'champion'"
        " ORDER BY timestamp DESC LIMIT ?",
        (since, limit),
    )
    return [dict(r) for r in reversed(rows)]


def recent_accuracy(db: Db, symbol: str, model_version: str | None, limit: int) -> tuple[int, int]:
    """(right, resolved) over the newest ``limit`` resolved predictions of ``symbol`` by
    ``model_version``: what the strategy's Kelly cut reads. Walks the (symbol, timestamp)
    index backwards and stops at the LIMIT, so its cost is fixed however long the log grows."""
    row = query(
        db,
        "SELECT COUNT(*) AS n, COALESCE(SUM(prediction_accuracy), 0) AS hits FROM ("
        " SELECT prediction_accuracy FROM ml_predictions WHERE symbol = ?"
        " AND model_version IS NOT DISTINCT FROM ? AND resolved_at IS NOT NULL"
        " ORDER BY timestamp DESC LIMIT ?) AS newest",
        (symbol, model_version, limit),
    )[0]
    return round(float(row["hits"])), int(row["n"])


def list_predictions(
    db: Db,
    *,
    symbol: str | None = None,
    timeframe: str | None = None,
    model_version: str | None = None,
    resolved: bool | None = None,
    since: float | None = None,
    after_id: int | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """The prediction log, newest first, filtered (``after_id``: only rows newer than that id,
    for a live feed that asks "what is new since the last row I saw")."""
    clause, params = where(
        ("symbol = ?", symbol),
        ("timeframe = ?", timeframe),
        ("model_version = ?", model_version),
        ("timestamp >= ?", since),
        ("id > ?", after_id),
        also=() if resolved is None else ["resolved_at IS NOT NULL" if resolved else "resolved_at IS NULL"],
    )
    sql = f"SELECT * FROM ml_predictions{clause} ORDER BY id DESC LIMIT ?"
    return [dict(r) for r in query(db, sql, [*params, limit])]


def get_prediction(db: Db, prediction_id: int) -> dict[str, Any] | None:
    row = query_one(db, "SELECT * FROM ml_predictions WHERE id = ?", (prediction_id,))
    return None if row is None else dict(row)


def set_outcome(db: Db, prediction_id: int, *, actual_direction: int, actual_magnitude: float) -> bool:
    """Record or correct an outcome by hand (the operator knows better than a missing candle).

    Unlike :func:`resolve_prediction` this overwrites: a correction is the point. The hit is
    recomputed the way the resolver computes it (P(up) ≥ 0.5 predicted up)."""
    with writing(db) as conn:
        cur = conn.execute(
            "UPDATE ml_predictions SET actual_direction = ?, actual_magnitude = ?, resolved_at = ?,"
            " prediction_accuracy = CASE WHEN (COALESCE(direction_prob, 0.5) >= 0.5) = (? = 1)"
            " THEN 1.0 ELSE 0.0 END WHERE id = ?",
            (actual_direction, actual_magnitude, time.time(), actual_direction, prediction_id),
        )
    return cur.rowcount == 1
