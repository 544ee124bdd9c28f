"""The webhook's side of an alert's path: parse → limits → allowlist → authenticate → validate
(HTTP concerns only), then the ML layer's signal (:mod:`ml_integration.serving`) and the engine's
one door (:meth:`engine.engine.TradingEngine.process_signal`), and the answer. Every branch
records the alert before answering."""

from __future__ import annotations

import ipaddress
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from common.timeframes import from_tradingview
from engine.alert import Action, Alert
from engine.brokers.base import Broker
from engine.continuity import Continuity, Notice
from engine.decision import Clock, Decision, Receipt, SystemClock
from engine.engine import TradingEngine
from engine.exceptions import AlertRefusedError, BrokerError
from ml_integration.serving import ServedSignal, SignalService
from ml_integration.tracking import DriftMonitor, DriftThresholds
from settings import Settings, StrategySettings, secret_values
from storage import Connection, Storage
from storage import alerts as alert_store
from storage import timeline as step_store
from webhook.auth import authenticate, check_client_certificate, client_ip, ip_allowed
from webhook.errors import ApiError
from webhook.parsing import parse_alert_body
from webhook.redaction import Redactor, install_log_redaction
from webhook.responses import alert_response

__all__ = ["Gateway", "Reply"]

log = logging.getLogger("tvgw.alerts")

#: How much of a refused body is kept for the record (after its secrets are scrubbed).
REFUSED_BODY_CHARS = 8192


@dataclass(frozen=True)
class Reply:
    """What the route sends back: a status code and a JSON body."""

    status: int
    body: dict[str, Any]


