"""Registry of trained model versions and training jobs (the artifacts live on disk)."""

from __future__ import annotations

import json
import time
from typing import Any

from storage.database import Db, Row, insert_id, query, query_one, where, writing

__all__ = [
    "ACTIVE_JOB_STATES",
    "claim_training_job",
    "finish_training_job",
    "get_model",
    "get_training_job",
    "list_models",
    "list_training_jobs",
    "mark_interrupted_jobs",
    "queue_training_job",
    "record_model",
    "request_cancel",
    "retire_model",
    "start_training_job",
    "training_progress",
    "unretire_model",
]

#: A job in one of these states may still change; any other state is final.
ACTIVE_JOB_STATES = ("queued", "running", "cancelling")


def record_model(
    db: Db,
    *,
    symbol: str,
    timeframe: str,
    version: str,
    path: str,
    synthetic: bool,
    metrics: dict[str, Any],
) -> None:
    with writing(db) as conn:
        conn.execute(
            "INSERT INTO ml_models (symbol, timeframe, version, path, created_at, synthetic, metrics)"
            " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (symbol, timeframe, version) DO UPDATE SET"
            " path = excluded.path, created_at = excluded.created_at, synthetic = excluded.synthetic,"
            " metrics = excluded.metrics, retired_at = NULL",
            (symbol, timeframe, version, path, time.time(), int(synthetic), json.dumps(metrics)),
        )


def _model_row(row: Row) -> dict[str, Any]:
    item = dict(row)
    item["metrics"] = json.loads(item["metrics"]) if item["metrics"] else {}
    item["synthetic"] = bool(item["synthetic"])
    return item


