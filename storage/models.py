"""Registry of trained model versions and training jobs (the artifacts live on disk)."""

from __future__ import annotations

import json
import time
from typing import Any

from storage.database import Storage

__all__ = ["finish_training_job", "record_model", "start_training_job"]


def record_model(
    storage: Storage,
    *,
    symbol: str,
    timeframe: str,
    version: str,
    path: str,
    synthetic: bool,
    metrics: dict[str, Any],
) -> None:
    with storage.transaction() as conn:
        conn.execute(
            "INSERT OR REPLACE INTO ml_models (symbol, timeframe, version, path, created_at,"
            " synthetic, metrics) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (symbol, timeframe, version, path, time.time(), int(synthetic), json.dumps(metrics)),
        )


def start_training_job(storage: Storage, *, symbol: str, timeframe: str, params: dict[str, Any]) -> int:
    with storage.transaction() as conn:
        cur = conn.execute(
            "INSERT INTO ml_training_jobs (symbol, timeframe, status, params, started_at)"
            " VALUES (?, ?, 'running', ?, ?)",
            (symbol, timeframe, json.dumps(params, default=str), time.time()),
        )
    return int(cur.lastrowid or 0)


def finish_training_job(
    storage: Storage, job_id: int, *, model_version: str | None = None, error: str | None = None
) -> None:
    with storage.transaction() as conn:
        conn.execute(
            "UPDATE ml_training_jobs SET status = ?, finished_at = ?, model_version = ?, error = ?"
            " WHERE id = ?",
            ("failed" if error else "done", time.time(), model_version, error, job_id),
        )
