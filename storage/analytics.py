"""Per-strategy analytics for the operator API: what each strategy's alerts led to.

Everything is counted from the rows the gateway wrote (alerts, orders, predictions, candles),
so the numbers are the record, not a cache that can drift from it.
"""

from __future__ import annotations

import time
from typing import Any

from storage.database import Db, dialect_of, query, query_one

__all__ = [
    "accuracy_by_day",
    "calibration_bins",
    "equity_curve",
    "model_live_stats",
    "strategy_counts",
    "strategy_fills",
    "strategy_hits",
    "strategy_ids",
]


def strategy_ids(db: Db) -> list[str]:
    """Every strategy id that has at least one alert on file."""
    rows = query(db, "SELECT DISTINCT strategy_id FROM alerts WHERE strategy_id IS NOT NULL ORDER BY 1")
    return [str(r[0]) for r in rows]


def strategy_counts(db: Db, strategy_id: str) -> dict[str, dict[str, int]]:
    """Alerts by status, decisions by action, and orders by status, for one strategy."""
    alerts = query(
        db, "SELECT status, COUNT(*) FROM alerts WHERE strategy_id = ? GROUP BY status", (strategy_id,)
    )
    action = dialect_of(db).json_text("decision", "action")
    decisions = query(
        db,
        f"SELECT COALESCE({action}, 'none'), COUNT(*) FROM alerts"
        " WHERE strategy_id = ? AND decision IS NOT NULL GROUP BY 1",
        (strategy_id,),
    )
    orders = query(
        db,
        "SELECT o.status, COUNT(*) FROM orders o JOIN alerts a ON a.id = o.alert_id"
        " WHERE a.strategy_id = ? GROUP BY o.status",
        (strategy_id,),
    )
    return {
        "alerts": {str(r[0]): int(r[1]) for r in alerts},
        "decisions": {str(r[0]): int(r[1]) for r in decisions},
        "orders": {str(r[0]): int(r[1]) for r in orders},
    }


def strategy_fills(db: Db, strategy_id: str, broker: str) -> list[dict[str, Any]]:
    """Per symbol: net filled amount, cash moved by the fills (fees included), and the price to
    mark the remainder at: the account's mark (``storage.marks``, the price its equity is valued
    at, so a strategy's P&L and the book's equity agree), else the newest fill price."""
    rows = query(
        db,
        "SELECT o.symbol AS symbol,"
        " SUM(CASE o.side WHEN 'buy' THEN o.filled ELSE -o.filled END) AS amount,"
        " SUM(CASE o.side WHEN 'buy' THEN -o.filled ELSE o.filled END * o.average) - SUM(o.fee) AS cash,"
        " (SELECT m.price FROM marks m WHERE m.broker = o.broker AND m.symbol = o.symbol) AS mark,"
        " (SELECT o2.average FROM orders o2 WHERE o2.symbol = o.symbol AND o2.filled > 0"
        "  ORDER BY o2.id DESC LIMIT 1) AS last_fill"
        " FROM orders o JOIN alerts a ON a.id = o.alert_id"
        " WHERE a.strategy_id = ? AND o.broker = ? AND o.filled > 0 AND o.average IS NOT NULL"
        " GROUP BY o.symbol ORDER BY o.symbol",
        (strategy_id, broker),
    )
    return [dict(r) for r in rows]


def strategy_hits(db: Db, strategy_id: str) -> tuple[int, int]:
    """(resolved predictions, of which right) for the alerts of one strategy."""
    row = query_one(
        db,
        "SELECT COUNT(*), COALESCE(SUM(p.prediction_accuracy), 0) FROM ml_predictions p"
        " JOIN alerts a ON a.id = p.alert_id WHERE a.strategy_id = ? AND p.resolved_at IS NOT NULL"
        " AND p.role = 'champion'",
        (strategy_id,),
    )
    return (int(row[0]), int(row[1])) if row else (0, 0)


