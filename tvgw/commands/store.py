"""`tvgw migrate`, `tvgw backup`, `tvgw restore`, `tvgw prune`: the store's lifecycle, for SQLite
and PostgreSQL alike (``TVGW_DATABASE`` says which)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from tvgw.commands import add_command
from tvgw.commands.data import cli_settings

if TYPE_CHECKING:
    from storage import Storage


def register(sub: argparse._SubParsersAction, name: str) -> None:
    parser = add_command(sub, name)
    if name == "migrate":
        parser.add_argument("--dry-run", action="store_true", help="list the pending migrations only")
    elif name == "backup":
        parser.add_argument("file", help="the backup file to write (must not exist)")
    elif name == "restore":
        parser.add_argument("file", help="a file `tvgw backup` wrote")
        parser.add_argument(
            "--force", action="store_true", help="overwrite a store that holds data (stop the gateway first)"
        )
    parser.set_defaults(func=RUNS[name])


def _open() -> Storage:
    from storage import Storage

    settings = cli_settings()
    return Storage(settings.database, synchronous=settings.sqlite_synchronous)


def migrate(args: argparse.Namespace) -> int:
    from storage import SCHEMA_VERSION

    storage = _open()
    pending = storage.pending_migrations()
    print(f"{storage.describe()}: schema version {storage.schema_version()}, this tvgw has {SCHEMA_VERSION}")
    for version, what in pending:
        print(f"  pending {version}: {what}")
    if not pending:
        print("nothing to migrate")
    elif not args.dry_run:
        print(f"migrated to version {storage.migrate()}")
    storage.close()
    return 0


def backup(args: argparse.Namespace) -> int:
    from storage.backup import backup as make_backup

    storage = _open()
    info = make_backup(storage, args.file)
    print(
        f"backed up {storage.describe()} to {info.path}: schema version {info.schema_version}, "
        f"{info.alerts} alerts, {info.orders} orders"
    )
    storage.close()
    return 0


def restore(args: argparse.Namespace) -> int:
    from storage.backup import restore as restore_backup

    storage = _open()
    info = restore_backup(storage, args.file, force=args.force)
    version = storage.migrate()
    print(
        f"restored {info.path} into {storage.describe()}: {info.alerts} alerts, {info.orders} orders; "
        f"schema version {version}"
    )
    storage.close()
    return 0


def prune(args: argparse.Namespace) -> int:
    from storage.retention import prune as prune_store

    storage = _open()
    storage.migrate()
    done = prune_store(storage, cli_settings().retention.policy())
    print(
        f"pruned {storage.describe()}: {done.equity_snapshots} equity snapshots, {done.predictions} "
        f"resolved predictions, {done.notifications} notification keys, {done.alert_bodies} alert bodies, "
        f"{done.feed_marks} feed marks (heartbeats)"
    )
    storage.close()
    return 0


RUNS = {"migrate": migrate, "backup": backup, "restore": restore, "prune": prune}
