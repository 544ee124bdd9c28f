"""SQLite storage: the schema and every SQL statement of the project live in this package.

``Storage`` owns the connection (one per thread, WAL mode, a busy timeout); the modules beside
it hold the statements for one kind of record each (alerts, orders, candles, predictions,
models, sentiment). Nothing outside this package writes SQL.

One calling convention: a function takes ``db``, the :class:`Storage` or the connection of the
caller's open transaction (:data:`storage.database.Db`): reads go through
:func:`~storage.database.reading`, writes through :func:`~storage.database.writing` (a
transaction of their own, or the caller's). There are no twin functions for the two cases.
"""

from storage.database import SCHEMA_VERSION, Db, Storage

__all__ = ["SCHEMA_VERSION", "Db", "Storage"]
