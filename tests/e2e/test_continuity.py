"""No alert missed in silence, through a real gunicorn (issue 20): a heartbeat that never comes
and a skipped sequence number each raise a notification (fake Telegram, Discord and webhook
servers) and a /healthz problem naming the strategy, market and missed bar; a missed entry is
repaired by the next alert's intended position, once; a close delivered after the reversal it
preceded does not undo it (the reversal itself a reduce-only close, then the short); the
timeline of an alert lists every step with its time (API and ``tvgw alerts --id``).

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
from tests.operator.conftest import AUTH, TOKEN, chromium
from tests.operator.fake_chat import FakeChat
from tests.operator.test_notify import chat_env

pytestmark = pytest.mark.slow
__all__ = ["chromium"]  # the real-browser fixture of the operator tests (tests/operator/conftest.py)

GRACE_S = 2.0
BAR_S = 60
PRICES = {"BTC/USDT": 30000.0, "ETH/USDT": 1800.0, "SOL/USDT": 20.5, "BNB/USDT": 300.0, "LTC/USDT": 80.0}


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


def order_alert(
    ticker: str,
    price: float,
    action: str,
    bar_open: float,
    sequence: int,
    after: tuple[str, float],
    before: tuple[str, float],
    order_id: str,
    contracts: float,
) -> dict[str, Any]:
    """An order alert as the bundled strategy sends it: its bar, its number, its contracts, and
    the strategy's position after and before it (side and unsigned size)."""
    return sample_alert(
        ticker=ticker, price=price, action=action, contracts=contracts, order_id=order_id,
        time=int(bar_open * 1000), sequence=sequence, market_position=after[0], market_position_size=after[1],
        prev_market_position=before[0], prev_market_position_size=before[1],
    )  # fmt: skip


def position(gateway: LiveGateway, symbol: str) -> float:
    rows = db_rows(
        gateway.database, "SELECT amount FROM positions WHERE broker = 'paper' AND symbol = ?", (symbol,)
    )
    return float(rows[0]["amount"]) if rows else 0.0


def test_a_missed_entry_is_repaired_by_the_next_alerts_intended_position_once(gateway: LiveGateway) -> None:
    bar = time.time() // 3600 * 3600
    entry = order_alert(
        "BTCUSDT", 30000.0, "buy", bar - 7200, 100, ("long", 0.01), ("flat", 0), "entry", 0.01
    )
    add = order_alert("BTCUSDT", 30000.0, "buy", bar - 3600, 101, ("long", 0.02), ("long", 0.01), "add", 0.01)
    # The entry never arrives (TradingView dropped it); the add does.
    answer = gateway.post(add).json()
    assert answer["status"] == "executed", answer
    decision = answer["decision"]
    assert "repaired a gap: booked 0 where the chart had 0.01" in decision["reason"], decision
    assert decision["details"]["repair"] == {"chart_before": 0.01, "booked_before": 0.0, "extra_traded": 0.01}
    assert (decision["order"]["side"], decision["order"]["amount"]) == ("buy", pytest.approx(0.02))
    assert position(gateway, "BTC/USDT") == pytest.approx(0.02)

    # The lost entry turns up late: its chart sent it before the add, which already applied.
    late = gateway.post(entry).json()
    assert late["status"] == "rejected" and late["decision"]["reason"].startswith("out of order"), late
    assert "order" not in late["decision"]
    # The close after it: the book is where the chart says, so nothing more is repaired.
    close = order_alert(
        "BTCUSDT", 30000.0, "close_long", bar, 102, ("flat", 0), ("long", 0.02), "close", 0.02
    )
    closed = gateway.post(close).json()
    assert closed["status"] == "executed" and "repair" not in closed["decision"].get("details", {}), closed
    assert position(gateway, "BTC/USDT") == pytest.approx(0.0)

    ids = (answer["alert_id"], late["alert_id"], closed["alert_id"])
    sql = "SELECT alert_id, step FROM alert_steps WHERE step != 'decided' AND alert_id IN (?, ?, ?)"
    steps = db_rows(gateway.database, sql, ids)
    assert sorted((r["alert_id"], r["step"]) for r in steps) == [
        (answer["alert_id"], "repaired"), (late["alert_id"], "superseded")
    ]  # fmt: skip
    timeline = requests.get(
        f"{gateway.url}/api/alerts/{answer['alert_id']}/timeline", headers=AUTH, timeout=10
    )
    assert "repaired" in [s["step"] for s in timeline.json()["steps"]]