def list_models(
    db: Db, *, symbol: str | None = None, timeframe: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    """Registered versions, newest first (metrics decoded)."""
    clause, params = where(("symbol = ?", symbol), ("timeframe = ?", timeframe))
    sql = f"SELECT * FROM ml_models{clause} ORDER BY created_at DESC, id DESC LIMIT ?"
    rows = query(db, sql, [*params, limit])
    return [_model_row(r) for r in rows]


def get_model(db: Db, symbol: str, timeframe: str, version: str) -> dict[str, Any] | None:
    row = query_one(
        db,
        "SELECT * FROM ml_models WHERE symbol = ? AND timeframe = ? AND version = ?",
        (symbol, timeframe, version),
    )
    return None if row is None else _model_row(row)


def retire_model(db: Db, symbol: str, timeframe: str, version: str) -> None:
    """Mark a version retired: kept on disk for the record, never activated again by accident."""
    with writing(db) as conn:
        conn.execute(
            "UPDATE ml_models SET retired_at = COALESCE(retired_at, ?)"
            " WHERE symbol = ? AND timeframe = ? AND version = ?",
            (time.time(), symbol, timeframe, version),
        )


def unretire_model(db: Db, symbol: str, timeframe: str, version: str) -> None:
    """Activating a version on purpose brings it back from retirement."""
    with writing(db) as conn:
        conn.execute(
            "UPDATE ml_models SET retired_at = NULL WHERE symbol = ? AND timeframe = ? AND version = ?",
            (symbol, timeframe, version),
        )


def start_training_job(db: Db, *, symbol: str, timeframe: str, params: dict[str, Any]) -> int:
    """A run started by ``tvgw train`` itself: ``running`` at once, no stage (see
    :func:`mark_interrupted_jobs`)."""
    return _insert_job(db, symbol, timeframe, params, status="running", stage=None)


def queue_training_job(db: Db, *, symbol: str, timeframe: str, params: dict[str, Any]) -> int:
    """A job asked for through the API: ``queued`` until its runner process claims it."""
    return _insert_job(db, symbol, timeframe, params, status="queued", stage="queued")


def _insert_job(
    db: Db, symbol: str, timeframe: str, params: dict[str, Any], *, status: str, stage: str | None
) -> int:
    with writing(db) as conn:
        return insert_id(
            conn,
            "INSERT INTO ml_training_jobs (symbol, timeframe, status, params, started_at, stage)"
            " VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
            (symbol, timeframe, status, json.dumps(params, default=str), time.time(), stage),
        )


def claim_training_job(db: Db, job_id: int) -> bool:
    """The runner takes a queued job (False when it was cancelled or interrupted meanwhile)."""
    with writing(db) as conn:
        cur = conn.execute(
            "UPDATE ml_training_jobs SET status = 'running', stage = 'starting' WHERE id = ?"
            " AND status = 'queued'",
            (job_id,),
        )
    return cur.rowcount == 1


def training_progress(db: Db, job_id: int, *, stage: str, progress: float) -> str | None:
    """Note a job's stage; returns the job's status, so the runner sees a cancel request."""
    with writing(db) as conn:
        conn.execute(
            "UPDATE ml_training_jobs SET stage = ?, progress = ? WHERE id = ? AND status = 'running'",
            (stage, progress, job_id),
        )
        row = conn.execute("SELECT status FROM ml_training_jobs WHERE id = ?", (job_id,)).fetchone()
    return None if row is None else str(row[0])


def finish_training_job(
    db: Db,
    job_id: int,
    *,
    model_version: str | None = None,
    error: str | None = None,
    status: str | None = None,
) -> None:
    """Settle a job once: a job already final (interrupted by a restart, say) keeps its state."""
    final = status or ("failed" if error else "done")
    with writing(db) as conn:
        conn.execute(
            "UPDATE ml_training_jobs SET status = ?, finished_at = ?, model_version = ?, error = ?,"
            " stage = ?, progress = CASE WHEN ? = 'done' THEN 1 ELSE progress END"
            f" WHERE id = ? AND status IN {ACTIVE_JOB_STATES}",
            (final, time.time(), model_version, error, final, final, job_id),
        )


def request_cancel(db: Db, job_id: int) -> str | None:
    """Ask a job to stop: a queued one is cancelled at once, a running one at its next stage.
    Returns the job's status afterwards (None when there is no such job)."""
    with writing(db) as conn:
        conn.execute(
            "UPDATE ml_training_jobs SET status = 'cancelled', stage = 'cancelled', finished_at = ?"
            " WHERE id = ? AND status = 'queued'",
            (time.time(), job_id),
        )
        conn.execute(
            "UPDATE ml_training_jobs SET status = 'cancelling' WHERE id = ? AND status = 'running'",
            (job_id,),
        )
        row = conn.execute("SELECT status FROM ml_training_jobs WHERE id = ?", (job_id,)).fetchone()
    return None if row is None else str(row[0])


def _job_row(row: Row) -> dict[str, Any]:
    item = dict(row)
    item["params"] = json.loads(item["params"]) if item["params"] else {}
    return item


def get_training_job(db: Db, job_id: int) -> dict[str, Any] | None:
    row = query_one(db, "SELECT * FROM ml_training_jobs WHERE id = ?", (job_id,))
    return None if row is None else _job_row(row)


def list_training_jobs(db: Db, *, status: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    sql, params = "SELECT * FROM ml_training_jobs", list[Any]()
    if status:
        sql += " WHERE status = ?"
        params.append(status)
    rows = query(db, sql + " ORDER BY id DESC LIMIT ?", [*params, limit])
    return [_job_row(r) for r in rows]


def mark_interrupted_jobs(db: Db) -> list[int]:
    """At start-up: API jobs (they have a ``stage``) still queued or running belonged to runner
    processes a restart ended. A ``tvgw train`` run from a shell has no stage and is left alone."""
    with writing(db) as conn:
        ids = [
            int(r[0])
            for r in conn.execute(
                f"SELECT id FROM ml_training_jobs WHERE status IN {ACTIVE_JOB_STATES} AND stage IS NOT NULL"
            ).fetchall()
        ]
        conn.execute(
            "UPDATE ml_training_jobs SET status = 'interrupted', stage = 'interrupted', finished_at = ?,"
            " error = 'interrupted by a gateway restart'"
            f" WHERE status IN {ACTIVE_JOB_STATES} AND stage IS NOT NULL",
            (time.time(),),
        )
    return ids