def calibration_bins(db: Db, *, strategy_id: str | None = None, bins: int = 10) -> list[dict[str, Any]]:
    """Reliability table: resolved predictions grouped by predicted P(up) into ``bins`` equal
    bins; each with its count, mean prediction and how often the price really went up."""
    cell = dialect_of(db).floor_int("COALESCE(p.direction_prob, 0.5) * ?")
    sql = (
        f"SELECT CASE WHEN {cell} > ? THEN ? ELSE {cell} END AS bin, COUNT(*) AS n,"
        " AVG(COALESCE(p.direction_prob, 0.5)) AS predicted, AVG(p.actual_direction) AS observed"
        " FROM ml_predictions p LEFT JOIN alerts a ON a.id = p.alert_id WHERE p.resolved_at IS NOT NULL"
        " AND p.role = 'champion'"
    )
    params: list[Any] = [bins, bins - 1, bins - 1, bins]
    if strategy_id is not None:
        sql += " AND a.strategy_id = ?"
        params.append(strategy_id)
    rows = query(db, sql + " GROUP BY bin ORDER BY bin", params)
    return [
        {
            "low": round(r["bin"] / bins, 4),
            "high": round((r["bin"] + 1) / bins, 4),
            "n": int(r["n"]),
            "predicted": round(float(r["predicted"]), 4),
            "observed": round(float(r["observed"]), 4),
        }
        for r in rows
    ]


def model_live_stats(db: Db) -> dict[tuple[str, str, str], dict[str, Any]]:
    """Per (symbol, timeframe, model version): predictions made, resolved, accuracy and Brier
    score of the resolved ones, measured on what the market did after going live."""
    rows = query(
        db,
        "SELECT symbol, timeframe, COALESCE(model_version, '') AS version, COUNT(*) AS made,"
        " COUNT(resolved_at) AS resolved,"
        " AVG(CASE WHEN resolved_at IS NOT NULL THEN prediction_accuracy END) AS accuracy,"
        " AVG(CASE WHEN resolved_at IS NOT NULL THEN (COALESCE(direction_prob, 0.5) - actual_direction)"
        " * (COALESCE(direction_prob, 0.5) - actual_direction) END) AS brier"
        " FROM ml_predictions GROUP BY symbol, timeframe, version",
    )
    return {
        (r["symbol"], r["timeframe"], r["version"]): {
            "predictions": int(r["made"]),
            "resolved": int(r["resolved"]),
            "accuracy": None if r["accuracy"] is None else round(float(r["accuracy"]), 4),
            "brier": None if r["brier"] is None else round(float(r["brier"]), 4),
        }
        for r in rows
    }


def accuracy_by_day(db: Db, days: int = 30) -> list[dict[str, Any]]:
    """Resolved predictions per UTC day (by when they were made): count and hit rate."""
    day = dialect_of(db).utc_day("timestamp")
    rows = query(
        db,
        f"SELECT {day} AS day, COUNT(*) AS n, AVG(prediction_accuracy) AS accuracy"
        " FROM ml_predictions WHERE resolved_at IS NOT NULL AND role = 'champion' AND timestamp >= ?"
        " GROUP BY day ORDER BY day",
        (time.time() - days * 86_400,),
    )
    return [{"day": r["day"], "n": int(r["n"]), "accuracy": round(float(r["accuracy"]), 4)} for r in rows]


def equity_curve(db: Db, broker: str, limit: int = 2000) -> list[dict[str, Any]]:
    """The account value after each order, oldest first (the newest ``limit`` points)."""
    rows = query(
        db,
        "SELECT at, equity FROM (SELECT at, equity FROM equity_snapshots WHERE broker = ?"
        " ORDER BY at DESC LIMIT ?) AS newest ORDER BY at",
        (broker, limit),
    )
    return [{"at": float(r["at"]), "equity": float(r["equity"])} for r in rows]