class Gateway:
    """Everything one worker needs to handle alerts; built once by the app factory."""

    def __init__(
        self,
        settings: Settings,
        storage: Storage,
        broker: Broker,
        signals: SignalService,
        *,
        accounts: Mapping[str, Broker] | None = None,
        clock: Clock | None = None,
    ):
        self.settings = settings
        self.storage = storage
        self.broker = broker
        #: When an alert is received, and the engine's time: the machine's unless one is handed in.
        self.clock: Clock = clock or SystemClock()
        #: Routes each alert to its strategy's accounts (the default account is ``broker``).
        self.engine = TradingEngine(settings, storage, broker, accounts=accounts or {}, clock=self.clock)
        self.signals = signals
        #: Each chart's feed of heartbeats and order alerts, and the gaps in it.
        self.continuity = Continuity(storage, settings.continuity, settings.strategies, clock=self.clock.now)
        self.redactor = Redactor(secret_values(settings))
        install_log_redaction(self.redactor)
        #: /healthz's drift report, recomputed at most once a minute per worker
        self.drift = DriftMonitor(storage, DriftThresholds.from_settings(settings))

    # --- the webhook -------------------------------------------------------------------------
    def handle(
        self,
        raw: bytes,
        remote_addr: str | None,
        forwarded_for: str | None,
        client_verify: str | None = None,
    ) -> Reply:
        started = time.perf_counter()
        received_at = self.clock.now()
        ip = client_ip(remote_addr, forwarded_for, self.settings)
        parsed: dict[str, Any] | None = None
        try:
            check_client_certificate(remote_addr, client_verify, self.settings)
            self._check_sender(ip, remote_addr, forwarded_for)
            parsed = parse_alert_body(raw, max_depth=self.settings.max_json_depth)
            reply = self._accept(parsed, ip, received_at)
        except ApiError as exc:
            alert_id = self._record_refusal(exc, raw, parsed, ip, received_at)
            reply = Reply(exc.status, {**exc.to_dict(), "alert_id": alert_id})
        except Exception as exc:
            # Our fault, not the client's: still answer in JSON and keep the alert on file.
            log.exception("alert from %s failed inside the gateway", ip)
            error = ApiError(500, "internal_error", f"the gateway failed: {type(exc).__name__}: {exc}")
            alert_id = self._record_refusal(error, raw, parsed, ip, received_at, status="error")
            reply = Reply(500, {**error.to_dict(), "status": "error", "alert_id": alert_id})
        reply = Reply(reply.status, self.redactor.answer(reply.body))
        log.info(
            "alert id=%s status=%s http=%s ip=%s %s ms=%.1f",
            reply.body.get("alert_id"), reply.body.get("status"), reply.status, ip,
            _summary(reply.body), (time.perf_counter() - started) * 1000,
        )  # fmt: skip
        return reply

    def _check_sender(self, ip: str, remote_addr: str | None, forwarded_for: str | None) -> None:
        if (
            _via_local_proxy(ip, remote_addr, forwarded_for)
            and self.settings.allowed_ips
            and not self.settings.trusted_proxies
        ):
            # A proxy in front (it added X-Forwarded-For) that we were not told to trust: the
            # peer address is the proxy's, so checking it would let every sender through.
            raise ApiError(
                403,
                "untrusted_proxy",
                f"request from {ip} carries X-Forwarded-For but "
                "TVGW_TRUSTED_PROXIES is not set: set it to your reverse proxy's address so the "
                "sender's address can be checked against TVGW_ALLOWED_IPS",
            )
        if not ip_allowed(ip, self.settings):
            raise ApiError(403, "forbidden", f"address {ip} is not in TVGW_ALLOWED_IPS")

    def _accept(self, data: dict[str, Any], ip: str, received_at: float) -> Reply:
        strategy = authenticate(data, self.settings)
        self.redactor.refuse_misplaced(data)
        try:
            alert = Alert.model_validate(data)
        except ValidationError as exc:
            raise _validation_error(exc) from None
        self._check_lag(alert, received_at)
        if alert.action is Action.HEARTBEAT:
            return self._heartbeat(alert.model_copy(update={"strategy_id": strategy.id}), received_at)
        return self._process(alert, strategy.id, ip, received_at)

    def _heartbeat(self, alert: Alert, received_at: float) -> Reply:
        """A chart's heartbeat: recorded on its feed (never an order), answered with what the
        feed owes next and any gap it revealed."""
        try:
            symbol = self.broker.resolve_symbol(alert.ticker, alert.exchange)
        except BrokerError:
            symbol = alert.ticker  # still a feed to watch: named as the chart spells it
        assert alert.strategy_id is not None
        booked = self.engine.booked(alert.strategy_id, symbol)
        outcome = self.continuity.heartbeat(alert, symbol, received_at, booked)
        return Reply(200, {
            "alert_id": None, "status": "heartbeat" if outcome.mark is not None else "duplicate",
            "feed": outcome.to_dict(), "gaps": [n.to_dict() for n in outcome.notices],
        })  # fmt: skip

    def _check_lag(self, alert: Alert, received_at: float) -> None:
        if alert.timenow is None:
            return
        lag = received_at - alert.timenow.timestamp()
        limit = self.settings.max_lag_seconds
        if lag > limit:
            raise ApiError(
                422,
                "stale",
                f"alert fired {lag:.0f} s ago (timenow {alert.timenow.isoformat()}); "
                f"TVGW_MAX_LAG_SECONDS is {limit:g}",
                where="timenow",
            )
        if lag < -limit:
            raise ApiError(
                422,
                "from_the_future",
                f"timenow {alert.timenow.isoformat()} is {-lag:.0f} s "
                "ahead of this gateway's clock; check the clocks",
                where="timenow",
            )

    def _process(self, alert: Alert, strategy_id: str, ip: str, received_at: float) -> Reply:
        """Glue: the ML layer's signal for the alert's market, then the engine's one door."""
        strategy = self.settings.strategies[strategy_id]
        alert = alert.model_copy(update={"strategy_id": strategy_id})
        served = self._serve(alert, strategy)
        notices: list[Notice] = []

        def record(conn: Connection, alert_id: int, now: float) -> None:
            """Inside the alert's transaction, once it is claimed: the ML rows, the moment it
            was decided, and its mark on its chart's feed (with any gap that reveals)."""
            served.record(conn, alert_id, now)
            step_store.add_step(conn, alert_id, "decided", now)
            if served.symbol is not None:
                notices.extend(self.continuity.order_mark(conn, alert, alert_id, served.symbol, received_at))

        receipt = Receipt(
            received_at=received_at, source_ip=ip, payload=self.redactor.record(alert),
            ml_analysis=served.analysis(), record=record,
        )  # fmt: skip
        try:
            decision = self._decide(alert, served, receipt)
        except AlertRefusedError as exc:  # a price it cannot trust, a leverage beyond the limit
            message = f"{exc.message}; {SYNTHETIC_REFUSAL}" if served.synthetic_market else exc.message
            raise ApiError(422, exc.code, message, where=exc.field) from None
        assert decision.alert_id is not None
        if decision.duplicate_of is not None:
            return self._duplicate_reply(decision.duplicate_of, decision.alert_id)
        body = alert_response(decision.alert_id, decision, receipt.ml_analysis)
        if notices:
            body["gaps"] = [n.to_dict() for n in notices]
        return Reply(decision.http_status, body)

    def _decide(self, alert: Alert, served: ServedSignal, receipt: Receipt) -> Decision:
        """The engine's door. When the gateway knows no price at all for the market, the bar the
        alert carries becomes its first one (see :func:`first_price_bar`): stored, then the alert
        is decided once more against it, so the first alert of a fresh paper gateway is not lost
        (TradingView never sends it again)."""
        try:
            return self.engine.process_signal(alert, served, receipt=receipt)
        except AlertRefusedError as exc:
            if exc.code != "no_market_price" or self.settings.broker != "paper":
                raise
            bar = first_price_bar(served)
            if bar is None or served.symbol is None or served.timeframe is None:
                raise
            self.signals.store_bar(served.symbol, served.timeframe, bar)
        return self.engine.process_signal(alert, served, receipt=receipt)

    def _serve(self, alert: Alert, strategy: StrategySettings) -> ServedSignal:
        """The ML layer's one signal for the market the alert names (never raises)."""
        try:
            symbol = self.broker.resolve_symbol(alert.ticker, alert.exchange)
        except BrokerError as exc:
            return ServedSignal(error=f"no ML: {exc}")
        timeframe = from_tradingview(alert.interval, strategy.timeframe)
        return self.signals.serve(symbol, timeframe, alert.bar_row())

    def _duplicate_reply(self, original_id: int, dup_id: int) -> Reply:
        record = alert_store.get_alert(self.storage, original_id)
        assert record is not None
        return Reply(200, {
            "alert_id": dup_id, "status": "duplicate", "duplicate_of": original_id,
            "original": {"status": record.status, "reason": record.reason, "decision": record.decision,
                         "ml_analysis": record.ml_analysis},
        })  # fmt: skip

    def _record_refusal(
        self,
        exc: ApiError,
        raw: bytes,
        parsed: dict[str, Any] | None,
        ip: str,
        received_at: float,
        *,
        status: str = "refused",
    ) -> int:
        """Record a refused body: the parsed alert with its secrets scrubbed, or (when it did not
        parse) a scrubbed rendering of the raw text; at most REFUSED_BODY_CHARS of either."""
        if parsed is not None:
            payload = self.redactor.body(parsed, REFUSED_BODY_CHARS)
        else:
            payload = self.redactor.raw_body(raw, REFUSED_BODY_CHARS)
        return alert_store.insert_refused(
            self.storage, received_at=received_at, source_ip=ip, http_status=exc.status,
            error_code=exc.code, reason=self.redactor.text(exc.message), payload=payload, status=status,
        )  # fmt: skip

    def record_oversized(self, length: int | None, ip: str) -> Reply:
        """A body over the size cap is refused unread, but still recorded."""
        cap = self.settings.max_body_bytes
        size = f"{length} bytes" if length is not None else "a chunked body"
        exc = ApiError(413, "too_large", f"{size} exceeds the {cap} byte limit (TVGW_MAX_BODY_BYTES)")
        alert_id = self._record_refusal(exc, b"", None, ip, self.clock.now())
        log.info("alert id=%s status=refused http=413 ip=%s too_large", alert_id, ip)
        return Reply(413, {**exc.to_dict(), "alert_id": alert_id})


