"""`tvgw backup` of a gateway under load, `tvgw restore` into a fresh store, and a fresh gateway on
it that refuses every backed-up alert as a duplicate (and acts on the ones sent after the backup):
real gunicorn, the real commands, on the selected store."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import db_rows, fresh_store, sample_alert, start_gateway, wait_until
from tvgw.cli import main

pytestmark = pytest.mark.slow


def tvgw(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], database: str, *args: str
) -> tuple[int, str, str]:
    """The real command, run in this process (``TVGW_DATABASE`` set for it): exit code, out, err."""
    monkeypatch.setenv("TVGW_DATABASE", database)
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def alert(n: int) -> dict[str, Any]:
    """A small order each, alternately bought and sold (no risk limit is reached), with an id."""
    return sample_alert(id=f"backup-{n}", action="buy" if n % 2 == 0 else "sell", contracts=0.001)


def test_a_backup_under_load_restores_into_a_gateway_that_refuses_its_alerts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    source = fresh_store(tmp_path, "source.sqlite")
    for host in ("a", "b"):
        (tmp_path / host).mkdir()
    gateway = start_gateway(tmp_path / "a", TVGW_DATABASE=source, TVGW_MAX_LAG_SECONDS="3600")
    answered: list[tuple[int, int]] = []  # (n, alert id) of every 2xx
    stop = threading.Event()

    def stream() -> None:
        n = 0
        while not stop.is_set() and n < 400:
            response = gateway.post(alert(n))
            assert response.status_code == 200, response.text
            answered.append((n, response.json()["alert_id"]))
            n += 1

    sender = threading.Thread(target=stream)
    try:
        sender.start()
        wait_until(lambda: len(answered) >= 15, 120, "15 alerts before the backup", gateway.log)
        made = tvgw(monkeypatch, capsys, source, "backup", str(tmp_path / "backup.bin"))
        after = len(answered)
        wait_until(lambda: len(answered) >= after + 10, 120, "10 alerts after the backup", gateway.log)
    finally:
        stop.set()
        sender.join(timeout=60)
        gateway.stop()
    assert made[0] == 0 and "backed up" in made[1], made

    target = fresh_store(tmp_path, "restored.sqlite")
    restored = tvgw(monkeypatch, capsys, target, "restore", str(tmp_path / "backup.bin"))
    assert restored[0] == 0 and "restored" in restored[1], restored
    refused = tvgw(monkeypatch, capsys, target, "restore", str(tmp_path / "backup.bin"))
    assert refused[0] == 2 and "--force" in refused[2], refused

    in_backup = {int(r["id"]) for r in db_rows(target, "SELECT id FROM alerts")}
    backed_up = [(n, alert_id) for n, alert_id in answered if alert_id in in_backup]
    later = [(n, alert_id) for n, alert_id in answered if alert_id not in in_backup]
    # A consistent snapshot: every alert answered before some point, none after it.
    assert backed_up == answered[: len(backed_up)] and len(backed_up) >= 15 and len(later) >= 10
    orders_before = len(db_rows(target, "SELECT id FROM orders"))

    fresh = start_gateway(tmp_path / "b", TVGW_DATABASE=target, TVGW_MAX_LAG_SECONDS="3600", prices=None)
    try:
        for n, alert_id in backed_up:
            body = fresh.post(alert(n)).json()
            assert (body["status"], body.get("duplicate_of")) == ("duplicate", alert_id), body
        assert len(db_rows(target, "SELECT id FROM orders")) == orders_before  # no order twice
        for n, _ in later[:3]:  # not in the backup: new to the restored gateway, so acted on
            assert fresh.post(alert(n)).json()["status"] == "executed"
    finally:
        fresh.stop()
