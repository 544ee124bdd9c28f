"""An alert's life as a timeline, and the daily continuity summary per strategy.

Most moments are already on file in the rows the gateway keeps anyway: when the alert fired
(its ``timenow``) and arrived (``alerts``), when each order was intended and filled, and each
exit (``orders``, the exits with their ``reason``). The moments no other row keeps are
``alert_steps`` rows: ``decided`` (inside the alert's own transaction) and whatever later acts
on an alert (a repair of a gap, an alert superseded by a newer one). One reader assembles them,
so the API, the dashboard and ``tvgw alerts --id N`` show the same steps and latencies.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from storage.database import Db, query, query_one, writing

__all__ = ["DailySummary", "Step", "Timeline", "add_step", "alert_timeline", "daily_summary"]


def add_step(
    db: Db,
    alert_id: int,
    step: str,
    at: float,
    *,
    gap_id: int | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Record one moment of an alert's life (inside the caller's transaction when given one)."""
    with writing(db) as conn:
        conn.execute(
            "INSERT INTO alert_steps (alert_id, step, at, gap_id, detail) VALUES (?, ?, ?, ?, ?)",
            (alert_id, step, at, gap_id, None if detail is None else json.dumps(detail, default=str)),
        )


@dataclass(frozen=True, kw_only=True)
class Step:
    """One moment: what happened, when, and how long after the step before it and after the
    alert arrived (milliseconds; negative for ``fired``, which comes before arrival)."""

    step: str
    at: float
    step_ms: float | None
    since_received_ms: float
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Timeline:
    alert_id: int
    strategy_id: str | None
    symbol: str | None
    action: str | None
    status: str
    alert_price: float | None
    steps: tuple[Step, ...]


def _orders(db: Db, alert_id: int) -> list[dict[str, Any]]:
    return [
        dict(r)
        for r in query(
            db,
            "SELECT id, client_order_id, broker, symbol, side, amount, price, status, filled, average,"
            " fee, reason, created_at, updated_at FROM orders WHERE alert_id = ? ORDER BY id",
            (alert_id,),
        )
    ]


def _slippage_bps(side: str, average: float | None, alert_price: float | None) -> float | None:
    """How much worse than the alert's price the fill was, in basis points (negative: better)."""
    if not average or not alert_price:
        return None
    sign = 1.0 if side == "buy" else -1.0
    return round(sign * (average - alert_price) / alert_price * 10_000, 2)


def alert_timeline(db: Db, alert_id: int) -> Timeline | None:
    """Every step of alert ``alert_id`` with its time and latencies; None for no such alert."""
    alert = query_one(
        db,
        "SELECT id, strategy_id, symbol, ticker, action, status, price, timenow, received_at"
        " FROM alerts WHERE id = ?",
        (alert_id,),
    )
    if alert is None:
        return None
    price = alert["price"]
    moments: list[tuple[float, int, str, dict[str, Any]]] = []
    if alert["timenow"] is not None:
        moments.append((alert["timenow"], 0, "fired", {}))
    moments.append((alert["received_at"], 1, "received", {}))
    for row in query(
        db, "SELECT step, at, gap_id, detail FROM alert_steps WHERE alert_id = ? ORDER BY at, id", (alert_id,)
    ):
        detail = json.loads(row["detail"]) if row["detail"] else {}
        if row["gap_id"] is not None:
            detail["gap_id"] = row["gap_id"]
        moments.append((row["at"], 2, row["step"], detail))
    for order in _orders(db, alert_id):
        facts = {k: order[k] for k in ("client_order_id", "broker", "symbol", "side", "amount", "status")}
        if order["reason"] is None:
            moments.append((order["created_at"], 3, "ordered", facts))
            if order["filled"] > 0:
                moments.append((order["updated_at"], 4, "fill", _fill(order, price)))
        elif order["filled"] > 0:
            moments.append((order["updated_at"], 5, "exit", {"exit": order["reason"], **_fill(order, price)}))
    moments.sort(key=lambda m: (m[0], m[1]))
    received = alert["received_at"]
    steps, previous = [], None
    for at, _, name, detail in moments:
        steps.append(
            Step(
                step=name,
                at=at,
                detail=detail,
                step_ms=None if previous is None else round((at - previous) * 1000, 3),
                since_received_ms=round((at - received) * 1000, 3),
            )
        )
        previous = at
    return Timeline(
        alert_id=alert_id, strategy_id=alert["strategy_id"], symbol=alert["symbol"] or alert["ticker"],
        action=alert["action"], status=alert["status"], alert_price=price, steps=tuple(steps),
    )  # fmt: skip


