"""SQLite storage: the schema and every SQL statement of the project live in this package.

``Storage`` owns the connection (one per thread, WAL mode, a busy timeout); the modules beside
it hold the statements for one kind of record each (alerts, orders, candles, predictions,
models, sentiment). Nothing outside this package writes SQL.
"""

from storage.database import SCHEMA_VERSION, Storage

__all__ = ["SCHEMA_VERSION", "Storage"]
