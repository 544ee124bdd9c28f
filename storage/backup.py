"""Online backup and restore of either store, while the gateway runs.

* SQLite: the online backup API (``sqlite3.Connection.backup``) copies a consistent snapshot of
  the file page by page under a read transaction; in WAL mode the gateway's writers are not held
  up, and the copy includes every transaction committed before it began. A restore runs the same
  API the other way, into the target's connection, under its write lock.
* PostgreSQL: ``pg_dump`` (custom format) of the schema the store uses, one repeatable-read
  snapshot; a restore drops the store's tables and loads the archive with ``pg_restore`` in one
  transaction (a failed restore leaves the store empty, never half-loaded).

A restore refuses to overwrite a store that holds data (a live store) unless ``force`` is given,
and refuses a backup made by a newer tvgw than this one.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from storage.database import SCHEMA_VERSION, SchemaTooNewError, Storage, query_one

__all__ = ["BackupError", "BackupInfo", "backup", "restore"]


class BackupError(RuntimeError):
    """A backup or restore that could not be made; the message says what to do."""


@dataclass(frozen=True)
class BackupInfo:
    """What a backup holds: its file, schema version, and how many alerts and orders."""

    path: Path
    schema_version: int
    alerts: int
    orders: int


def backup(storage: Storage, destination: str | Path) -> BackupInfo:
    """Write a consistent copy of ``storage`` to ``destination`` (a new file) while it runs."""
    target = Path(destination)
    if target.exists():
        raise BackupError(f"{target} exists: choose a new file (a backup never overwrites one)")
    target.parent.mkdir(parents=True, exist_ok=True)
    if storage.dialect.postgres:
        schema = _current_schema(storage)
        _run(_tool("pg_dump"), "--format=custom", "--no-owner", "--no-privileges", f"--schema={schema}",
             f"--file={target}", f"--dbname={storage.target}")  # fmt: skip
    else:
        source = storage.conn
        assert isinstance(source, sqlite3.Connection)
        copy = sqlite3.connect(target)
        try:
            source.backup(copy)
        finally:
            copy.close()
    return inspect(target)


def restore(storage: Storage, source: str | Path, *, force: bool = False) -> BackupInfo:
    """Replace ``storage``'s content with the backup ``source``. Refuses a store that holds data
    unless ``force``, and a backup from a newer tvgw; the caller migrates afterwards."""
    info = inspect(source)
    if info.schema_version > SCHEMA_VERSION:
        raise SchemaTooNewError(
            f"{source} was made by a newer tvgw (schema version {info.schema_version}, this tvgw "
            f"has {SCHEMA_VERSION}): restore it with that version"
        )
    held = _alerts_held(storage)
    if held is not None and not force:
        raise BackupError(
            f"{storage.describe()} already holds a tvgw store ({held} alerts): restoring would replace it. "
            "Stop the gateway, then run again with --force to overwrite it (or restore into a new store)"
        )
    if storage.dialect.postgres:
        _restore_dump(storage, Path(source))
    else:
        target = storage.conn
        assert isinstance(target, sqlite3.Connection)
        backup_file = sqlite3.connect(f"file:{Path(source)}?mode=ro", uri=True)
        try:
            backup_file.backup(target)  # under the target's write lock, taken by the API itself
        finally:
            backup_file.close()
    return info


def _restore_dump(storage: Storage, source: Path) -> None:
    """Drop the store's tables, then load the archive (its schema itself excepted: the store's
    already exists) in one transaction."""
    schema = _current_schema(storage)
    dumped = _dump_schema(source)
    if dumped != schema:
        raise BackupError(
            f"{source} holds schema {dumped!r} and the store uses {schema!r}: restore into a store "
            f"whose search_path is {dumped!r}"
        )
    with storage.transaction() as conn:
        for table in sorted(storage.table_names()):
            conn.execute(f'DROP TABLE IF EXISTS "{table}" CASCADE')
    entries = [
        line for line in _run(_tool("pg_restore"), "--list", str(source)).splitlines()
        if not line.startswith(";") and " SCHEMA " not in line
    ]  # fmt: skip
    with tempfile.NamedTemporaryFile("w", suffix=".list") as listing:
        listing.write("\n".join(entries) + "\n")
        listing.flush()
        _run(_tool("pg_restore"), "--no-owner", "--no-privileges", "--single-transaction",
             f"--use-list={listing.name}", f"--dbname={storage.target}", str(source))  # fmt: skip


def inspect(path: str | Path) -> BackupInfo:
    """What the backup file ``path`` holds (a SQLite copy or a pg_dump archive)."""
    file = Path(path)
    if not file.is_file():
        raise BackupError(f"{file}: no such backup file")
    if file.read_bytes()[:5] == b"PGDMP":
        return _inspect_dump(file)
    try:
        conn = sqlite3.connect(f"file:{file}?mode=ro", uri=True)
        try:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            alerts = int(conn.execute("SELECT COUNT(*) FROM alerts").fetchone()[0])
            orders = int(conn.execute("SELECT COUNT(*) FROM orders").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{file} is not a tvgw backup ({exc})") from exc
    return BackupInfo(file, version, alerts, orders)


def _inspect_dump(file: Path) -> BackupInfo:
    """A pg_dump archive's schema version and counts, read by pg_restore as SQL text (the data
    of three tables only; the archive is not loaded anywhere)."""
    text = _run(_tool("pg_restore"), "--data-only", "--table=tvgw_schema", "--table=alerts",
                "--table=orders", "--file=-", str(file))  # fmt: skip
    version, counts, table = 0, {"alerts": 0, "orders": 0}, None
    for line in text.splitlines():
        if line.startswith("COPY "):
            table = line.split()[1].split(".")[-1]
        elif line == "\\.":
            table = None
        elif table == "tvgw_schema":
            version = int(line.split("\t")[0])
        elif table in counts:
            counts[table] += 1
    return BackupInfo(file, version, counts["alerts"], counts["orders"])


def _dump_schema(file: Path) -> str:
    """The schema a pg_dump archive of one schema holds (from its table of contents)."""
    for line in _run(_tool("pg_restore"), "--list", str(file)).splitlines():
        parts = line.split()
        if not line.startswith(";") and "TABLE" in parts and "DATA" not in parts:
            return parts[parts.index("TABLE") + 1]
    raise BackupError(f"{file} holds no tables: not a tvgw backup")


def _alerts_held(storage: Storage) -> int | None:
    """How many alerts the store holds, or None when it holds no tvgw schema at all."""
    if storage.schema_version() == 0:
        return None
    row = query_one(storage, "SELECT COUNT(*) FROM alerts")
    return int(row[0])


def _current_schema(storage: Storage) -> str:
    return str(query_one(storage, "SELECT current_schema()")[0])


def _tool(name: str) -> str:
    """``pg_dump``/``pg_restore``: on PATH, else the newest of Debian's server packages."""
    found = shutil.which(name)
    if found is None:
        candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), key=lambda p: int(p.parts[-3]))
        if not candidates:
            raise BackupError(f"{name} is not installed (Debian: apt-get install postgresql-client)")
        found = str(candidates[-1])
    return found


def _run(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BackupError(f"{Path(argv[0]).name} failed: {done.stderr.strip() or done.returncode}")
    return done.stdout
