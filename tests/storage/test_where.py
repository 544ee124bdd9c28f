"""``storage.database.where``: the one filter builder of the listings (models, model events,
predictions). A filter not asked for (None, or an empty query-string value) is left out; a 0
is a value and filters."""

from __future__ import annotations

from pathlib import Path

from storage import Storage
from storage.database import query, where
from tests.conftest import store_target


def test_filters_not_asked_for_are_left_out_and_zero_is_a_value() -> None:
    assert where(("symbol = ?", None), ("timeframe = ?", "")) == ("", [])
    assert where(("symbol = ?", "BTC/USDT"), ("id > ?", 0), ("at >= ?", None), also=["done IS NULL"]) == (
        " WHERE symbol = ? AND id > ? AND done IS NULL",
        ["BTC/USDT", 0],
    )


def test_the_clause_and_its_parameters_select_the_rows_asked_for(tmp_path: Path) -> None:
    storage = Storage(store_target(tmp_path, "db.sqlite"))
    with storage.transaction() as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, symbol TEXT NOT NULL, done REAL)")
        for n, (symbol, done) in enumerate([("A", None), ("B", 1.0), ("A", 2.0), ("A", None)], start=1):
            conn.execute("INSERT INTO t (id, symbol, done) VALUES (?, ?, ?)", (n, symbol, done))
    clause, params = where(("symbol = ?", "A"), ("id > ?", 1), ("done = ?", None), also=["done IS NULL"])
    assert [r["id"] for r in query(storage, f"SELECT id FROM t{clause} ORDER BY id", params)] == [4]
    clause, params = where(("symbol = ?", ""), ("id > ?", 0))
    assert [r["id"] for r in query(storage, f"SELECT id FROM t{clause} ORDER BY id", params)] == [1, 2, 3, 4]
    storage.close()