def test_a_close_delivered_after_its_reversal_does_not_undo_it(gateway: LiveGateway) -> None:
    bar = time.time() // 3600 * 3600
    entry = order_alert("BNBUSDT", 300.0, "buy", bar - 3600, 7, ("long", 1.0), ("flat", 0), "Long", 1.0)
    assert gateway.post(entry).json()["status"] == "executed"
    # The strategy's stop closes the long and its short entry opens on the same bar (one number):
    close = order_alert("BNBUSDT", 300.0, "close_long", bar, 8, ("flat", 0), ("long", 1.0), "Long exit", 1.0)
    short = order_alert("BNBUSDT", 300.0, "sell", bar, 8, ("short", 1.0), ("flat", 0), "Short", 1.0)
    # ... and the short arrives first.
    flipped = gateway.post(short).json()
    assert flipped["status"] == "executed", flipped
    decision = flipped["decision"]
    assert "repaired a gap" in decision["reason"], decision
    # One step of two orders: the reduce-only close of the long first, then the short.
    first = decision["close_first"]
    assert (first["side"], first["amount"], first["reduce_only"], first["fill"]["filled"]) == (
        "sell", pytest.approx(1.0), True, pytest.approx(1.0)
    )  # fmt: skip
    assert (decision["order"]["side"], decision["order"]["amount"]) == ("sell", pytest.approx(1.0))
    orders = db_rows(gateway.database, "SELECT client_order_id, side, amount, filled, status FROM orders"
                     " WHERE alert_id = ? ORDER BY id", (flipped["alert_id"],))  # fmt: skip
    assert [(o["client_order_id"].endswith("-c"), o["side"], o["filled"], o["status"]) for o in orders] == [
        (True, "sell", pytest.approx(1.0), "filled"), (False, "sell", pytest.approx(1.0), "filled")
    ]  # fmt: skip
    assert position(gateway, "BNB/USDT") == pytest.approx(-1.0)

    late = gateway.post(close).json()
    assert late["status"] == "rejected" and late["decision"]["reason"].startswith("out of order"), late
    assert f"alert {flipped['alert_id']}" in late["decision"]["reason"]
    assert position(gateway, "BNB/USDT") == pytest.approx(-1.0)  # the reversal stands
    assert not db_rows(gateway.database, "SELECT * FROM orders WHERE alert_id = ?", (late["alert_id"],))
    # The gap the short's arrival showed is settled (repaired), so it is no /healthz problem.
    assert not [p for p in health(gateway)["problems"] if "BNB/USDT" in p]


def test_a_position_the_book_does_not_hold_is_told_not_traded_until_an_alert_repairs_it(
    gateway: LiveGateway, chat: FakeChat
) -> None:
    """The chart is long 1 (its entry alert never came): the heartbeat says so, the gateway
    tells it once and trades nothing; the next alert that says its position repairs it."""
    bar = time.time() // 3600 * 3600
    beat = heartbeat("LTCUSDT", 50, bar - 3600, interval="60", market_position="long", market_position_size=1)
    answer = gateway.post(beat).json()
    (gap,) = answer["gaps"]
    assert gap["kind"] == "position_mismatch" and "the chart holds 1, the book 0" in gap["detail"], gap
    assert position(gateway, "LTC/USDT") == 0.0  # told, not guessed at
    text = wait_until(lambda: told(chat, "POSITION MISMATCH", "LTC/USDT"), 30, "the mismatch was told")[0]
    assert "strategy default" in text
    again = gateway.post({**beat, "sequence": 51, "time": int(bar * 1000)}).json()
    assert again["gaps"] == [], "told once, not at every heartbeat"
    assert any("LTC/USDT" in p for p in health(gateway)["problems"])

    add = order_alert("LTCUSDT", 80.0, "buy", bar, 52, ("long", 2.0), ("long", 1.0), "add", 1.0)
    repaired = gateway.post({**add, "interval": "60"}).json()
    assert repaired["status"] == "executed" and "repaired a gap" in repaired["decision"]["reason"], repaired
    assert position(gateway, "LTC/USDT") == pytest.approx(2.0)
    assert not [p for p in health(gateway)["problems"] if "LTC/USDT" in p]
