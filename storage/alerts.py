"""Alert records: every alert that reached the gateway, accepted or refused, and why."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import orjson

from storage.database import Connection, Db, Row, query, query_one, reading, writing

__all__ = [
    "AlertRecord",
    "claim_alert",
    "finish_alert",
    "get_alert",
    "get_alert_row",
    "insert_duplicate",
    "insert_refused",
    "list_alerts",
    "orphaned_alerts",
    "settle_alert",
]


@dataclass(frozen=True, kw_only=True)
class AlertRecord:
    """The columns of one ``alerts`` row that callers act on."""

    id: int
    status: str
    http_status: int | None
    reason: str | None
    decision: dict[str, Any] | None
    ml_analysis: dict[str, Any] | None
    strategy_id: str | None
    symbol: str | None
    received_at: float


def _dumps(value: Any) -> str | None:
    """JSON text for a column; text that is already JSON is stored as it is."""
    if value is None or isinstance(value, str):
        return value
    return orjson.dumps(value, default=str).decode()


def _loads(value: str | None) -> Any:
    return None if value is None else json.loads(value)


def insert_refused(
    db: Db,
    *,
    received_at: float,
    source_ip: str | None,
    http_status: int,
    error_code: str,
    reason: str,
    payload: Any,
    fields: dict[str, Any] | None = None,
    status: str = "refused",
) -> int:
    """Record an alert refused at the gate (bad JSON, bad passphrase, stale, ...), or one the
    gateway itself failed on (``status="error"``)."""
    tail = {"status": status, "http_status": http_status, "error_code": error_code, "reason": reason}
    with writing(db) as conn:
        inserted = _insert(conn, received_at, source_ip, payload, fields or {}, tail)
    assert inserted is not None
    return inserted


_ALERT_FIELDS = (
    "strategy_id", "ticker", "symbol", "exchange", "interval", "action", "contracts", "price",
    "position_size", "market_position", "order_id", "alert_time", "timenow",
)  # fmt: skip


def _insert(
    conn: Connection,
    received_at: float,
    source_ip: str | None,
    payload: Any,
    fields: dict[str, Any],
    tail: dict[str, Any],
    on_conflict: str = "",
) -> int | None:
    """Insert one alert row: when and from where it came, its payload, the alert fields the table
    has columns for, and ``tail`` (what the gateway made of it). The new row's id (None when
    ``on_conflict`` skipped it)."""
    values = {
        "received_at": received_at, "updated_at": received_at, "source_ip": source_ip,
        "payload": _dumps(payload), **{k: v for k, v in fields.items() if k in _ALERT_FIELDS}, **tail,
    }  # fmt: skip
    rows = conn.execute(
        f"INSERT INTO alerts ({', '.join(values)}) VALUES ({', '.join('?' * len(values))}){on_conflict}"
        " RETURNING id",
        tuple(values.values()),
    ).fetchall()
    return int(rows[0][0]) if rows else None


def claim_alert(
    db: Db,
    *,
    idempotency_key: str,
    received_at: float,
    source_ip: str | None,
    payload: Any,
    fields: dict[str, Any],
    status: str,
    outcome: dict[str, Any] | None = None,
) -> int | None:
    """Insert an accepted alert inside the caller's transaction.

    Returns its id, or None when ``idempotency_key`` is already taken: the UNIQUE constraint,
    not an in-process dict, is what makes a duplicate act once across every worker. When the
    outcome is already known (no order to place), ``outcome`` (http_status, reason, decision,
    ml_analysis) is written with it, in one statement.
    """
    with writing(db) as conn:
        tail: dict[str, Any] = {"idempotency_key": idempotency_key, "status": status}
        if outcome is not None:
            tail.update(
                http_status=outcome["http_status"], reason=outcome["reason"],
                decision=_dumps(outcome["decision"]), ml_analysis=_dumps(outcome["ml_analysis"]),
            )  # fmt: skip
        # On a conflict of the key alone: any other constraint's violation is still an error.
        return _insert(
            conn, received_at, source_ip, payload, fields, tail, " ON CONFLICT (idempotency_key) DO NOTHING"
        )


def original_for_key(db: Db, idempotency_key: str) -> int | None:
    conn = reading(db)
    row = conn.execute("SELECT id FROM alerts WHERE idempotency_key = ?", (idempotency_key,)).fetchone()
    return None if row is None else int(row[0])


def insert_duplicate(
    db: Db,
    *,
    original_id: int,
    received_at: float,
    source_ip: str | None,
    payload: Any,
    fields: dict[str, Any],
) -> int:
    """Record a repeat of ``original_id``; it never acts, but it is on file."""
    tail = {
        "duplicate_of": original_id, "status": "duplicate", "http_status": 200,
        "reason": f"duplicate of alert {original_id}",
    }  # fmt: skip
    with writing(db) as conn:
        inserted = _insert(conn, received_at, source_ip, payload, fields, tail)
    assert inserted is not None
    return inserted


def finish_alert(
    db: Db,
    alert_id: int,
    *,
    status: str,
    http_status: int | None,
    reason: str | None,
    decision: dict[str, Any] | None,
    ml_analysis: dict[str, Any] | None,
    symbol: str | None = None,
) -> None:
    """Write an alert's outcome inside the caller's transaction."""
    with writing(db) as conn:
        conn.execute(
            "UPDATE alerts SET status = ?, http_status = ?, reason = ?, decision = ?, ml_analysis = ?,"
            " symbol = COALESCE(?, symbol), updated_at = ? WHERE id = ?",
            (
                status,
                http_status,
                reason,
                _dumps(decision),
                _dumps(ml_analysis),
                symbol,
                time.time(),
                alert_id,
            ),
        )


def settle_alert(db: Db, alert_id: int, *, status: str, reason: str, only_if: tuple[str, ...]) -> bool:
    """An alert's order ended after its answer (the order lifecycle learnt its fate): its status
    and reason become what happened, when it still says one of ``only_if``. The decision it was
    answered with is kept as it was. True when it changed."""
    marks = ", ".join("?" for _ in only_if)
    with writing(db) as conn:
        cur = conn.execute(
            f"UPDATE alerts SET status = ?, reason = ?, updated_at = ? WHERE id = ? AND status IN ({marks})",
            (status, reason, time.time(), alert_id, *only_if),
        )
    return bool(cur.rowcount == 1)


def _record(row: Row) -> AlertRecord:
    return AlertRecord(
        id=row["id"], status=row["status"], http_status=row["http_status"], reason=row["reason"],
        decision=_loads(row["decision"]), ml_analysis=_loads(row["ml_analysis"]),
        strategy_id=row["strategy_id"], symbol=row["symbol"], received_at=row["received_at"],
    )  # fmt: skip


def get_alert(db: Db, alert_id: int) -> AlertRecord | None:
    row = query_one(db, "SELECT * FROM alerts WHERE id = ?", (alert_id,))
    return None if row is None else _record(row)


def get_alert_row(db: Db, alert_id: int) -> dict[str, Any] | None:
    """One alert as a plain row for the API (payload and decision decoded)."""
    row = query_one(db, "SELECT * FROM alerts WHERE id = ?", (alert_id,))
    return None if row is None else _decoded(row)


def _decoded(row: Row) -> dict[str, Any]:
    item = dict(row)
    for key in ("payload", "decision", "ml_analysis"):
        item[key] = _loads(item[key])
    return item


def list_alerts(db: Db, *, limit: int = 50, status: str | None = None) -> list[dict[str, Any]]:
    """Newest first, as plain rows for the API (payload and decision decoded)."""
    sql = "SELECT * FROM alerts"
    params: list[Any] = []
    if status:
        sql += " WHERE status = ?"
        params.append(status)
    sql += " ORDER BY id DESC LIMIT ?"
    params.append(limit)
    return [_decoded(row) for row in query(db, sql, params)]


def orphaned_alerts(db: Db, *, updated_before: float | None = None) -> list[int]:
    """Alerts left ``processing`` by a worker that died mid-way (checked at start-up); on a store
    other hosts share, only those untouched since ``updated_before`` (younger ones may be a live
    host's alert in flight)."""
    cutoff = float("inf") if updated_before is None else updated_before
    rows = query(db, "SELECT id FROM alerts WHERE status = 'processing' AND updated_at < ?", (cutoff,))
    return [int(r[0]) for r in rows]
