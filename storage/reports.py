"""Shared reports: a computed report (the drift report) stored once for every worker and host.

A worker that finds the stored report older than it accepts computes a new one and stores it;
the others read it. Each worker then serves the same report, whichever host answers; a newer
report never gives way to an older one that a slower worker finishes later.
"""

from __future__ import annotations

import json
from typing import Any

from storage.database import Db, query_one, writing

__all__ = ["get_report", "put_report"]


def get_report(db: Db, name: str) -> tuple[float, dict[str, Any]] | None:
    """``(computed_at, report)`` of report ``name``, or None before the first one."""
    row = query_one(db, "SELECT computed_at, payload FROM shared_reports WHERE name = ?", (name,))
    return None if row is None else (float(row["computed_at"]), json.loads(row["payload"]))


def put_report(db: Db, name: str, computed_at: float, report: dict[str, Any]) -> None:
    """Store report ``name`` unless a newer one is stored already."""
    with writing(db) as conn:
        conn.execute(
            "INSERT INTO shared_reports (name, computed_at, payload) VALUES (?, ?, ?)"
            " ON CONFLICT (name) DO UPDATE SET computed_at = excluded.computed_at, payload = excluded.payload"
            " WHERE excluded.computed_at >= shared_reports.computed_at",
            (name, computed_at, json.dumps(report, default=str)),
        )