#: Added to an engine refusal for a market whose candles are generated.
SYNTHETIC_REFUSAL = (
    "this market's candles are SYNTHETIC (the offline quickstart's generated history; the alert's real "
    "bar is never mixed into it): run `tvgw quickstart --offline --price <the price your chart shows>` "
    "again to bring it up to now at your chart's price, or give the gateway real candles (`tvgw data fetch`)"
)


def first_price_bar(served: ServedSignal) -> list[float] | None:
    """The alert's bar, when it may stand as the first market price the gateway knows.

    How far it is trusted: the alert was authenticated (its strategy's passphrase); the bar is
    coherent (every price positive, low <= open, close <= high); the engine then takes it only if
    it is the current or the last closed bar of its interval (the rule for any stored close), and
    checks the alert's price against its close like any reference. It is stored (source
    ``alert``) and the answer's ``decision.details.price.source`` names it. Only on the paper
    book (an exchange's own ticker is the price there), and never in a synthetic market (its
    bar is not even served then)."""
    bar = served.bar
    if bar is None:
        return None
    _, open_, high, low, close, _ = bar
    if not (0 < low <= min(open_, close) and max(open_, close) <= high):
        return None
    return bar


def _via_local_proxy(ip: str, remote_addr: str | None, forwarded_for: str | None) -> bool:
    """True when a loopback or private-network peer forwarded the request (X-Forwarded-For) and
    that peer was not declared trusted: a reverse proxy on this host or network. A public peer
    that sends the header (a CDN, a client) is still judged by its own address."""
    if not forwarded_for or ip != remote_addr:
        return False
    try:
        peer = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return peer.is_loopback or peer.is_private


_FIELD_IN_MESSAGE = re.compile(r"^field '([^']+)'")


def _validation_error(exc: ValidationError) -> ApiError:
    details: list[dict[str, Any]] = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = ".".join(str(p) for p in err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        named = _FIELD_IN_MESSAGE.search(message)
        if not loc and named is not None:
            loc = named.group(1)  # a whole-alert check that names the field it objects to
        details.append({"field": loc or None, "message": message})
    first = details[0]
    text = f"{first['field']}: {first['message']}" if first["field"] else str(first["message"])
    more = f" (and {len(details) - 1} more)" if len(details) > 1 else ""
    return ApiError(400, "invalid_alert", text + more, where=first["field"], details=details)


def _summary(body: dict[str, Any]) -> str:
    decision = body.get("decision") or {}
    error = body.get("error") or {}
    parts = [f"{k}={decision[k]}" for k in ("symbol", "action") if decision.get(k)]
    reason = decision.get("reason") or error.get("message")
    if reason:
        parts.append(f"reason={reason!r}")
    return " ".join(parts)
