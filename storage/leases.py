"""Leases: the single owner of a background job across every worker and every host.

A lease is a row per job name (``retention``, ...). A worker takes it when it is free or its
term has run out, and keeps it by renewing within the term; the store's own clock judges the
term, so hosts whose clocks disagree still agree on who holds it. A holder that dies (SIGKILL, a
lost host) simply stops renewing, and the job passes to another worker once the term ends. It
works the same on SQLite and PostgreSQL: one upsert, guarded, in the one write lock.

A job whose every run must happen once per period (pruning) takes the lease for that period and
does not release it: the next run, by whoever wins, comes after the term.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass

from storage.database import Db, Storage, dialect_of, query_one, writing

__all__ = ["Lease", "claim_lease", "default_owner", "lease_holder", "release_lease", "start_owned_job"]

log = logging.getLogger(__name__)

#: A holder that misses this many of its periods loses the lease (a restart or GC pause of one
#: period does not hand the job over; a dead host's job moves within three).
TERMS = 3


@dataclass(frozen=True)
class Lease:
    name: str
    owner: str
    acquired_at: float
    expires_at: float


def default_owner() -> str:
    """This process as a lease owner: ``host:pid`` (unique among live processes of all hosts)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def claim_lease(db: Db, name: str, owner: str, ttl_s: float) -> bool:
    """Take or renew lease ``name`` for ``ttl_s`` seconds; False when another owner holds it.

    The holder renewing keeps its ``acquired_at``; a new holder starts a new term."""
    now = dialect_of(db).epoch_now()
    with writing(db) as conn:
        rows = conn.execute(
            f"INSERT INTO leases (name, owner, acquired_at, expires_at) VALUES (?, ?, {now}, {now} + ?)"
            " ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at,"
            " acquired_at = CASE WHEN leases.owner = excluded.owner THEN leases.acquired_at"
            " ELSE excluded.acquired_at END"
            " WHERE leases.expires_at <= excluded.acquired_at OR leases.owner = excluded.owner"
            " RETURNING owner",
            (name, owner, ttl_s),
        ).fetchall()
    return bool(rows)


def release_lease(db: Db, name: str, owner: str) -> bool:
    """Give lease ``name`` up at once (only its holder can); True when it was held by ``owner``."""
    with writing(db) as conn:
        cur = conn.execute("DELETE FROM leases WHERE name = ? AND owner = ?", (name, owner))
        return bool(cur.rowcount == 1)


def lease_holder(db: Db, name: str) -> Lease | None:
    """Who holds lease ``name`` and until when (an expired row is returned as it is)."""
    row = query_one(db, "SELECT name, owner, acquired_at, expires_at FROM leases WHERE name = ?", (name,))
    if row is None:
        return None
    return Lease(row["name"], row["owner"], float(row["acquired_at"]), float(row["expires_at"]))


def start_owned_job(
    storage: Storage,
    name: str,
    interval_s: float,
    job: Callable[[], object],
    *,
    owner: str | None = None,
    stop: threading.Event | None = None,
    ttl_s: float | None = None,
) -> threading.Thread:
    """A daemon thread in every worker that runs ``job`` every ``interval_s`` seconds, but only
    while this worker holds lease ``name``: one owner across every worker of every host, and
    another takes over within ``TERMS`` periods when the owner dies. ``job`` failing is logged and
    retried next period (it stays this worker's). ``stop`` ends the thread (the lease then runs
    out, as a dead owner's does); ``ttl_s`` is the lease's term (``TERMS`` periods)."""
    me = owner or default_owner()
    term = TERMS * interval_s if ttl_s is None else ttl_s
    stopped = stop or threading.Event()

    def loop() -> None:
        while not stopped.wait(interval_s):
            try:
                if claim_lease(storage, name, me, term):
                    job()
            except Exception:
                log.exception("%s failed; retrying in %.1f s", name, interval_s)

    thread = threading.Thread(target=loop, name=f"tvgw-{name}", daemon=True)
    thread.start()
    return thread
