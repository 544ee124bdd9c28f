"""Telegram, Discord and generic-webhook messages when a trade executes, risk refuses an
order, the exchange fails, the books disagree with the exchange, the model drifts, a model
changes role (a challenger enrolled or promoted, a human's promotion or rollback, ML-driven sizing
switched off or back on), or a chart's alert goes missing (a heartbeat overdue, a gap in its
numbers, an order alert lost: engine.continuity).

Sent from one background thread per worker, never from the request: the webhook only puts a
message on a bounded queue (a full queue drops it and counts the drop). Each send has a timeout
and is tried once: a failed notification is logged and counted, never retried, so an outage of
Telegram cannot become a storm. Messages are built from the gateway's answer (already free of
secrets) and passed through the redactor again; Discord mentions are switched off, so an alert
field cannot ping @everyone. Drift is checked every ``DRIFT_CHECK_S`` and told once per day per
set of reasons across all workers (a UNIQUE key in SQLite). Role changes are read from their
record (``ml_model_events``) every ``MODEL_EVENTS_CHECK_S``, whichever process made them (a
worker's review, ``tvgw models promote``), and each is told once across all workers.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import requests

from settings import Settings, secret_values
from storage import Storage
from storage import champions as role_store
from storage.champions import ModelEvent
from storage.reconciliation import book_checks
from storage.state import claim_notification
from webhook.events import AlertEvent, drift_now
from webhook.redaction import Redactor

__all__ = ["Message", "Notifier", "gap_message"]

log = logging.getLogger(__name__)

#: Seconds between drift checks on the notifier's thread.
DRIFT_CHECK_S = 300.0
#: Seconds between looks at the reconciler's verdicts (books that disagree with the exchange).
BOOKS_CHECK_S = 5.0
#: Seconds between looks at the record of model role changes, and how far back the first look
#: of a worker reaches (a change made while it was starting is still told; each only once).
MODEL_EVENTS_CHECK_S = 15.0
MODEL_EVENTS_LOOKBACK_S = 3600.0
_DROP_LOG_EVERY = 100


@dataclass(frozen=True)
class Message:
    """One notification: what kind of event, a one-line text, and facts for the generic webhook."""

    kind: str
    text: str
    facts: dict[str, Any]


def alert_message(event: AlertEvent) -> Message | None:
    """The message for an alert worth telling about (see :attr:`AlertEvent.kind`), else None."""
    kind = event.kind
    if kind is None:
        return None
    where = f"{event.symbol or '?'} (alert {event.alert_id})"
    if kind == "trade":
        text = (
            f"tvgw: {str(event.side).upper()} {event.amount:g} {where} {event.fill_status} at {event.price:g}"
        )
    elif kind == "risk_refusal":
        text = f"tvgw: risk refused {where}: {event.reason}"
    else:
        text = f"tvgw: exchange FAILED {where}: {event.reason}"
    facts = {
        "alert_id": event.alert_id, "status": event.status, "symbol": event.symbol, "side": event.side,
        "amount": event.amount, "price": event.price, "reason": event.reason,
        "risk_codes": list(event.risk_codes),
    }  # fmt: skip
    return Message(kind, text, facts)


#: How each kind of role change reads in a message.
_MODEL_EVENT_TITLES = {
    "champion": "model {version} is champion",
    "challenger": "model {version} serves in shadow as the challenger of {previous}",
    "promoted": "challenger {version} PROMOTED to champion over {previous}",
    "promote": "model {version} promoted to champion by {actor} (was {previous})",
    "rollback": "ROLLED BACK to {version} by {actor} (from {previous})",
    "retired": "model {version} retired",
    "sizing_off": "ML-driven sizing OFF (champion {version})",
    "sizing_on": "ML-driven sizing back ON (champion {version})",
}


def model_event_message(event: ModelEvent) -> Message:
    """The message of one role change: what changed, in which market, and why."""
    title = _MODEL_EVENT_TITLES.get(event.kind, event.kind + " {version}").format(
        version=event.version, previous=event.previous or "none", actor=event.actor
    )
    text = f"tvgw: {event.symbol} {event.timeframe} {title}: {event.reason}"
    facts = {"event_id": event.id, "kind": event.kind, "symbol": event.symbol, "timeframe": event.timeframe,
             "version": event.version, "previous": event.previous, "actor": event.actor,
             "reason": event.reason, "evidence": event.evidence}  # fmt: skip
    return Message(f"model_{event.kind}", text, facts)


def account_failure_messages(event: AlertEvent) -> list[Message]:
    """An exchange failure on an account that did not lead the alert's answer (another account
    filled): told like any exchange failure, naming the account."""
    where = f"{event.symbol or '?'} (alert {event.alert_id})"
    messages = []
    for account, reason in event.account_failures:
        facts = {"alert_id": event.alert_id, "status": "failed", "account": account, "symbol": event.symbol,
                 "reason": reason}  # fmt: skip
        text = f"tvgw: exchange FAILED on account {account} {where}: {reason}"
        messages.append(Message("exchange_failure", text, facts))
    return messages


def gap_message(facts: dict[str, Any]) -> Message:
    """A chart's missing message (:meth:`engine.continuity.Notice.to_dict`): the strategy, the
    market and the missed bar, in the text and as facts."""
    keep = ("gap_id", "kind", "strategy_id", "symbol", "timeframe", "bar_time", "sequence_from",
            "sequence_to", "missed", "expected_by", "alert_id", "detail")  # fmt: skip
    return Message("feed_gap", f"tvgw: {facts.get('text')}", {k: facts.get(k) for k in keep})


class Notifier:
    """The outgoing channels of one worker and the thread that feeds them."""

    def __init__(
        self,
        settings: Settings,
        storage: Storage,
        *,
        drift_check_s: float = DRIFT_CHECK_S,
        model_events_check_s: float = MODEL_EVENTS_CHECK_S,
    ):
        self.settings = settings
        self.storage = storage
        self.config = settings.notify
        self.redactor = Redactor(secret_values(settings))
        self.channels = self._channels()
        self.queue: queue.Queue[Message] = queue.Queue(maxsize=self.config.queue_size)
        self.dropped = 0
        self.drift_check_s = drift_check_s
        self.model_events_check_s = model_events_check_s
        self._last_event_id = 0
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        if self.channels:
            self._start()

    @classmethod
    def from_settings(cls, settings: Settings, storage: Storage) -> Notifier:
        return cls(settings, storage)

    def _channels(self) -> list[str]:
        c = self.config
        return [
            name
            for name, on in (
                ("telegram", bool(c.telegram_bot_token and c.telegram_chat_id)),
                ("discord", bool(c.discord_webhook_url)),
                ("webhook", bool(c.webhook_url)),
            )
            if on
        ]

    # --- producers (request path: never block) ---------------------------------------------------------
    def alert(self, event: AlertEvent) -> None:
        """Listener of :func:`webhook.events.watch_webhook`."""
        if self.channels:
            message = alert_message(event)
            if message is not None:
                self.put(message)
            for failure in account_failure_messages(event):
                self.put(failure)
            self.gaps(list(event.gaps))

    def gaps(self, facts: list[dict[str, Any]]) -> None:
        """Tell each missing message of a chart (from an answer, or the overdue check)."""
        if self.channels:
            for gap in facts:
                self.put(gap_message(gap))

    def put(self, message: Message) -> bool:
        """Queue ``message`` without waiting; False (counted, logged now and then) when full."""
        from webhook.metrics import NOTIFICATIONS

        try:
            self.queue.put_nowait(message)
        except queue.Full:
            with self._lock:
                self.dropped += 1
                dropped = self.dropped
            for channel in self.channels:
                NOTIFICATIONS.labels(channel=channel, outcome="dropped").inc()
            if dropped == 1 or dropped % _DROP_LOG_EVERY == 0:
                log.warning(
                    "notification queue full (%d): %d messages dropped so far", self.queue.maxsize, dropped
                )
            return False
        return True

    def check_drift(self) -> bool:
        """Queue a drift message if the model needs retraining and no worker told it today."""
        drift = drift_now(self.storage, self.settings)
        if not drift["needs_retraining"]:
            return False
        reasons = "; ".join(drift["reasons"])
        day = datetime.now(UTC).strftime("%Y-%m-%d")
        key = f"drift:{day}:{hashlib.sha256(reasons.encode()).hexdigest()[:16]}"
        if not claim_notification(self.storage, key):
            return False
        text = f"tvgw: model drift, retraining advised ({reasons}; {drift['samples']} resolved predictions)"
        return self.put(Message("drift", text, {"reasons": drift["reasons"], "samples": drift["samples"]}))

    def check_books(self) -> int:
        """Queue a message for each market whose books the reconciler found off and no worker
        told yet (once per episode: the key names when it started); how many were queued."""
        told = 0
        for check in book_checks(self.storage):
            if check.status != "off":
                continue
            key = f"books:{check.broker}:{check.symbol}:{check.off_since}"
            if not claim_notification(self.storage, key):
                continue
            text = f"tvgw: books DISAGREE with the exchange on account {check.broker}: {check.detail}"
            facts = {"account": check.broker, "symbol": check.symbol, "booked": check.booked,
                     "exchange": check.exchange, "difference": check.difference}  # fmt: skip
            told += self.put(Message("books_off", text, facts))
        return told

    def check_model_events(self) -> int:
        """Queue a message for each model role change recorded since this worker last looked
        (the last hour on its first look) that no worker told yet; returns how many."""
        since = time.time() - MODEL_EVENTS_LOOKBACK_S if self._last_event_id == 0 else None
        events = role_store.list_events(self.storage, after_id=self._last_event_id, since=since, limit=100)
        told = 0
        for event in reversed(events):  # oldest first
            self._last_event_id = max(self._last_event_id, event.id)
            if claim_notification(self.storage, f"model-event:{event.id}"):
                told += self.put(model_event_message(event))
        return told

    # --- the sender thread -----------------------------------------------------------------------------
    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="tvgw-notify", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        session = requests.Session()
        checks = (
            (self.check_drift, self.drift_check_s, "drift check"),
            (self.check_books, BOOKS_CHECK_S, "books check"),
            (self.check_model_events, self.model_events_check_s, "model events check"),
        )
        due = [time.monotonic() + interval for _, interval, _ in checks]
        while True:
            try:
                message = self.queue.get(timeout=max(0.1, min(due) - time.monotonic()))
            except queue.Empty:
                message = None
            if message is not None:
                for channel in self.channels:
                    self.send(session, channel, message)
                self.queue.task_done()
            for i, (check, interval, what) in enumerate(checks):
                if due[i] <= time.monotonic():  # also between messages: a busy queue starves no check
                    due[i] = time.monotonic() + interval
                    self._safely(check, what)

    def _safely(self, check: Callable[[], object], what: str) -> None:
        try:
            check()
        except Exception:
            log.exception("%s for notifications failed; tried again later", what)

    def send(self, session: requests.Session, channel: str, message: Message) -> bool:
        """One attempt, with the timeout; the outcome is counted, a failure logged (without the
        URL: Telegram's and Discord's carry their token)."""
        from webhook.metrics import NOTIFICATIONS

        text = self.redactor.text(message.text)
        url, body = self._request(channel, text, message)
        try:
            response = session.post(url, json=body, timeout=self.config.timeout_s, allow_redirects=False)
            ok = 200 <= response.status_code < 300
            problem = f"HTTP {response.status_code}"
        except requests.RequestException as exc:
            ok, problem = False, type(exc).__name__
        NOTIFICATIONS.labels(channel=channel, outcome="sent" if ok else "failed").inc()
        if not ok:
            log.warning("%s notification (%s) failed: %s; not retried", channel, message.kind, problem)
        return ok

    def _request(self, channel: str, text: str, message: Message) -> tuple[str, dict[str, Any]]:
        c = self.config
        if channel == "telegram":
            url = f"{c.telegram_api_url.rstrip('/')}/bot{c.telegram_bot_token}/sendMessage"
            return url, {"chat_id": c.telegram_chat_id, "text": text, "disable_web_page_preview": True}
        if channel == "discord":
            return str(c.discord_webhook_url), {"content": text[:2000], "allowed_mentions": {"parse": []}}
        facts = self.redactor.value(message.facts)
        return str(c.webhook_url), {"event": message.kind, "text": text, **facts}

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """For tests and shutdown: True once every queued message has been handled."""
        deadline = time.monotonic() + timeout
        while self.queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self.queue.unfinished_tasks
