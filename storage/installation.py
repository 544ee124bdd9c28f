"""This installation's id: drawn once per database and kept.

It is part of every client order id the gateway sends, so a fresh database trading the same
exchange account never sends an id an earlier database used (the exchange would answer with
that order, and the fresh book would take its fill for its own).
"""

from __future__ import annotations

import secrets
import string
import time

from storage.database import Db, query_one, writing

__all__ = ["installation_id"]

_ALPHABET = string.ascii_lowercase + string.digits


def installation_id(db: Db) -> str:
    """Six lower-case letters and digits, the same for every worker and host of one database."""
    row = query_one(db, "SELECT id FROM installation ORDER BY created_at, id LIMIT 1")
    if row is not None:
        return str(row["id"])
    drawn = "".join(secrets.choice(_ALPHABET) for _ in range(6))
    with writing(db) as conn:
        if conn.execute("SELECT 1 FROM installation").fetchone() is None:
            conn.execute("INSERT INTO installation (id, created_at) VALUES (?, ?)", (drawn, time.time()))
        row = conn.execute("SELECT id FROM installation ORDER BY created_at, id LIMIT 1").fetchone()
    return str(row["id"])
