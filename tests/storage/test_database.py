"""The storage layer on the selected store (a real SQLite file, or a PostgreSQL schema with
``--store=postgresql``): schema versions, group commit, LIKE escaping."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from storage import SCHEMA_VERSION, Connection, Storage
from storage.database import SchemaTooNewError, query, query_one
from storage.sentiment import history, put_cached
from tests.conftest import runs_on_postgres, store_target


def test_migrate_is_idempotent_and_refuses_a_newer_schema(tmp_path: Path) -> None:
    storage = Storage(store_target(tmp_path, "db.sqlite"))
    assert storage.pending_migrations()[0][0] == 1
    assert storage.migrate() == SCHEMA_VERSION
    assert storage.migrate() == SCHEMA_VERSION
    assert storage.pending_migrations() == []
    if not runs_on_postgres():
        assert query_one(storage, "PRAGMA journal_mode")[0] == "wal"
    with storage.transaction() as conn:
        storage._set_schema_version(conn, SCHEMA_VERSION + 1)
    with pytest.raises(SchemaTooNewError, match="newer than this tvgw"):
        storage.migrate()
    with pytest.raises(SchemaTooNewError, match="upgrade tvgw"):
        storage.pending_migrations()


def test_missing_tables_are_reported(tmp_path: Path) -> None:
    storage = Storage(store_target(tmp_path, "db.sqlite"))
    storage.migrate()
    assert storage.missing_tables() == []
    storage.conn.execute("DROP TABLE sentiment_cache")
    assert storage.missing_tables() == ["sentiment_cache"]


def test_group_commit_isolates_a_failing_job(tmp_path: Path) -> None:
    storage = Storage(store_target(tmp_path, "db.sqlite"))
    storage.migrate()
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def job(n: int) -> None:
        def write(conn: Connection) -> int:
            conn.execute(
                "INSERT INTO sentiment_cache (key, fetched_at, payload) VALUES (?, 0, '{}')", (f"k{n}",)
            )
            if n == 3:
                raise ValueError("job 3 fails")
            return n

        barrier.wait()
        try:
            assert storage.write_batched(write) == n
        except ValueError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=job, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    reader = Storage(store_target(tmp_path, "db.sqlite"))
    keys = {r[0] for r in query(reader, "SELECT key FROM sentiment_cache")}
    assert keys == {f"k{n}" for n in range(8) if n != 3}  # only the failing job was undone
    assert [str(e) for e in errors] == ["job 3 fails"]


def test_history_prefix_is_literal(tmp_path: Path) -> None:
    storage = Storage(store_target(tmp_path, "db.sqlite"))
    storage.migrate()
    put_cached(storage, "a_b%c:1", {"v": 1})
    put_cached(storage, "aXbYc:2", {"v": 2})  # would match if _ and % were wildcards
    assert [payload for _, payload in history(storage, "a_b%c")] == [{"v": 1}]
