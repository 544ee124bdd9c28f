"""The connection seam: one calling convention over SQLite (one machine) and PostgreSQL (several).

``Storage(target)`` opens the store ``target`` names: a file path keeps the embedded SQLite file
(WAL, a busy timeout, one connection per thread); a ``postgresql://`` URL opens a pooled
PostgreSQL database (:mod:`storage.postgres`). Both hand out a :class:`Connection`: ``execute``
with ``?`` placeholders, rows readable by column name (and by position), ``rowcount``. One
schema and one list of migrations serve both; the few places where the two dialects differ are
the methods of :class:`Dialect`, both forms side by side.

Write transactions are serialised across every writer of the store, as SQLite's
``BEGIN IMMEDIATE`` does, so the decisions that read state and then write it (risk limits,
claims, fills) stay exactly-once across workers and hosts: on PostgreSQL the transaction takes a
transaction-scoped advisory lock first (released by COMMIT, ROLLBACK, or the server when a host
dies mid-transaction).
"""

from __future__ import annotations

import fcntl
import os
import re
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar
from urllib.parse import urlsplit, urlunsplit

from storage.schema import MIGRATIONS, TABLES

__all__ = [
    "SCHEMA_VERSION",
    "Connection",
    "Cursor",
    "Db",
    "Dialect",
    "Row",
    "SchemaTooNewError",
    "Storage",
    "database_errors",
    "describe_migration",
    "dialect_of",
    "insert_id",
    "is_url",
    "query",
    "query_one",
    "reading",
    "redacted",
    "where",
    "writing",
]

SCHEMA_VERSION = len(MIGRATIONS)


T = TypeVar("T")

#: Parameters of one statement: positional for ``?`` placeholders.
Params = Sequence[Any] | Mapping[str, Any]


class Row(Protocol):
    """One result row: by column name (``row["id"]``) or position (``row[0]``); ``dict(row)``."""

    def __getitem__(self, key: Any, /) -> Any: ...
    def keys(self) -> list[str]: ...


class Cursor(Protocol):
    """What ``execute`` returns: its rows and how many rows a write touched."""

    @property
    def rowcount(self) -> int: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


class Connection(Protocol):
    """A connection of either store (``sqlite3.Connection`` is one as it is). Inside
    :meth:`Storage.transaction` it is the transaction's; ``?`` placeholders on both stores."""

    def execute(self, sql: str, parameters: Params = ..., /) -> Any: ...
    def executemany(self, sql: str, parameters: Any, /) -> Any: ...


class SchemaTooNewError(RuntimeError):
    """The store was migrated by a newer tvgw than this one: upgrade tvgw (or point
    ``TVGW_DATABASE`` at another store); this version would misread the newer tables."""


def database_errors() -> tuple[type[Exception], ...]:
    """What a failing store raises, either kind (for callers that degrade rather than fail):
    ``except database_errors():``. psycopg (a second to import) is counted only once a
    PostgreSQL store has loaded it: a process on SQLite never pays for it."""
    psycopg = sys.modules.get("psycopg")
    return (sqlite3.Error,) if psycopg is None else (sqlite3.Error, psycopg.Error)


def is_url(target: str | Path) -> bool:
    """Whether ``target`` names a PostgreSQL database rather than a SQLite file."""
    return str(target).startswith(("postgresql://", "postgres://"))


def redacted(target: str | Path) -> str:
    """``target`` fit for a log or a message: a URL's password replaced by ``***``."""
    parts = urlsplit(str(target))
    if not is_url(target) or parts.password is None:
        return str(target)
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")))


# --- the two dialects --------------------------------------------------------------------------


