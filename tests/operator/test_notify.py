"""Notifications against local fake Telegram and Discord servers (and a generic webhook):
trades, risk refusals, exchange failures and drift are told; the webhook never waits for them;
a failing or hanging chat service is logged and counted, never retried; no secret is sent."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from storage import Storage
from storage import champions as role_store
from storage.predictions import insert_prediction, resolve_prediction
from tests.conftest import PASSPHRASE, make_settings, market_app, sample_alert
from tests.fake_exchange import DEFAULT_API_KEY, DEFAULT_SECRET, FakeBinance
from tests.operator.conftest import TOKEN
from tests.operator.fake_chat import FakeChat, fake_chat
from webhook.metrics import EXCHANGE_ERRORS, NOTIFICATIONS
from webhook.notify import Notifier

__all__ = ["fake_chat"]

BOT_TOKEN = "123456:telegram-bot-secret"
DISCORD_PATH = "/api/webhooks/42/discord-webhook-secret"


def chat_env(chat: FakeChat, **extra: str) -> dict[str, str]:
    return {
        "TVGW_API_TOKEN": TOKEN, "TVGW_TELEGRAM_BOT_TOKEN": BOT_TOKEN, "TVGW_TELEGRAM_CHAT_ID": "-1001",
        "TVGW_TELEGRAM_API_URL": chat.url, "TVGW_DISCORD_WEBHOOK_URL": chat.url + DISCORD_PATH,
        "TVGW_NOTIFY_WEBHOOK_URL": chat.url + "/generic", **extra,
    }  # fmt: skip


def notifier_of(client: Any) -> Notifier:
    notifier = client.application.extensions["tvgw_notifier"]
    assert isinstance(notifier, Notifier)
    return notifier


def by_path(received: list[tuple[str, dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for path, body in received:
        out.setdefault(path, []).append(body)
    return out


def assert_no_secret(received: list[tuple[str, dict[str, Any]]]) -> None:
    text = json.dumps([body for _, body in received])
    for secret in (BOT_TOKEN, "discord-webhook-secret", PASSPHRASE, TOKEN):
        assert secret not in text


def test_a_trade_is_told_on_every_channel(tmp_path: Path, fake_chat: FakeChat) -> None:
    client = market_app(make_settings(tmp_path, **chat_env(fake_chat))).test_client()
    alert_id = client.post("/webhook", data=json.dumps(sample_alert())).json["alert_id"]
    received = by_path(fake_chat.wait_for(3))
    (telegram,) = received[f"/bot{BOT_TOKEN}/sendMessage"]
    assert telegram["chat_id"] == "-1001"
    assert telegram["text"].startswith("tvgw: BUY 0.01 BTC/USDT") and f"alert {alert_id}" in telegram["text"]
    (discord,) = received[DISCORD_PATH]
    assert discord["content"] == telegram["text"] and discord["allowed_mentions"] == {"parse": []}
    (generic,) = received["/generic"]
    assert generic["event"] == "trade" and generic["alert_id"] == alert_id and generic["symbol"] == "BTC/USDT"
    assert_no_secret(fake_chat.received)


def test_risk_refusals_are_told_and_quiet_outcomes_are_not(tmp_path: Path, fake_chat: FakeChat) -> None:
    settings = make_settings(tmp_path, {"risk": {"cooldown_seconds": 3600}}, **chat_env(fake_chat))
    client = market_app(settings).test_client()
    client.post("/webhook", data="not json")  # refused at the gate: counted, not messaged
    client.post("/webhook", data=json.dumps(sample_alert(order_id="first")))
    refused = client.post("/webhook", data=json.dumps(sample_alert(order_id="second", price=30100.0))).json
    assert refused["status"] == "rejected" and refused["decision"]["risk"]["codes"], refused
    assert notifier_of(client).wait_idle()
    texts = [b.get("text") for p, b in fake_chat.received if p.endswith("/sendMessage")]
    assert len(texts) == 2 and texts[0].startswith("tvgw: BUY")
    assert texts[1].startswith(f"tvgw: risk refused BTC/USDT (alert {refused['alert_id']})")


def test_an_exchange_failure_is_told(
    tmp_path: Path, fake_chat: FakeChat, fake_exchange: FakeBinance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TVGW_BINANCE_API_KEY", DEFAULT_API_KEY)
    monkeypatch.setenv("TVGW_BINANCE_SECRET", DEFAULT_SECRET)
    settings = make_settings(
        tmp_path, TVGW_BROKER="binance", TVGW_EXCHANGE_API_URL=fake_exchange.url,
        TVGW_EXCHANGE_TIMEOUT_MS="600", **chat_env(fake_chat),
    )  # fmt: skip
    client = market_app(settings).test_client()
    fake_exchange.fail_next("POST /api/v3/order", "500", times=5)
    errors_before = EXCHANGE_ERRORS._value.get()
    answer = client.post("/webhook", data=json.dumps(sample_alert()))
    assert answer.json["status"] == "failed", answer.json
    assert EXCHANGE_ERRORS._value.get() == errors_before + 1  # and /metrics counts it
    generic = by_path(fake_chat.wait_for(3))["/generic"][0]
    assert generic["event"] == "exchange_failure" and generic["alert_id"] == answer.json["alert_id"]
    assert "exchange FAILED" in generic["text"]
    assert_no_secret(fake_chat.received)
    assert DEFAULT_SECRET not in json.dumps(fake_chat.received) and DEFAULT_API_KEY not in json.dumps(
        fake_chat.received
    )


def test_a_failed_account_beside_one_that_filled_is_told(
    tmp_path: Path, fake_chat: FakeChat, fake_exchange: FakeBinance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One alert, two accounts: the paper shadow fills (the answer is 200, executed), the live
    account's exchange fails; the failure is still told and counted, naming the account."""
    monkeypatch.setenv("TVGW_ACCOUNT_LIVE_API_KEY", DEFAULT_API_KEY)
    monkeypatch.setenv("TVGW_ACCOUNT_LIVE_SECRET", DEFAULT_SECRET)
    config = tmp_path / "tvgw.toml"
    config.write_text(
        f'[accounts.live]\nbroker = "binance"\napi_url = "{fake_exchange.url}"\n'
        '[accounts.shadow]\n[strategies.default]\naccounts = ["live", "shadow"]\n'
    )
    settings = make_settings(
        tmp_path, TVGW_CONFIG=str(config), TVGW_EXCHANGE_TIMEOUT_MS="600", **chat_env(fake_chat)
    )
    client = market_app(settings).test_client()
    fake_exchange.fail_next("POST /api/v3/order", "500", times=5)
    errors_before = EXCHANGE_ERRORS._value.get()
    answer = client.post("/webhook", data=json.dumps(sample_alert()))
    assert answer.status_code == 200 and answer.json["status"] == "executed", answer.json
    assert EXCHANGE_ERRORS._value.get() == errors_before + 1
    generic = {body["event"]: body for body in by_path(fake_chat.wait_for(6))["/generic"]}
    assert set(generic) == {"trade", "exchange_failure"}
    failure = generic["exchange_failure"]
    assert failure["account"] == "live" and failure["alert_id"] == answer.json["alert_id"]
    assert "exchange FAILED on account live" in failure["text"]
    assert DEFAULT_SECRET not in json.dumps(fake_chat.received)


