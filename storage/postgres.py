"""PostgreSQL behind the storage package's one calling convention (psycopg 3, pooled).

Selected by a ``TVGW_DATABASE=postgresql://...`` URL (``?options=-csearch_path%3Dname`` picks a
schema other than ``public``). What the rest of the package sees is the same as on SQLite:

* ``?`` placeholders (rewritten to psycopg's ``%s`` once per statement text, cached);
* rows readable by column name and by position, ``dict(row)`` (:class:`PgRow`);
* floats for every number PostgreSQL computes as ``numeric`` (``SUM`` of integers, ``AVG``),
  Python booleans stored as 0/1 in the integer columns SQLite's schema declares;
* one writer at a time for the whole store: a write transaction first takes a transaction-scoped
  advisory lock keyed on the schema, exactly as SQLite's ``BEGIN IMMEDIATE`` takes the file's
  write lock. It is released by COMMIT, ROLLBACK, or the server when the host holding it dies.

Reads outside a transaction borrow a pooled connection for one statement (autocommit), so a
short-lived thread never keeps a connection, and a process never holds more than the pool's size.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg.adapt import Dumper
from psycopg.types.numeric import FloatLoader
from psycopg_pool import ConnectionPool

from storage.database import POSTGRES, Connection, Params, Storage

__all__ = ["LOCK_CLASS", "PgConnection", "PgRow", "PostgresStorage"]

#: The first key of every advisory lock tvgw takes ("tv"); the second is the schema's hash.
LOCK_CLASS = 0x7476

#: Connections per process: gunicorn's threads, the background jobs and the engine's account
#: threads share it (a borrower waits for a free one, up to the pool's timeout).
POOL_SIZE = 12


class PgRow:
    """A row by column name or position, like ``sqlite3.Row`` (``dict(row)`` works)."""

    __slots__ = ("_index", "_values")

    def __init__(self, values: Sequence[Any], index: dict[str, int]):
        self._values = values
        self._index = index

    def __getitem__(self, key: int | str | slice) -> Any:
        if isinstance(key, str):
            return self._values[self._index[key]]
        return self._values[key]

    def keys(self) -> list[str]:
        return list(self._index)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __eq__(self, other: object) -> bool:
        return tuple(self._values) == (tuple(other) if isinstance(other, PgRow | tuple) else other)

    def __hash__(self) -> int:
        return hash(tuple(self._values))

    def __repr__(self) -> str:
        return f"PgRow({dict(zip(self._index, self._values, strict=False))!r})"


def _row_factory(cursor: Any) -> Any:
    description = cursor.description
    if description is None:
        return tuple
    index: dict[str, int] = {}
    for i, column in enumerate(description):
        index.setdefault(column.name, i)  # the first of two same-named columns, as sqlite3.Row
    return lambda values: PgRow(values, index)


class _BoolAsInteger(Dumper):
    """``True``/``False`` into the 0/1 integer columns the one schema declares."""

    oid = psycopg.adapters.types["int8"].oid

    def dump(self, obj: bool) -> bytes:
        return b"1" if obj else b"0"


class _Result:
    """The rows of a statement run on a borrowed connection (already returned to the pool)."""

    def __init__(self, rows: list[Any], rowcount: int):
        self._rows = rows
        self.rowcount = rowcount
        self._next = 0

    def fetchone(self) -> Any:
        if self._next >= len(self._rows):
            return None
        self._next += 1
        return self._rows[self._next - 1]

    def fetchall(self) -> list[Any]:
        rows, self._next = self._rows[self._next :], len(self._rows)
        return rows

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fetchall())


class PgConnection:
    """A psycopg connection speaking the package's convention (``?`` placeholders)."""

    dialect = POSTGRES

    def __init__(self, raw: psycopg.Connection[Any]):
        self.raw = raw

    def execute(self, sql: str, parameters: Params = (), /) -> Any:
        return self.raw.execute(POSTGRES.sql(sql), parameters)

    def executemany(self, sql: str, parameters: Any, /) -> Any:
        cursor = self.raw.cursor()
        cursor.executemany(POSTGRES.sql(sql), parameters)
        return cursor


