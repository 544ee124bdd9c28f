"""No alert missed in silence, through a real gunicorn (issue 20): a heartbeat that never comes
and a skipped sequence number each raise a notification (fake Telegram, Discord and webhook
servers) and a /healthz problem naming the strategy, market and missed bar; the timeline of an
alert lists every step with its time (API and ``tvgw alerts --id``).

Time is the chart's, not the machine's: a heartbeat says which bar it closed, so a test that
sends one for a bar that closed nearly a minute ago (1-minute chart, 2 s grace) makes the next
one due a few seconds from now, and only waits, on a condition, for the gateway to notice."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import requests

from tests.conftest import LiveGateway, db_rows, sample_alert, seed_market, start_gateway, wait_until
from tests.operator.conftest import AUTH, TOKEN
from tests.operator.fake_chat import FakeChat
from tests.operator.test_notify import chat_env

pytestmark = pytest.mark.slow

GRACE_S = 2.0
BAR_S = 60
PRICES = {"BTC/USDT": 30000.0, "ETH/USDT": 1800.0, "SOL/USDT": 20.5}


@pytest.fixture(scope="module")
def chat() -> Iterator[FakeChat]:
    fake = FakeChat()
    yield fake
    fake.close()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, chat: FakeChat) -> Iterator[LiveGateway]:
    """One gunicorn (two workers) for the module: the overdue check every 0.5 s (one owner), a
    2 s grace, exits watched every 0.5 s, notifications to the fake chat servers."""
    live = start_gateway(
        tmp_path_factory.mktemp("continuity"), prices=PRICES,
        TVGW_CONTINUITY_CHECK_S="0.5", TVGW_HEARTBEAT_GRACE_S=str(GRACE_S),
        TVGW_EXIT_WATCH_INTERVAL_S="0.5", **chat_env(chat),
    )  # fmt: skip
    yield live
    live.stop()


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def heartbeat(ticker: str, sequence: int, bar_open: float, **fields: Any) -> dict[str, Any]:
    """A heartbeat of a 1-minute chart as the bundled scripts send it (see tests/pine)."""
    return {
        "passphrase": "test-secret", "ticker": ticker, "exchange": "BINANCE", "interval": "1",
        "action": "heartbeat", "sequence": sequence, "heartbeat_bars": 1, "time": int(bar_open * 1000),
        "timenow": int(time.time() * 1000), "close": 1.0, "market_position": "flat",
        "market_position_size": 0, **fields,
    }  # fmt: skip


def told(chat: FakeChat, *words: str) -> list[str]:
    """Texts the fake Telegram received that contain every one of ``words``."""
    return [
        body["text"] for path, body in list(chat.received)
        if path.endswith("/sendMessage") and all(w in body["text"] for w in words)
    ]  # fmt: skip


def health(gateway: LiveGateway) -> dict[str, Any]:
    return requests.get(gateway.url + "/healthz", timeout=10).json()


def test_a_missing_heartbeat_is_told_and_is_a_healthz_problem(gateway: LiveGateway, chat: FakeChat) -> None:
    # The heartbeat of a bar that closed BAR_S - 4 s ago: the next bar closes in 4 s, so its
    # heartbeat is overdue GRACE_S later. It never comes: nothing else is sent for XRP.
    bar_open = time.time() - 2 * BAR_S + 4
    answer = gateway.post(heartbeat("XRPUSDT", 500, bar_open)).json()
    assert answer["status"] == "heartbeat" and answer["gaps"] == [], answer
    due = bar_open + 2 * BAR_S + GRACE_S
    missed_bar = iso(bar_open + BAR_S)
    assert answer["feed"]["next"]["overdue_after"] == iso(due)
    assert not [p for p in health(gateway)["problems"] if "XRP/USDT" in p]  # not before it is due

    text = wait_until(
        lambda: told(chat, "MISSED heartbeat", "XRP/USDT", missed_bar),
        90,
        "the missing heartbeat was told",
        gateway.log,
    )[0]
    assert "strategy default" in text and "sequence 501" in text, text
    problems = health(gateway)["problems"]
    assert any("XRP/USDT" in p and missed_bar in p for p in problems), problems
    (gap,) = db_rows(gateway.database, "SELECT g.* FROM feed_gaps g JOIN feeds f ON f.id = g.feed_id"
                     " WHERE f.symbol = 'XRP/USDT'")  # fmt: skip
    assert gap["kind"] == "heartbeat_missed" and gap["sequence_from"] == 501
    assert gap["detected_at"] >= due, "noticed before the heartbeat was due"
    # Every channel, once: the check has one owner across the two workers.
    # Sleeping on purpose: three more runs of the 0.5 s check, in the gunicorn workers' own
    # threads, must not tell it again (there is no condition to wait for: nothing must happen).
    time.sleep(1.5)
    assert len(told(chat, "MISSED heartbeat", "XRP/USDT")) == 1
    generic = [b for p, b in chat.received if p == "/generic" and b.get("symbol") == "XRP/USDT"]
    assert [(g["event"], g["kind"], g["bar_time"]) for g in generic] == [
        ("feed_gap", "heartbeat_missed", missed_bar)
    ]
    metrics = requests.get(gateway.url + "/metrics", timeout=10).text
    labels = 'kind="heartbeat_missed",strategy="default",symbol="XRP/USDT",timeframe="1m"'
    assert "tvgw_feed_open_gaps{" + labels + "} 1.0" in metrics, metrics
    assert 'tvgw_feed_gaps_total{kind="heartbeat_missed"}' in metrics, metrics


def test_a_sequence_gap_is_told_and_is_a_healthz_problem(gateway: LiveGateway, chat: FakeChat) -> None:
    now = time.time()
    bar = now - now % BAR_S
    assert gateway.post(heartbeat("DOGEUSDT", 40, bar - 2 * BAR_S)).json()["gaps"] == []
    answer = gateway.post(heartbeat("DOGEUSDT", 42, bar)).json()
    (gap,) = answer["gaps"]
    missed_bar = iso(bar - BAR_S)
    assert (gap["kind"], gap["sequence_from"], gap["missed"], gap["bar_time"]) == (
        "sequence_gap", 41, 1, missed_bar
    ), gap  # fmt: skip
    text = wait_until(lambda: told(chat, "DOGE/USDT", "sequence 41"), 30, "the gap was told", gateway.log)[0]
    assert (
        text.startswith("tvgw: MISSED 1 heartbeat of strategy default on DOGE/USDT 1m") and missed_bar in text
    )
    assert any("DOGE/USDT" in p and missed_bar in p for p in health(gateway)["problems"])
    # The same heartbeat again (a proxy's retry) is a repeat: no second gap, no second message.
    assert gateway.post(heartbeat("DOGEUSDT", 42, bar)).json()["status"] == "duplicate"
    assert len(db_rows(gateway.database, "SELECT * FROM feed_gaps WHERE sequence_from = 41")) == 1


def test_the_timeline_of_an_alert_lists_every_step_with_times(
    gateway: LiveGateway, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    entry = sample_alert(ticker="SOLUSDT", price=20.5, contracts=2.0, stop_loss="2%", order_id="Long",
                         time=int(time.time() // 3600 * 3600 * 1000))  # fmt: skip
    answer = gateway.post(entry).json()
    assert answer["status"] == "executed", answer
    alert_id = answer["alert_id"]
    # A later bar crosses the stop: the exit watcher closes the position (the alert's exit).
    seed_market(gateway.database, {"SOL/USDT": 19.0}, at=time.time() + 3600)
    stop_filled = "SELECT * FROM orders WHERE alert_id = ? AND reason = 'stop' AND filled > 0"
    wait_until(lambda: db_rows(gateway.database, stop_filled, (alert_id,)), 60, "the stop fill", gateway.log)

    timeline = requests.get(f"{gateway.url}/api/alerts/{alert_id}/timeline", headers=AUTH, timeout=10).json()
    steps = timeline["steps"]
    assert [s["step"] for s in steps] == ["fired", "received", "decided", "ordered", "fill", "exit"], steps
    times = [datetime.fromisoformat(s["at"].replace("Z", "+00:00")) for s in steps]
    assert times == sorted(times) and all(s["at"] for s in steps)
    assert all(s["step_ms"] is not None and s["step_ms"] >= 0 for s in steps[1:])
    fill, exit_ = steps[4]["detail"], steps[5]["detail"]
    assert fill["side"] == "buy" and fill["filled"] == 2.0 and fill["slippage_bps"] == pytest.approx(5.0)
    assert exit_["exit"] == "stop" and exit_["side"] == "sell" and exit_["filled"] == 2.0
    assert timeline["alert_price"] == 20.5 and timeline["symbol"] == "SOL/USDT"

    # The terminal shows the same steps.
    from tvgw.cli import main

    monkeypatch.setenv("TVGW_DATABASE", str(gateway.database))
    monkeypatch.setenv("TVGW_PASSPHRASE", "test-secret")
    assert main(["alerts", "--id", str(alert_id)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"alert {alert_id}: default SOL/USDT buy executed, alert price 20.5")
    for step in ("fired", "received", "decided", "ordered", "fill", "exit"):
        assert f"\n{step} " in out, out
    assert main(["alerts", "--id", "999999"]) == 1
    assert (
        requests.get(f"{gateway.url}/api/alerts/999999/timeline", headers=AUTH, timeout=10).status_code == 404
    )
    assert TOKEN not in out


@pytest.fixture
def chromium() -> Iterator[Any]:
    from tests.operator.browser import Browser, find_chromium

    executable = find_chromium()
    if executable is None:
        pytest.skip("no Chromium installed (apt-get install chromium; .ci/run installs it)")
    browser = Browser(executable)
    yield browser
    browser.close()


def test_the_dashboard_flags_the_missing_alerts_and_shows_a_timeline(
    gateway: LiveGateway, chromium: Any
) -> None:
    """In a real Chromium: the feeds table flags the feed whose heartbeat went missing (named with
    its missed bar), and clicking an alert shows its timeline, step by step."""
    bar_open = time.time() - 2 * BAR_S - 10  # its successor is overdue at once
    gateway.post(heartbeat("ADAUSDT", 7, bar_open))
    missed_bar = iso(bar_open + BAR_S)
    wait_until(
        lambda: db_rows(gateway.database, "SELECT * FROM feed_gaps WHERE sequence_from = 8"), 60,
        "the overdue check recorded the missing heartbeat", gateway.log,
    )  # fmt: skip
    alert_id = gateway.post(sample_alert(ticker="ETHUSDT", price=1800.0, order_id="eth-timeline")).json()[
        "alert_id"
    ]
    chromium.navigate(gateway.url + "/")
    chromium.wait_for("document.querySelector('#token') !== null", what="the login form")
    chromium.evaluate(
        f"document.querySelector('#token').value = {json.dumps(TOKEN)};"
        " document.querySelector('#login').submit(); true"
    )
    feed = '#feeds tr[data-feed="default ADA/USDT 1m"]'
    chromium.wait_for(f"document.querySelector('{feed}') !== null", what="the ADA feed in the table")
    row = chromium.evaluate(f"document.querySelector('{feed}').innerText")
    assert "gap" in row and missed_bar.replace("T", " ")[:19] in row, row
    flag = chromium.evaluate("document.querySelector('#feed-flag').innerText")
    assert flag.startswith("MISSING ALERTS") and "ADA/USDT" in flag and missed_bar in flag, flag

    chromium.evaluate(f"document.querySelector('#alerts tr[data-alert-id=\"{alert_id}\"]').click(); true")
    chromium.wait_for("document.querySelectorAll('#timeline tr[data-step]').length >= 5", what="the timeline")
    steps = chromium.evaluate(
        "[...document.querySelectorAll('#timeline tr[data-step]')].map(r => r.dataset.step)"
    )
    assert steps == ["fired", "received", "decided", "ordered", "fill"], steps
    assert chromium.evaluate("document.querySelector('#timeline-alert').innerText") == str(alert_id)
    assert chromium.errors == []