def _count(channel: str, outcome: str) -> float:
    return NOTIFICATIONS.labels(channel=channel, outcome=outcome)._value.get()


def test_a_failing_chat_is_logged_and_counted_once_never_retried(
    tmp_path: Path, fake_chat: FakeChat, caplog: pytest.LogCaptureFixture
) -> None:
    fake_chat.mode = "fail"
    client = market_app(make_settings(tmp_path, **chat_env(fake_chat))).test_client()
    failed_before = _count("telegram", "failed")
    with caplog.at_level(logging.WARNING, logger="webhook.notify"):
        client.post("/webhook", data=json.dumps(sample_alert()))
        assert notifier_of(client).wait_idle()
    # Idle means every message was handled: a retry, inline or queued again, would have been sent.
    assert len(fake_chat.received) == 3  # one attempt per channel
    assert _count("telegram", "failed") == failed_before + 1
    assert "telegram notification (trade) failed: HTTP 500; not retried" in caplog.text
    assert BOT_TOKEN not in caplog.text and "discord-webhook-secret" not in caplog.text


def test_a_hanging_chat_never_delays_the_webhook(tmp_path: Path, fake_chat: FakeChat) -> None:
    """The chat holds every request until the test lets go, under a 60 s notifier timeout: six
    alerts are answered while the first send is still held (a webhook that waited on a send
    would sit out that timeout before its first answer, past the 45 s this allows), and what
    the full queue cannot take is dropped and counted."""
    fake_chat.mode = "hang"
    env = chat_env(fake_chat, TVGW_NOTIFY_TIMEOUT_S="60", TVGW_NOTIFY_QUEUE_SIZE="2")
    client = market_app(make_settings(tmp_path, **env)).test_client()
    notifier = notifier_of(client)
    dropped_before = _count("telegram", "dropped")
    answers: list[Any] = []
    posting = threading.Thread(
        target=lambda: answers.extend(
            client.post("/webhook", data=json.dumps(sample_alert(order_id=f"o{i}"))) for i in range(6)
        ),
        daemon=True,
    )
    posting.start()
    posting.join(timeout=45)
    assert not posting.is_alive(), "the webhook waited on the held chat"
    assert len(answers) == 6 and all(a.status_code == 200 for a in answers)
    assert fake_chat.wait_for(1) and not fake_chat.released.is_set()
    assert notifier.queue.unfinished_tasks > 0  # the sends are still going on behind the answers
    fake_chat.released.set()
    assert notifier.wait_idle(timeout=60)
    assert notifier.dropped >= 1 and _count("telegram", "dropped") >= dropped_before + 1