def _fill(order: dict[str, Any], alert_price: float | None) -> dict[str, Any]:
    return {
        "client_order_id": order["client_order_id"], "side": order["side"], "filled": order["filled"],
        "average": order["average"], "fee": order["fee"],
        "slippage_bps": _slippage_bps(order["side"], order["average"], alert_price),
    }  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class DailySummary:
    """One strategy's day (UTC): messages it should have sent, those that arrived, those found
    missing (not counting the ones that arrived late after all) and those repaired; median
    latencies in milliseconds (None without a sample)."""

    day: str
    strategy_id: str
    expected: int
    received: int
    missed: int
    repaired: int
    fired_to_received_ms: float | None
    received_to_filled_ms: float | None


def _day(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d")


def _median_ms(values: list[float]) -> float | None:
    return round(statistics.median(values) * 1000, 3) if values else None


def daily_summary(db: Db, *, since: float, strategy_id: str | None = None) -> list[DailySummary]:
    """The summary for every (day, strategy) since ``since``, newest day first."""
    where, params = (
        ("", [since]) if strategy_id is None else (" AND {0}strategy_id = ?", [since, strategy_id])
    )
    received: dict[tuple[str, str], int] = defaultdict(int)
    fired: dict[tuple[str, str], list[float]] = defaultdict(list)
    filled: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in query(
        db,
        "SELECT a.strategy_id, a.received_at, a.timenow,"
        " (SELECT MIN(o.updated_at) FROM orders o WHERE o.alert_id = a.id AND o.reason IS NULL"
        "  AND o.filled > 0) AS filled_at"
        " FROM alerts a WHERE a.received_at >= ? AND a.strategy_id IS NOT NULL AND a.duplicate_of IS NULL"
        + where.format("a."),
        params,
    ):
        key = (_day(r["received_at"]), r["strategy_id"])
        received[key] += 1
        if r["timenow"] is not None:
            fired[key].append(r["received_at"] - r["timenow"])
        if r["filled_at"] is not None:
            filled[key].append(r["filled_at"] - r["received_at"])
    for r in query(
        db,
        "SELECT f.strategy_id, m.received_at, m.fired_at FROM feed_marks m JOIN feeds f ON f.id = m.feed_id"
        " WHERE m.kind = 'heartbeat' AND m.received_at >= ?" + where.format("f."),
        params,
    ):
        key = (_day(r["received_at"]), r["strategy_id"])
        received[key] += 1
        if r["fired_at"] is not None:
            fired[key].append(r["received_at"] - r["fired_at"])
    missed: dict[tuple[str, str], int] = defaultdict(int)
    repaired: dict[tuple[str, str], int] = defaultdict(int)
    for r in query(
        db,
        "SELECT f.strategy_id, g.detected_at, g.missed,"
        " (SELECT COUNT(*) FROM alert_steps s WHERE s.gap_id = g.id AND s.step = 'repaired') AS repairs,"
        " (SELECT COUNT(*) FROM alert_steps s WHERE s.gap_id = g.id AND s.step = 'arrived_late') AS late"
        " FROM feed_gaps g JOIN feeds f ON f.id = g.feed_id WHERE g.detected_at >= ?" + where.format("f."),
        params,
    ):
        key = (_day(r["detected_at"]), r["strategy_id"])
        if r["late"]:
            continue  # not missed after all: it came, late
        missed[key] += r["missed"]
        repaired[key] += 1 if r["repairs"] else 0
    for r in query(
        db,
        "SELECT a.strategy_id, s.at FROM alert_steps s JOIN alerts a ON a.id = s.alert_id"
        " WHERE s.step = 'repaired' AND s.gap_id IS NULL AND s.at >= ?" + where.format("a."),
        params,
    ):
        # A repair no recorded gap stands for: the book, not the chart, showed the lost message.
        key = (_day(r["at"]), r["strategy_id"])
        missed[key] += 1
        repaired[key] += 1
    keys = sorted(sorted(set(received) | set(missed), key=lambda k: k[1]), key=lambda k: k[0], reverse=True)
    return [
        DailySummary(
            day=day,
            strategy_id=strategy,
            expected=received[(day, strategy)] + missed[(day, strategy)],
            received=received[(day, strategy)],
            missed=missed[(day, strategy)],
            repaired=repaired[(day, strategy)],
            fired_to_received_ms=_median_ms(fired[(day, strategy)]),
            received_to_filled_ms=_median_ms(filled[(day, strategy)]),
        )
        for day, strategy in keys
    ]
