"""POST /webhook (the alert intake) and GET /healthz."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge

from engine.outcomes import drift_report
from storage import SCHEMA_VERSION
from webhook import current_gateway
from webhook.auth import CLIENT_VERIFY_HEADER, client_ip

bp = Blueprint("webhook", __name__)
log = logging.getLogger(__name__)


@bp.post("/webhook")
def webhook() -> Any:
    gateway = current_gateway()
    try:
        raw = request.get_data(cache=False)
    except RequestEntityTooLarge:
        ip = client_ip(request.remote_addr, request.headers.get("X-Forwarded-For"), gateway.settings)
        reply = gateway.record_oversized(request.content_length, ip)
        return jsonify(reply.body), reply.status
    reply = gateway.handle(
        raw,
        request.remote_addr,
        request.headers.get("X-Forwarded-For"),
        request.headers.get(CLIENT_VERIFY_HEADER),
    )
    return jsonify(reply.body), reply.status


@bp.get("/healthz")
def healthz() -> Any:
    gateway = current_gateway()
    body: dict[str, Any] = {"status": "ok", "broker": gateway.broker.name}
    try:
        gateway.storage.ping()
        version = gateway.storage.schema_version()
        missing = gateway.storage.missing_tables()
        body["database"] = {"ok": not missing, "schema_version": version, "expected": SCHEMA_VERSION}
        if missing:
            body["database"]["missing_tables"] = missing
        if version != SCHEMA_VERSION or missing:
            body["status"] = "degraded"
    except Exception as exc:
        body["status"] = "down"
        body["database"] = {"ok": False, "error": str(exc)}
    body["model"] = gateway.enricher.status()
    settings = gateway.settings
    body["model"]["drift"] = drift_report(
        gateway.storage, min_accuracy=settings.drift_min_accuracy, max_drawdown=settings.drift_max_drawdown,
        min_sharpe=settings.drift_min_sharpe, days=settings.drift_window_days,
    )  # fmt: skip
    if body["model"]["drift"]["needs_retraining"]:
        log.warning("model needs retraining: %s", "; ".join(body["model"]["drift"]["reasons"]))
    return jsonify(body), 200 if body["status"] != "down" else 503