def test_drift_is_told_once_across_workers(tmp_path: Path, fake_chat: FakeChat) -> None:
    settings = make_settings(tmp_path, **chat_env(fake_chat))
    storage = Storage(settings.database)
    storage.migrate()
    now = time.time()
    with storage.transaction() as conn:
        for i in range(30):  # confident and wrong every time: accuracy 0, a steady drawdown
            pid = insert_prediction(conn, timestamp=now - 3600 + i, symbol="BTC/USDT", timeframe="1h",
                                    direction_prob=0.8, horizon=5, target_time=now)  # fmt: skip
            resolve_prediction(conn, pid, actual_direction=0, actual_magnitude=-0.01, prediction_accuracy=0.0)
    workers = [Notifier(settings, storage, drift_check_s=3600) for _ in range(2)]
    assert workers[0].check_drift() is True
    assert workers[1].check_drift() is False  # the other worker already told it today
    assert workers[0].wait_idle()
    texts = [b["text"] for p, b in fake_chat.wait_for(3) if p == "/generic"]
    assert len(texts) == 1 and texts[0].startswith("tvgw: model drift") and "accuracy 0.00" in texts[0]


def test_model_role_changes_are_told_once_across_workers(tmp_path: Path, fake_chat: FakeChat) -> None:
    """ML-driven sizing switched off, and a promotion, recorded by whichever process made them,
    reach the channels once, with the reason; a worker that looks again finds nothing new."""
    settings = make_settings(tmp_path, **chat_env(fake_chat))
    storage = Storage(settings.database)
    storage.migrate()
    workers = [Notifier(settings, storage, model_events_check_s=3600) for _ in range(2)]
    market = {"symbol": "BTC/USDT", "timeframe": "1h", "actor": "gateway"}
    off = "champion v1's rolling log loss 0.7100 is no better than the base rate's"
    role_store.add_event(storage, kind="sizing_off", version="v1", reason=off, **market)
    role_store.add_event(
        storage, kind="promoted", version="v2", previous="v1", evidence={"n": 120, "difference": -0.02},
        reason="challenger v2 beat champion v1 on the same 120 resolved alerts", **market,
    )  # fmt: skip
    assert workers[0].check_model_events() == 2
    assert workers[1].check_model_events() == 0 and workers[0].check_model_events() == 0
    assert workers[0].wait_idle()
    generic = [b for p, b in fake_chat.wait_for(6) if p == "/generic"]
    assert [b["event"] for b in generic] == ["model_sizing_off", "model_promoted"]
    assert generic[0]["text"] == f"tvgw: BTC/USDT 1h ML-driven sizing OFF (champion v1): {off}"
    assert "PROMOTED to champion over v1" in generic[1]["text"] and generic[1]["evidence"]["n"] == 120


def test_no_channel_configured_means_no_thread_and_no_message(tmp_path: Path) -> None:
    client = market_app(make_settings(tmp_path)).test_client()
    notifier = notifier_of(client)
    client.post("/webhook", data=json.dumps(sample_alert()))
    assert notifier.channels == [] and notifier.queue.empty() and notifier._thread is None
