"""End to end against a real ``gunicorn wsgi:app`` with the shipped config and two workers."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import LiveGateway, db_rows, sample_alert, start_gateway

pytestmark = pytest.mark.slow


def query(db: str, sql: str) -> list[Any]:
    return db_rows(db, sql)


def test_sample_alert_gives_an_executed_paper_order(live_gateway: LiveGateway) -> None:
    response = live_gateway.post(sample_alert(), headers={"Content-Type": "text/plain"})
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "executed"
    (order,) = query(live_gateway.database, f"SELECT * FROM orders WHERE alert_id = {body['alert_id']}")
    assert (order["symbol"], order["side"], order["status"], order["filled"]) == (
        "BTC/USDT",
        "buy",
        "filled",
        0.01,
    )
    assert f"alert id={body['alert_id']} status=executed" in live_gateway.log()


def test_concurrent_duplicates_across_two_workers_place_one_order(live_gateway: LiveGateway) -> None:
    alert = json.dumps(sample_alert(order_id="dup-race"))
    barrier = threading.Barrier(16)

    def fire(_: int) -> dict[str, Any]:
        barrier.wait()
        return requests.post(live_gateway.url + "/webhook", data=alert, timeout=10).json()

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(fire, range(16)))
    statuses = sorted(a["status"] for a in answers)
    assert statuses.count("executed") == 1 and statuses.count("duplicate") == 15
    assert len(query(live_gateway.database, "SELECT * FROM orders")) == 1
    assert len(query(live_gateway.database, "SELECT * FROM alerts")) == 16
    pids = {
        int(line.split("pid: ")[1].rstrip(")"))
        for line in live_gateway.log().splitlines()
        if "Booting worker with pid" in line
    }
    assert len(pids) == 2


def test_sigkill_under_load_loses_no_acknowledged_alert(tmp_path: Path) -> None:
    gateway = start_gateway(tmp_path)
    acked: dict[int, str] = {}
    stop = threading.Event()
    lock = threading.Lock()
    counter = iter(range(1_000_000))

    def client() -> None:
        session = requests.Session()
        while not stop.is_set():
            n = next(counter)
            alert = sample_alert(id=f"load-{n}", action="buy" if n % 2 else "sell", contracts=0.001)
            try:
                response = session.post(gateway.url + "/webhook", data=json.dumps(alert), timeout=5)
            except requests.RequestException:
                continue  # the kill cut this one off: it was never acknowledged
            if 200 <= response.status_code < 300:
                with lock:
                    acked[response.json()["alert_id"]] = response.json()["status"]

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while len(acked) < 150 and time.monotonic() < deadline:
        time.sleep(0.05)  # gunicorn (another process) has not acknowledged 150 alerts yet
    gateway.kill()
    stop.set()
    for t in threads:
        t.join(timeout=10)
    assert len(acked) >= 150, "the load never got going"

    restarted = start_gateway(tmp_path, port=int(gateway.url.rsplit(":", 1)[1]))
    try:
        alerts = {r["id"]: r for r in query(restarted.database, "SELECT id, status FROM alerts")}
        missing = [i for i in acked if i not in alerts]
        assert not missing, f"acknowledged alerts missing after SIGKILL: {missing[:10]}"
        assert all(alerts[i]["status"] == s for i, s in acked.items())
        orders = query(restarted.database, "SELECT * FROM orders")
        assert all(o["alert_id"] in alerts for o in orders), "an order without its alert"
        per_alert = query(
            restarted.database,
            "SELECT alert_id, COUNT(*) AS n FROM orders GROUP BY alert_id HAVING COUNT(*) > 1",
        )
        assert not per_alert, "an alert placed more than one order"
        assert not query(restarted.database, "SELECT * FROM orders WHERE status = 'pending'")
        assert not query(restarted.database, "SELECT * FROM alerts WHERE status = 'processing'")
        # The ledger agrees with the fills: nothing applied twice, nothing lost.
        (net,) = query(
            restarted.database,
            "SELECT COALESCE(SUM(CASE side WHEN 'buy' THEN filled ELSE -filled END), 0) FROM orders",
        )
        (pos,) = query(restarted.database, "SELECT COALESCE(SUM(amount), 0) FROM positions")
        assert net[0] == pytest.approx(pos[0], abs=1e-9)
        # And it still works.
        assert restarted.post(sample_alert(id="after-restart")).json()["status"] == "executed"
    finally:
        restarted.stop()