class _PooledReader:
    """``Storage.conn`` on PostgreSQL: each statement on a connection borrowed for it alone."""

    dialect = POSTGRES

    def __init__(self, storage: PostgresStorage):
        self._storage = storage

    def execute(self, sql: str, parameters: Params = (), /) -> _Result:
        with self._storage.pool().connection() as raw:
            cursor = raw.execute(POSTGRES.sql(sql), parameters)
            return _Result(cursor.fetchall() if cursor.description else [], cursor.rowcount)

    def executemany(self, sql: str, parameters: Any, /) -> _Result:
        with self._storage.pool().connection() as raw:
            cursor = raw.cursor()
            cursor.executemany(POSTGRES.sql(sql), parameters)
            return _Result([], cursor.rowcount)


class PostgresStorage(Storage):
    """A PostgreSQL database shared by every worker of every gateway host."""

    dialect = POSTGRES
    shared = True

    def __init__(self, target: str | Path, *, busy_timeout_ms: int = 10_000, **_sqlite_only: Any):
        super().__init__(target)
        self.url = str(target)
        #: How long a writer waits for the store's writer lock before failing (SQLite's busy timeout).
        self.busy_timeout_ms = busy_timeout_ms
        self._pool: ConnectionPool | None = None
        self._pool_pid: int | None = None
        self._pool_lock = threading.Lock()
        self._reader = _PooledReader(self)

    def _configure(self, raw: psycopg.Connection[Any]) -> None:
        raw.row_factory = _row_factory
        raw.adapters.register_loader("numeric", FloatLoader)
        raw.adapters.register_dumper(bool, _BoolAsInteger)
        raw.execute(f"SET lock_timeout = {int(self.busy_timeout_ms)}")

    def pool(self) -> ConnectionPool:
        """This process's pool, opened on first use (and again in a forked child: connections
        must not cross a fork, so a gunicorn worker never uses its master's)."""
        with self._pool_lock:
            if self._pool is None or self._pool_pid != os.getpid():
                self._pool = ConnectionPool(
                    self.url, min_size=1, max_size=POOL_SIZE, kwargs={"autocommit": True},
                    configure=self._configure, open=True, name=f"tvgw-{os.getpid()}",
                )  # fmt: skip
                self._pool_pid = os.getpid()
            return self._pool

    @property
    def conn(self) -> Connection:
        return self._reader

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """BEGIN, the store's writer lock, then the caller's statements; COMMIT or ROLLBACK.

        The thread lock keeps this process's writers from holding several pooled connections
        while they wait for the one writer lock."""
        with self._write_lock, self.pool().connection() as raw:
            conn = PgConnection(raw)
            raw.execute("BEGIN")
            try:
                raw.execute("SELECT pg_advisory_xact_lock(%s, hashtext(current_schema()))", (LOCK_CLASS,))
                yield conn
            except BaseException:
                if not raw.closed:
                    raw.execute("ROLLBACK")
                raise
            raw.execute("COMMIT")

    def close(self) -> None:
        """Close this process's pool (a later use opens a new one)."""
        with self._pool_lock:
            if self._pool is not None and self._pool_pid == os.getpid():
                self._pool.close()
            self._pool = None

    def schema_version(self) -> int:
        return self.schema_version_in(self.conn)

    def schema_version_in(self, conn: Connection) -> int:
        """The version in ``tvgw_schema`` (0 before the first migration: no such table)."""
        if conn.execute("SELECT to_regclass('tvgw_schema')").fetchone()[0] is None:
            return 0
        row = conn.execute("SELECT version FROM tvgw_schema").fetchone()
        return 0 if row is None else int(row[0])

    def _set_schema_version(self, conn: Connection, version: int) -> None:
        conn.execute("CREATE TABLE IF NOT EXISTS tvgw_schema (version BIGINT NOT NULL)")
        conn.execute("DELETE FROM tvgw_schema")
        conn.execute("INSERT INTO tvgw_schema (version) VALUES (?)", (version,))

    def table_names(self) -> set[str]:
        rows = self.conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        ).fetchall()
        return {str(r[0]) for r in rows}
