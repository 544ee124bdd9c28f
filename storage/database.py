"""The connection: WAL, busy timeout, one connection per thread, versioned schema."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import sqlite_utils

from storage.schema import MIGRATIONS, TABLES

__all__ = ["SCHEMA_VERSION", "Db", "Storage", "query", "query_one", "reading", "writing"]

SCHEMA_VERSION = len(MIGRATIONS)

T = TypeVar("T")


@dataclass
class _Job:
    """One caller's unit of work in a group commit."""

    fn: Callable[[sqlite3.Connection], Any]
    result: Any = None
    error: BaseException | None = None
    finished: bool = False


class Storage:
    """A SQLite database file shared by every gunicorn worker and thread.

    Each thread gets its own connection (sqlite3 connections must not cross threads). Writes
    go through :meth:`transaction`, which takes the write lock up front (``BEGIN IMMEDIATE``)
    so that two workers never deadlock upgrading a read lock; the busy timeout makes the loser
    wait instead of failing.
    """

    def __init__(self, path: str | Path, *, synchronous: str = "FULL", busy_timeout_ms: int = 10_000):
        self.path = Path(path)
        self.synchronous = synchronous
        self.busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._batch_cv = threading.Condition()
        self._batch_queue: list[_Job] = []
        self._batch_leader = False
        self._lock_fd: int | None = None
        self._lock_pid: int | None = None
        if str(self.path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)

    # --- connections -----------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            str(self.path),
            timeout=self.busy_timeout_ms / 1000,
            isolation_level=None,
            check_same_thread=True,
        )
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA mmap_size = 268435456")
        return conn

    @property
    def conn(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        return conn

    @property
    def db(self) -> sqlite_utils.Database:
        """This thread's connection wrapped by sqlite-utils, for schema introspection only
        (:meth:`missing_tables`; an operator can also use it from a Python shell). Every insert,
        update and query goes through the plain sqlite3 connection (:attr:`conn`), in SQL that
        lives in ``storage/``."""
        wrapped = getattr(self._local, "db", None)
        if wrapped is None:
            wrapped = sqlite_utils.Database(self.conn)
            self._local.db = wrapped
        return wrapped

    def close(self) -> None:
        """Close this thread's connection (other threads close their own)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
            self._local.db = None

    def _file_lock(self) -> int:
        """A lock file beside the database, opened once per process (after gunicorn's fork)."""
        if self._lock_fd is None or self._lock_pid != os.getpid():
            self._lock_fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            self._lock_pid = os.getpid()
        return self._lock_fd

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (or ``ROLLBACK`` on error). Not re-entrant.

        Writers queue on a thread lock and an ``flock`` on ``<database>.lock`` before they
        begin. SQLite's own busy handler polls with sleeps of up to 100 ms, which under load
        turns a sub-millisecond wait into a p99 of half a second; the kernel wakes an flock
        waiter the moment the lock is free. The busy timeout still guards writers that do not
        take the lock (other programs, the sqlite3 shell).
        """
        conn = self.conn
        with self._write_lock:
            lock_fd = self._file_lock() if str(self.path) != ":memory:" else None
            if lock_fd is not None:
                fcntl.flock(lock_fd, fcntl.LOCK_EX)
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            finally:
                if lock_fd is not None:
                    fcntl.flock(lock_fd, fcntl.LOCK_UN)

    def write_batched(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` in a write transaction shared with other threads' work (group commit).

        The write lock is one queue for every worker, so the time it is held caps throughput.
        Threads of this process that arrive while a transaction is running queue up; the next
        one to go runs all queued work in *one* transaction, each piece inside its own
        SAVEPOINT (an exception undoes only that piece and is re-raised in its own thread).
        Every caller returns only after the COMMIT that made its work durable. ``fn`` runs on
        the batch leader's thread: it must use the ``conn`` it is given (or ``self.conn``,
        which on that thread is the same connection).
        """
        job = _Job(fn)
        with self._batch_cv:
            self._batch_queue.append(job)
            while self._batch_leader and not job.finished:
                self._batch_cv.wait()
            if not job.finished:
                self._batch_leader = True
                batch, self._batch_queue = self._batch_queue, []
        if not job.finished:
            try:
                self._run_batch(batch)
            finally:
                with self._batch_cv:
                    self._batch_leader = False
                    self._batch_cv.notify_all()
        if job.error is not None:
            raise job.error
        return job.result

    def _run_batch(self, batch: list[_Job]) -> None:
        try:
            with self.transaction() as conn:
                if len(batch) == 1:  # alone: the transaction itself is the job's undo
                    batch[0].result = batch[0].fn(conn)
                    return
                for job in batch:
                    conn.execute("SAVEPOINT job")
                    try:
                        job.result = job.fn(conn)
                    except BaseException as exc:  # re-raised in the job's own thread
                        conn.execute("ROLLBACK TO job")
                        job.error = exc
                    conn.execute("RELEASE job")
        except BaseException as exc:
            for job in batch:
                job.error = job.error or exc
            raise
        finally:
            for job in batch:
                job.finished = True

    # --- schema ----------------------------------------------------------------------------
    def schema_version(self) -> int:
        return int(self.conn.execute("PRAGMA user_version").fetchone()[0])

    def migrate(self) -> int:
        """Create or upgrade the schema to :data:`SCHEMA_VERSION`; safe to call from every worker."""
        with self.transaction() as conn:
            current = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if current > SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self.path} has schema version {current}, newer than this tvgw "
                    f"({SCHEMA_VERSION}): upgrade tvgw or use another TVGW_DATABASE"
                )
            for version in range(current, SCHEMA_VERSION):
                for statement in _statements(MIGRATIONS[version]):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {version + 1}")
        return SCHEMA_VERSION

    def missing_tables(self) -> list[str]:
        """Tables the schema defines that this file lacks (for /healthz), via sqlite-utils."""
        present = set(self.db.table_names())
        return sorted(t for t in TABLES if t not in present)

    def ping(self) -> bool:
        return self.conn.execute("SELECT 1").fetchone()[0] == 1


def _statements(script: str) -> list[str]:
    """Split a migration script (no semicolons inside statements in our migrations)."""
    return [s.strip() for s in script.split(";") if s.strip()]


#: What every storage function takes: the :class:`Storage` (a read, or a write in a transaction
#: of its own) or the connection of the caller's open transaction (a write that must commit with
#: the rest of it, such as an alert's bar with the alert). One convention, no twin functions.
Db = Storage | sqlite3.Connection


def reading(db: Db) -> sqlite3.Connection:
    """The connection to read through."""
    return db.conn if isinstance(db, Storage) else db


@contextmanager
def writing(db: Db) -> Iterator[sqlite3.Connection]:
    """A transaction of its own for a :class:`Storage`; the caller's for a connection."""
    if isinstance(db, Storage):
        with db.transaction() as conn:
            yield conn
    else:
        yield db


def query(db: Db, sql: str, params: Any = ()) -> list[sqlite3.Row]:
    """Every row ``sql`` selects."""
    return reading(db).execute(sql, params).fetchall()


def query_one(db: Db, sql: str, params: Any = ()) -> sqlite3.Row | None:
    """The first row ``sql`` selects, or None."""
    return reading(db).execute(sql, params).fetchone()
