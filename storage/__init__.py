"""The store: the schema and every SQL statement of the project live in this package.

``Storage(target)`` owns the connections: a SQLite file (one per thread, WAL mode, a busy
timeout) or, for ``postgresql://`` URLs, a pooled PostgreSQL database that several gateway hosts
share. The modules beside it hold the statements for one kind of record each (alerts, orders,
candles, predictions, models, sentiment); they run unchanged on both stores. Nothing outside this
package writes SQL.

One calling convention: a function takes ``db``, the :class:`Storage` or the connection of the
caller's open transaction (:data:`storage.database.Db`; typed :class:`Connection` wherever it is
passed on): reads go through :func:`~storage.database.reading`, writes through
:func:`~storage.database.writing` (a transaction of their own, or the caller's). There are no
twin functions for the two cases, nor for the two stores.
"""

from storage.database import SCHEMA_VERSION, Connection, Db, Storage

__all__ = ["SCHEMA_VERSION", "Connection", "Db", "Storage"]
