"""Marks and equity are one truth for all gunicorn workers: whichever worker answers, it values
the book at the same stored market price (a real 2-worker gunicorn on one SQLite file)."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from tests.conftest import db_rows, sample_alert, seed_market, start_gateway

pytestmark = pytest.mark.slow

TOKEN = "marks-token"


def cash(database: str) -> float:
    return float(db_rows(database, "SELECT total FROM balances WHERE broker = 'paper'")[0][0])


def test_positions_equity_is_identical_on_every_worker(tmp_path: Path) -> None:
    gateway = start_gateway(tmp_path, TVGW_API_TOKEN=TOKEN)
    try:
        first = gateway.post(sample_alert(contracts=0.05, order_id="a")).json()
        assert first["status"] == "executed", first
        # The market moves: the current bar is replaced in the store (same open time).
        seed_market(gateway.database, {"BTC/USDT": 30300.0})
        second = gateway.post(sample_alert(contracts=0.01, price=30300.0, order_id="b")).json()
        assert second["status"] == "executed", second
        expected = cash(gateway.database) + 0.06 * 30300.0
        seen = set()
        for _ in range(24):  # new connections: the two workers share the accepts
            response = requests.get(
                gateway.url + "/api/positions", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
            )
            seen.add(round(response.json()["equity"], 6))
        assert seen == {round(expected, 6)}
    finally:
        gateway.stop()
