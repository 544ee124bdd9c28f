"""`tvgw alerts`, `tvgw orders`, `tvgw positions`: the API's rows as terminal tables."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import base_environ, make_settings, market_app, sample_alert
from tests.operator.conftest import AUTH, TOKEN
from tvgw.cli import main


@pytest.fixture
def recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    for key, value in base_environ(tmp_path).items():
        monkeypatch.setenv(key, value)
    client = market_app(make_settings(tmp_path, TVGW_API_TOKEN=TOKEN)).test_client()
    client.post("/webhook", data=json.dumps(sample_alert()))
    client.post("/webhook", data=json.dumps(sample_alert(passphrase="wrong-passphrase", order_id="x")))
    return client


def test_alerts_table_shows_what_the_api_shows(recorded: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["alerts"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = ["id", "received_at", "strategy_id", "symbol", "action", "status", "http_status", "reason"]
    assert lines[0].split() == header
    assert set(lines[1]) <= {"-", " "}
    newest, oldest = lines[2], lines[3]
    assert (
        newest.split()[0] == "2" and "refused" in newest and "401" in newest and "wrong passphrase" in newest
    )
    assert oldest.split()[0] == "1" and "executed" in oldest and "BTC/USDT" in oldest
    received = oldest.split()[1]
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z$", received)
    assert received == recorded.get("/api/alerts/1", headers=AUTH).json["received_at"]


def test_daily_summary_shows_what_the_api_shows(recorded: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """`tvgw alerts --daily`: per strategy and day, the same figures as /api/feeds/daily."""
    beat = {"passphrase": "test-secret", "ticker": "BTCUSDT", "interval": "60", "action": "heartbeat",
            "sequence": 1, "heartbeat_bars": 1}  # fmt: skip
    recorded.post("/webhook", data=json.dumps(beat))
    recorded.post("/webhook", data=json.dumps({**beat, "sequence": 4}))  # 2 and 3 never came
    (api_day,) = recorded.get("/api/feeds/daily", headers=AUTH).json
    assert (api_day["expected"], api_day["received"], api_day["missed"]) == (5, 3, 2)  # + the one order alert
    assert main(["alerts", "--daily", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [api_day]
    assert main(["alerts", "--daily"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:6] == ["day", "strategy_id", "expected", "received", "missed", "repaired"]
    assert lines[2].split()[1:6] == ["default", "5", "3", "2", "0"]
    assert main(["alerts", "--daily", "--days", "0"]) == 2


def test_orders_and_positions_tables(recorded: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["orders"]) == 0
    out = capsys.readouterr().out
    assert "filled" in out and "buy" in out and "0.01" in out
    assert main(["positions"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:2] == ["symbol", "amount"] and out[2].split()[:2] == ["BTC/USDT", "0.01"]
    assert main(["positions", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["symbol"] == "BTC/USDT"
    assert main(["alerts", "--status", "refused", "--json"]) == 0
    assert [a["status"] for a in json.loads(capsys.readouterr().out)] == ["refused"]


def test_tables_say_when_there_is_nothing_and_refuse_bad_limits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for key, value in base_environ(tmp_path).items():
        monkeypatch.setenv(key, value)
    assert main(["alerts"]) == 0 and "no alerts recorded yet" in capsys.readouterr().out
    assert main(["positions"]) == 0 and "no open positions on the paper book" in capsys.readouterr().out
    assert (
        main(["orders", "--limit", "0"]) == 2 and "--limit must be from 1 to 1000" in capsys.readouterr().out
    )


def _first_line_of_serve(tmp_path: Path, **env: str) -> str:
    import os
    import signal
    import subprocess
    import sys

    from tests.conftest import ROOT, free_port

    bind = f"127.0.0.1:{free_port()}"
    process = subprocess.Popen(
        [sys.executable, "-m", "tvgw.cli", "serve", "--bind", bind], cwd=ROOT,
        env={**os.environ, **base_environ(tmp_path, **env)}, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, start_new_session=True, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        return process.stdout.readline().replace(bind, "ADDRESS")
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.communicate(timeout=30)


@pytest.mark.slow
def test_serve_says_where_the_dashboard_is_and_how_to_log_in(tmp_path: Path) -> None:
    line = _first_line_of_serve(tmp_path, TVGW_API_TOKEN=TOKEN)
    assert line.startswith("dashboard: http://ADDRESS/ (log in with the value of TVGW_API_TOKEN)")
    assert TOKEN not in line
    off = _first_line_of_serve(tmp_path)
    assert off.startswith("dashboard: off. Set TVGW_API_TOKEN")