@dataclass(frozen=True)
class Dialect:
    """The differences between the two SQL dialects, both forms side by side. Everything else is
    written once: ``?`` placeholders, ``INSERT ... ON CONFLICT``, ``RETURNING``, ``CASE``."""

    name: str  # "sqlite" | "postgresql"

    @property
    def postgres(self) -> bool:
        return self.name == "postgresql"

    def json_text(self, column: str, key: str) -> str:
        """The text of ``key`` in the JSON object stored (as text) in ``column``."""
        return f"(({column})::json ->> '{key}')" if self.postgres else f"json_extract({column}, '$.{key}')"

    def floor_int(self, expr: str) -> str:
        """``floor(expr)`` as an integer (SQLite's CAST truncates; PostgreSQL's rounds)."""
        return f"CAST(FLOOR({expr}) AS BIGINT)" if self.postgres else f"CAST({expr} AS INTEGER)"

    def utc_day(self, epoch_seconds: str) -> str:
        """``YYYY-MM-DD`` (UTC) of an epoch-seconds column."""
        if self.postgres:
            return f"to_char(to_timestamp({epoch_seconds}) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
        return f"date({epoch_seconds}, 'unixepoch')"

    def epoch_now(self) -> str:
        """The store's clock in epoch seconds: one clock for every host of a shared store."""
        if self.postgres:
            return "CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS DOUBLE PRECISION)"
        return "((julianday('now') - 2440587.5) * 86400.0)"

    def ddl(self, script: str) -> str:
        """A migration as this dialect runs it. Migrations are written in SQLite's words, the
        first store; PostgreSQL gets the types that keep their meaning: 64-bit integers (epoch
        milliseconds overflow its INTEGER), DOUBLE PRECISION (its REAL is 4 bytes: six digits of
        a price) and identity keys for ``INTEGER PRIMARY KEY``."""
        if not self.postgres:
            return script
        identity = "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"
        script = re.sub(r"\bINTEGER\s+PRIMARY\s+KEY(\s+AUTOINCREMENT)?\b", identity, script, flags=re.I)
        script = re.sub(r"\bINTEGER\b", "BIGINT", script, flags=re.I)
        script = re.sub(r"\bREAL\b", "DOUBLE PRECISION", script, flags=re.I)
        script = re.sub(r"\bBLOB\b", "BYTEA", script, flags=re.I)
        return re.sub(r"\)\s*WITHOUT\s+ROWID", ")", script, flags=re.I)

    def sql(self, statement: str) -> str:
        """The statement with this dialect's placeholders (psycopg's ``%s``; ``%`` doubled)."""
        return _pyformat(statement) if self.postgres else statement


SQLITE = Dialect("sqlite")
POSTGRES = Dialect("postgresql")


@lru_cache(maxsize=4096)
def _pyformat(statement: str) -> str:
    """``?`` outside quoted text becomes ``%s``; a literal ``%`` becomes ``%%`` (cached: the
    statements are a small, fixed set)."""
    out, quote = [], ""
    for ch in statement:
        if quote:
            out.append("%%" if ch == "%" else ch)
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
            out.append(ch)
        elif ch == "?":
            out.append("%s")
        else:
            out.append("%%" if ch == "%" else ch)
    return "".join(out)


def describe_migration(script: str) -> str:
    """One line saying what a migration does, each statement's verb and object, for
    ``tvgw migrate``: ``CREATE TABLE marks; CREATE INDEX exits_open``."""
    parts = []
    for statement in _statements(script):
        words = statement.split()
        verb = [w.upper() for w in words[:2]]
        if verb == ["ALTER", "TABLE"]:
            shown = 6  # ALTER TABLE t ADD COLUMN c
        elif verb[0] in {"CREATE", "DROP"}:
            shown = 4 if verb[1] == "UNIQUE" else 3
        else:
            shown = 3 if verb[0] == "INSERT" else 2
        parts.append(" ".join(words[:shown]).split("(")[0])
    return "; ".join(parts)


def _statements(script: str) -> list[str]:
    """Split a migration script (no semicolons inside statements in our migrations)."""
    return [s.strip() for s in script.split(";") if s.strip()]


# --- the store ---------------------------------------------------------------------------------


@dataclass
class _Job:
    """One caller's unit of work in a group commit."""

    fn: Callable[[Connection], Any]
    result: Any = None
    error: BaseException | None = None
    finished: bool = False


