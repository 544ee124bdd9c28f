"""The one path an alert walks: parse → validate → authenticate → deduplicate → record →
enrich → decide → execute → answer. Every branch records the alert before answering."""

from __future__ import annotations

import ipaddress
import logging
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from engine.alert import Alert
from engine.brokers.base import Broker
from engine.decision import Decision
from engine.engine import NO_PRICE_HINT, TradingEngine, pure_exit
from engine.exceptions import BrokerError, PriceCheckError
from engine.market import MarketPrices, ReferencePrice, check_alert_price
from engine.outcomes import DriftMonitor, DriftThresholds
from engine.timeframes import from_tradingview
from storage import Storage
from storage import alerts as alert_store
from storage import marks as mark_store
from storage import orders as order_store
from storage import state as state_store
from tvgw.config import Settings, StrategySettings, secret_values
from webhook.auth import authenticate, check_client_certificate, client_ip, ip_allowed
from webhook.enrichment import Enricher
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

    def __init__(self, settings: Settings, storage: Storage, broker: Broker, enricher: Enricher):
        self.settings = settings
        self.storage = storage
        self.broker = broker
        self.engine = TradingEngine(settings, storage, broker)
        self.prices = MarketPrices(storage, broker)
        self.enricher = enricher
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
        received_at = time.time()
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
        return self._process(alert, strategy.id, ip, received_at)

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
        strategy = self.settings.strategies[strategy_id]
        alert = alert.model_copy(update={"strategy_id": strategy_id})
        # Keyed on the market the broker resolves, so every spelling of one ticker is one alert;
        # an unresolvable ticker (rejected, no order) is keyed on its own spelling.
        symbol = self._symbol(alert)
        key = alert.idempotency_key(datetime.fromtimestamp(received_at, UTC), symbol or alert.ticker)
        reference = self._reference(alert, strategy, key, symbol)
        enrichment = self.enricher.enrich(alert, strategy)
        snapshot = self.engine.snapshot(alert, strategy, enrichment.candles, reference)
        payload = self.redactor.record(alert)
        fields = alert.record_fields()
        instant = self.broker.settles_instantly

        def decide_and_record(conn: Any) -> tuple[Decision, int, str | None, Reply | None]:
            """The alert's write transaction (group-committed with other threads' alerts)."""
            decision = self.engine.decide(conn, alert, strategy, snapshot, enrichment.opinion)
            fields["symbol"] = decision.symbol
            if decision.symbol and reference is not None and reference.trusted:
                # The trusted price becomes the shared mark: every worker values the book at it.
                mark_store.set_mark(
                    conn, self.broker.name, decision.symbol, reference.price, reference.source
                )
            outcome = None if decision.order is not None else self._outcome(decision, enrichment.analysis)
            alert_id = alert_store.claim_alert(
                conn, idempotency_key=key, received_at=received_at, source_ip=ip, payload=payload,
                fields=fields, status=decision.status, outcome=outcome,
            )  # fmt: skip
            if alert_id is None:
                original = alert_store.original_for_key(conn, key)
                assert original is not None
                dup_id = alert_store.insert_duplicate(
                    conn, original_id=original, received_at=received_at, source_ip=ip,
                    payload=payload, fields=fields,
                )  # fmt: skip
                return decision, dup_id, None, self._duplicate_reply(original, dup_id)
            self.enricher.record(conn, alert_id, enrichment)
            stamp = alert.timenow or alert.time
            if decision.symbol and stamp is not None:
                state_store.set_last_alert_time(conn, strategy_id, decision.symbol, stamp.timestamp())
            client_order_id = None
            if decision.order is not None:
                client_order_id = f"tvgw-{alert_id}-{int(received_at) % 100000}"
                order_store.create_pending_order(
                    conn, alert_id=alert_id, client_order_id=client_order_id,
                    broker=self.broker.name, symbol=decision.order.symbol, side=decision.order.side,
                    order_type="market", amount=decision.order.amount, price=decision.order.price,
                )  # fmt: skip
                self.engine.note_equity(conn, snapshot.equity)
                if instant:
                    decision = self.engine.send(decision, client_order_id)
                    self.engine.settle(conn, decision)
                    self._finish(conn, alert_id, decision, enrichment.analysis)
            return decision, alert_id, client_order_id, None

        decision, alert_id, client_order_id, duplicate = self.storage.write_batched(decide_and_record)
        if duplicate is not None:
            return duplicate
        if decision.order is not None and not instant:
            assert client_order_id is not None
            decision = self.engine.send(decision, client_order_id)
            with self.storage.transaction() as conn:
                self.engine.settle(conn, decision)
                self._finish(conn, alert_id, decision, enrichment.analysis)
        return Reply(_http_status(decision), alert_response(alert_id, decision, enrichment.analysis))

    def _symbol(self, alert: Alert) -> str | None:
        """The market the alert names, or None when the broker does not know it (the decision
        then refuses it with the broker's reason)."""
        try:
            return self.broker.resolve_symbol(alert.ticker, alert.exchange)
        except BrokerError:
            return None

    def _reference(
        self, alert: Alert, strategy: StrategySettings, key: str, symbol: str | None
    ) -> ReferencePrice | None:
        """The market price this alert is decided and filled at, after checking the alert's own
        prices against it. Raises a 422 :class:`ApiError` (recorded as a refusal) when the
        alert's price or bar close strays outside TVGW_MAX_PRICE_DEVIATION, or when nothing
        trustworthy is known and the alert could add exposure. A pure exit with no current
        price is valued at the last mark (or entry price): it can close, never mint cash.

        A repeat of an alert already on file is not checked: it acts nowhere and answers as a
        duplicate with the first outcome (the claim in the transaction still decides that)."""
        if symbol is None or strategy.mode == "annotate":
            return None
        if alert_store.original_for_key(self.storage.conn, key) is not None:
            return None
        timeframe = from_tradingview(alert.interval, strategy.timeframe)
        reference = self.prices.reference(symbol, timeframe)
        if reference is None:
            if pure_exit(alert, strategy):
                return self.prices.last_known(symbol)
            self.enricher.store_bar(alert, strategy)  # a bar is how TradingView can give one
            raise ApiError(
                422,
                "no_market_price",
                f"the gateway knows no recent market price for {symbol} to check the alert's "
                f"price against: {NO_PRICE_HINT}",
                where="price",
            )
        try:
            for field, claimed in (("price", alert.price), ("close", alert.close)):
                if claimed is not None:
                    check_alert_price(field, claimed, reference, self.settings.max_price_deviation)
        except PriceCheckError as exc:
            raise ApiError(422, exc.code, exc.message, where=exc.field) from None
        return reference

    @staticmethod
    def _outcome(decision: Decision, ml_analysis: dict[str, Any] | None) -> dict[str, Any]:
        return {
            "http_status": _http_status(decision),
            "reason": decision.reason,
            "decision": decision.as_json(),
            "ml_analysis": ml_analysis,
        }

    def _finish(
        self, conn: Any, alert_id: int, decision: Decision, ml_analysis: dict[str, Any] | None
    ) -> None:
        alert_store.finish_alert(
            conn, alert_id, status=decision.status, http_status=_http_status(decision),
            reason=decision.reason, decision=decision.as_json(), ml_analysis=ml_analysis,
            symbol=decision.symbol,
        )  # fmt: skip

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
        alert_id = self._record_refusal(exc, b"", None, ip, time.time())
        log.info("alert id=%s status=refused http=413 ip=%s too_large", alert_id, ip)
        return Reply(413, {**exc.to_dict(), "alert_id": alert_id})


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


def _http_status(decision: Decision) -> int:
    """Broker trouble is the gateway's upstream failing (502); every decision else is 200."""
    return 502 if decision.status == "failed" else 200


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
