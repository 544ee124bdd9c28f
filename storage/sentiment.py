"""Sentiment cache: one JSON payload per key, with the time it was fetched."""

from __future__ import annotations

import json
import time
from typing import Any

from storage.database import Db, query, query_one, writing

__all__ = ["get_cached", "history", "put_cached"]


def get_cached(db: Db, key: str, max_age_s: float) -> dict[str, Any] | None:
    """The payload cached under ``key`` if younger than ``max_age_s``, else None."""
    row = query_one(db, "SELECT fetched_at, payload FROM sentiment_cache WHERE key = ?", (key,))
    if row is None or time.time() - row["fetched_at"] > max_age_s:
        return None
    return json.loads(row["payload"])


def put_cached(db: Db, key: str, payload: dict[str, Any]) -> None:
    with writing(db) as conn:
        conn.execute(
            "INSERT INTO sentiment_cache (key, fetched_at, payload) VALUES (?, ?, ?)"
            " ON CONFLICT (key) DO UPDATE SET fetched_at = excluded.fetched_at, payload = excluded.payload",
            (key, time.time(), json.dumps(payload)),
        )


def _like_escape(text: str) -> str:
    """``text`` matched literally by LIKE (``%`` and ``_`` are wildcards otherwise)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def history(db: Db, key_prefix: str) -> list[tuple[float, dict[str, Any]]]:
    """All cached payloads whose key starts with ``key_prefix``, oldest first (for trends)."""
    rows = query(
        db,
        "SELECT fetched_at, payload FROM sentiment_cache WHERE key LIKE ? ESCAPE '\\' ORDER BY fetched_at",
        (_like_escape(key_prefix) + "%",),
    )
    return [(r["fetched_at"], json.loads(r["payload"])) for r in rows]