class Storage:
    """The store every gunicorn worker, thread and host shares: ``Storage(path)`` is a SQLite
    file, ``Storage("postgresql://...")`` a PostgreSQL database (the constructor picks).

    Writes go through :meth:`transaction` (or :meth:`write_batched`): one writer at a time for
    the whole store, so a read-then-write inside it never races another worker's."""

    dialect: ClassVar[Dialect] = SQLITE
    #: True when several hosts may share the store (a crash's leftovers may belong to a live host).
    shared: ClassVar[bool] = False

    def __new__(cls, target: str | Path, **kwargs: Any) -> Storage:
        if cls is Storage:
            if is_url(target):
                from storage.postgres import PostgresStorage

                return super().__new__(PostgresStorage)
            return super().__new__(SqliteStorage)
        return super().__new__(cls)

    def __init__(self, target: str | Path, **kwargs: Any) -> None:
        self.target = str(target)
        self._write_lock = threading.Lock()
        self._batch_cv = threading.Condition()
        self._batch_queue: list[_Job] = []
        self._batch_leader = False

    # --- what each store provides ------------------------------------------------------------
    @property
    def conn(self) -> Connection:
        """A connection for reads (and single autocommitted statements) on this thread."""
        raise NotImplementedError

    def transaction(self) -> AbstractContextManager[Connection]:
        """A write transaction: BEGIN (taking the store's one writer lock) ... COMMIT, or
        ROLLBACK on error. Not re-entrant."""
        raise NotImplementedError

    def close(self) -> None:
        """Release this thread's (SQLite) or this process's (PostgreSQL) connections."""
        raise NotImplementedError

    def schema_version(self) -> int:
        raise NotImplementedError

    def _set_schema_version(self, conn: Connection, version: int) -> None:
        raise NotImplementedError

    def table_names(self) -> set[str]:
        raise NotImplementedError

    def describe(self) -> str:
        """The store for logs and messages (a URL's password left out)."""
        return redacted(self.target)

    def rdb_url(self) -> str | None:
        """The store as an SQLAlchemy URL, for a library that keeps its own tables beside ours
        (Optuna's RDB storage: every host's tuning trials in one study), or None on SQLite,
        whose studies stay in a file of their own."""
        if not self.dialect.postgres:
            return None
        return "postgresql+psycopg://" + self.target.split("://", 1)[1]

    # --- shared by both ------------------------------------------------------------------------
    def write_batched(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(conn)`` in a write transaction shared with other threads' work (group commit).

        The write lock is one queue for every worker, so the time it is held caps throughput.
        Threads of this process that arrive while a transaction is running queue up; the next
        one to go runs all queued work in *one* transaction, each piece inside its own
        SAVEPOINT (an exception undoes only that piece and is re-raised in its own thread).
        Every caller returns only after the COMMIT that made its work durable. ``fn`` runs on
        the batch leader's thread: it must use the ``conn`` it is given.
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
                        conn.execute("ROLLBACK TO SAVEPOINT job")
                        job.error = exc
                    conn.execute("RELEASE SAVEPOINT job")
        except BaseException as exc:
            for job in batch:
                job.error = job.error or exc
            raise
        finally:
            for job in batch:
                job.finished = True

    def pending_migrations(self) -> list[tuple[int, str]]:
        """``(version, what it does)`` for each migration this store has not had yet."""
        current = self.schema_version()
        self._refuse_newer(current)
        return [(v + 1, describe_migration(MIGRATIONS[v])) for v in range(current, SCHEMA_VERSION)]

    def migrate(self) -> int:
        """Create or upgrade the schema to :data:`SCHEMA_VERSION`; safe to call from every worker
        and host at once (the writer lock makes one of them do it). Refuses a newer store."""
        with self.transaction() as conn:
            current = self.schema_version_in(conn)
            self._refuse_newer(current)
            for version in range(current, SCHEMA_VERSION):
                for statement in _statements(self.dialect.ddl(MIGRATIONS[version])):
                    conn.execute(statement)
                self._set_schema_version(conn, version + 1)
        return SCHEMA_VERSION

    def schema_version_in(self, conn: Connection) -> int:
        """The schema version as the transaction ``conn`` sees it."""
        raise NotImplementedError

    def _refuse_newer(self, current: int) -> None:
        if current > SCHEMA_VERSION:
            raise SchemaTooNewError(
                f"{self.describe()} has schema version {current}, newer than this tvgw "
                f"({SCHEMA_VERSION}): upgrade tvgw, or set TVGW_DATABASE to another store"
            )

    def missing_tables(self) -> list[str]:
        """Tables the schema defines that this store lacks (for /healthz)."""
        present = self.table_names()
        return sorted(t for t in TABLES if t not in present)

    def ping(self) -> bool:
        return bool(self.conn.execute("SELECT 1").fetchone()[0] == 1)


class SqliteStorage(Storage):
    """A SQLite database file shared by every gunicorn worker and thread of one machine.

    Each thread gets its own connection (sqlite3 connections must not cross threads). Writes
    go through :meth:`transaction`, which takes the write lock up front (``BEGIN IMMEDIATE``)
    so that two workers never deadlock upgrading a read lock; the busy timeout makes the loser
    wait instead of failing.
    """

    def __init__(self, target: str | Path, *, synchronous: str = "FULL", busy_timeout_ms: int = 10_000):
        super().__init__(target)
        self.path = Path(target)
        self.synchronous = synchronous
        self.busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        self._lock_fd: int | None = None
        self._lock_pid: int | None = None
        if str(self.path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)

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
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        return conn

    def close(self) -> None:
        """Close this thread's connection (other threads close their own)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

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

    def schema_version(self) -> int:
        return self.schema_version_in(self.conn)

    def schema_version_in(self, conn: Connection) -> int:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])

    def _set_schema_version(self, conn: Connection, version: int) -> None:
        conn.execute(f"PRAGMA user_version = {int(version)}")

    def table_names(self) -> set[str]:
        rows = self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        return {str(r[0]) for r in rows}


#: What every storage function takes: the :class:`Storage` (a read, or a write in a transaction
#: of its own) or the connection of the caller's open transaction (a write that must commit with
#: the rest of it, such as an alert's bar with the alert). One convention, no twin functions.
Db = Storage | Connection


def reading(db: Db) -> Connection:
    """The connection to read through."""
    return db.conn if isinstance(db, Storage) else db


@contextmanager
def writing(db: Db) -> Iterator[Connection]:
    """A transaction of its own for a :class:`Storage`; the caller's for a connection."""
    if isinstance(db, Storage):
        with db.transaction() as conn:
            yield conn
    else:
        yield db


def dialect_of(db: Db) -> Dialect:
    """The SQL dialect ``db`` speaks (for the few statements whose words differ)."""
    if isinstance(db, Storage):
        return db.dialect
    return SQLITE if isinstance(db, sqlite3.Connection) else POSTGRES


def query(db: Db, sql: str, params: Params = ()) -> list[Any]:
    """Every row ``sql`` selects."""
    return list(reading(db).execute(sql, params).fetchall())


def query_one(db: Db, sql: str, params: Params = ()) -> Any:
    """The first row ``sql`` selects, or None."""
    return reading(db).execute(sql, params).fetchone()


def where(*terms: tuple[str, Any], also: Sequence[str] = ()) -> tuple[str, list[Any]]:
    """The ``WHERE`` clause of a filtered listing (with its leading space; empty when nothing
    filters) and its parameters: each term is a condition with one ``?`` and its value, left out
    when the value is None or an empty string (that filter was not asked for; 0 is a value);
    ``also`` are conditions without parameters. One way for every listing to build its filter."""
    asked = [(condition, value) for condition, value in terms if value is not None and value != ""]
    conditions = [*(condition for condition, _ in asked), *also]
    return (" WHERE " + " AND ".join(conditions) if conditions else ""), [value for _, value in asked]


def insert_id(conn: Connection, sql: str, params: Params) -> int:
    """Run ``INSERT ... RETURNING id`` and return the new row's id (both stores; every row is
    fetched, so SQLite's statement is finished before the transaction commits)."""
    rows = conn.execute(sql, params).fetchall()
    return int(rows[0][0])
