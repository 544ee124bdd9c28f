"""What happened to one alert, read once from the gateway's answer, for the side channels that
watch the webhook (metrics, notifications). They hang off ``after_request``: the alert path
itself is not touched, and they only ever see the answer, which is already free of secrets."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response, g, request

from ml_integration.tracking import drift_report
from settings import Settings
from storage import Storage

__all__ = ["AlertEvent", "drift_now", "watch_webhook"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class AlertEvent:
    """The facts of one webhook answer that operators count or are told about."""

    alert_id: int | None
    http_status: int
    status: str
    code: str
    symbol: str | None = None
    side: str | None = None
    amount: float | None = None
    price: float | None = None
    fill_status: str | None = None
    reason: str | None = None
    risk_codes: tuple[str, ...] = ()
    has_order: bool = False
    enrichment_ms: float | None = None
    seconds: float = 0.0
    #: (account, reason) of each account whose broker failed while the alert's leading account
    #: did not (one alert, several accounts): the answer's status says what filled, not this.
    account_failures: tuple[tuple[str, str], ...] = ()
    #: Messages of the alert's chart found missing when it arrived (engine.continuity): each
    #: is told and counted like the gaps the overdue check finds.
    gaps: tuple[dict[str, Any], ...] = ()

    @property
    def kind(self) -> str | None:
        """``trade``, ``risk_refusal`` or ``exchange_failure`` (what is worth a message), else None."""
        if self.status == "executed" and self.has_order:
            return "trade"
        if self.status == "failed":
            return "exchange_failure"
        if self.status == "rejected" and self.risk_codes:
            return "risk_refusal"
        return None

    @classmethod
    def from_answer(cls, http_status: int, body: dict[str, Any], seconds: float) -> AlertEvent:
        decision = body.get("decision") or {}
        error = body.get("error") or {}
        order = decision.get("order") or {}
        fill = decision.get("fill") or {}
        ml = body.get("ml_analysis") or {}
        latency = ml.get("latency_ms")
        return cls(
            alert_id=body.get("alert_id"), http_status=http_status,
            status=str(body.get("status", "unknown")),
            code=str(error.get("code") or (decision.get("risk") or {}).get("codes", ["none"])[0]),
            symbol=decision.get("symbol"), side=order.get("side"),
            amount=fill.get("filled") or order.get("amount"),
            price=fill.get("average") or order.get("price"), fill_status=fill.get("status"),
            reason=decision.get("reason") or error.get("message"),
            risk_codes=tuple((decision.get("risk") or {}).get("codes", ())), has_order=bool(order),
            enrichment_ms=float(latency) if isinstance(latency, int | float) else None, seconds=seconds,
            account_failures=_account_failures(decision),
            gaps=tuple(g for g in body.get("gaps") or () if isinstance(g, dict)),
        )  # fmt: skip


def _account_failures(decision: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    lead = decision.get("account")
    lines = decision.get("accounts") or ()
    return tuple(
        (str(line.get("account")), str(line.get("reason")))
        for line in lines
        if isinstance(line, dict) and line.get("status") == "failed" and line.get("account") != lead
    )


def watch_webhook(app: Flask, *listeners: Callable[[AlertEvent], None]) -> None:
    """Call every listener with the :class:`AlertEvent` of each ``POST /webhook`` answer."""

    @app.before_request
    def _start() -> None:
        if request.path == "/webhook" and request.method == "POST":
            g.tvgw_started = time.perf_counter()

    @app.after_request
    def _answered(response: Response) -> Response:
        started = g.get("tvgw_started")
        if started is None or request.path != "/webhook":
            return response
        body = response.get_json(silent=True)
        event = AlertEvent.from_answer(
            response.status_code, body if isinstance(body, dict) else {}, time.perf_counter() - started
        )
        for listener in listeners:
            try:
                listener(event)
            except Exception:
                # The alert is recorded and answered already: a side channel's bug must not turn
                # that answer into a 500. It is logged with its traceback, loudly.
                log.exception("webhook listener %s failed for alert %s", listener, event.alert_id)
        return response


def drift_now(storage: Storage, settings: Settings) -> dict[str, Any]:
    """:func:`ml_integration.tracking.drift_report` with the configured thresholds (the dashboard, the
    metrics and the drift notification all judge drift the same way)."""
    return drift_report(
        storage, min_accuracy=settings.drift_min_accuracy, max_drawdown=settings.drift_max_drawdown,
        min_sharpe=settings.drift_min_sharpe, days=settings.drift_window_days,
    )  # fmt: skip
