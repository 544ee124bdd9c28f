"""Leases (one owner of a job across workers and hosts) and this installation's id.

A lease is a row, not a lock in a process: every gunicorn worker, and every gateway host on a
shared PostgreSQL database, asks for it by name with its own holder id; the holder renews it on
each pass and another may take it once it has expired (a holder that died gives it up by not
renewing). One upsert decides, so two askers never both hold it.
"""

from __future__ import annotations

import os
import secrets
import socket
import string
import time
import uuid

from storage.database import Db, query_one, writing

__all__ = ["holder_id", "installation_id", "release", "take_lease", "take_over"]

_ID_ALPHABET = string.ascii_lowercase + string.digits


def holder_id(job: str) -> str:
    """A lease holder id unique to this process, on this host, for ``job``."""
    return f"{socket.gethostname()}:{os.getpid()}:{job}:{uuid.uuid4().hex[:8]}"


def take_lease(db: Db, name: str, holder: str, ttl_s: float, *, now: float | None = None) -> bool:
    """Take or renew the lease ``name`` for ``holder`` for ``ttl_s`` seconds; True when
    ``holder`` holds it now (it was free, expired, or already its own)."""
    at = time.time() if now is None else now
    with writing(db) as conn:
        conn.execute(
            "INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE"
            " SET holder = excluded.holder, expires_at = excluded.expires_at"
            " WHERE leases.holder = excluded.holder OR leases.expires_at < ?",
            (name, holder, at + ttl_s, at),
        )
        row = conn.execute("SELECT holder FROM leases WHERE name = ?", (name,)).fetchone()
    return row is not None and row[0] == holder


def take_over(db: Db, name: str, holder: str, ttl_s: float) -> bool:
    """:func:`take_lease`, also taking it from a holder on this host whose process is gone (a
    gateway killed before its lease ran out: its successor on the same host need not wait for
    it to expire). A holder on another host is respected until its lease expires."""
    row = query_one(db, "SELECT holder FROM leases WHERE name = ?", (name,))
    if row is not None and _dead_here(str(row["holder"])):
        release(db, name, str(row["holder"]))
    return take_lease(db, name, holder, ttl_s)


def _dead_here(holder: str) -> bool:
    host, _, rest = holder.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def release(db: Db, name: str, holder: str) -> None:
    """Give the lease up at once (a clean shutdown), if ``holder`` holds it."""
    with writing(db) as conn:
        conn.execute("DELETE FROM leases WHERE name = ? AND holder = ?", (name, holder))


def installation_id(db: Db) -> str:
    """This database's id: six lower-case letters and digits, drawn once when first asked and
    kept. It is part of every client order id, so a fresh database trading the same exchange
    account never sends an id an earlier one used (the exchange would answer with that order)."""
    row = query_one(db, "SELECT id FROM installation ORDER BY created_at LIMIT 1")
    if row is not None:
        return str(row[0])
    drawn = "".join(secrets.choice(_ID_ALPHABET) for _ in range(6))
    with writing(db) as conn:
        if conn.execute("SELECT 1 FROM installation").fetchone() is None:
            conn.execute("INSERT INTO installation (id, created_at) VALUES (?, ?)", (drawn, time.time()))
        row = conn.execute("SELECT id FROM installation ORDER BY created_at LIMIT 1").fetchone()
    return str(row[0])
