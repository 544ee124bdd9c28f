"""POST /webhook (the alert intake) and GET /healthz."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge

from storage import SCHEMA_VERSION
from webhook import current_gateway
from webhook.auth import CLIENT_VERIFY_HEADER, client_ip
from webhook.dashboard import books_view

bp = Blueprint("webhook", __name__)
log = logging.getLogger(__name__)


@bp.post("/webhook")
def webhook() -> Any:
    gateway = current_gateway()
    try:
        # The app's MAX_CONTENT_LENGTH is one byte above the cap, so a chunked body (no
        # Content-Length), which werkzeug cuts at that limit rather than refusing, shows itself
        # as too large here instead of being parsed cut.
        raw = request.get_data(cache=False)
        oversized = len(raw) > gateway.settings.max_body_bytes
    except RequestEntityTooLarge:
        oversized = True
    if oversized:
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
    """Liveness and what needs a human: 200 ``ok``; 200 ``degraded`` (serving, but the schema or a
    model is wrong, the books disagree with the exchange, or a chart's alert went missing within
    TVGW_GAP_PROBLEM_S, each named in ``problems``); 503 ``down`` (no database). Its cost is
    fixed: the
    model store is read from disk (hashes remembered until a file changes) and the drift report
    is cached per worker, so polling it never grows with the prediction log."""
    gateway = current_gateway()
    body: dict[str, Any] = {"status": "ok", "broker": gateway.broker.name}
    problems: list[str] = []
    try:
        gateway.storage.ping()
        version = gateway.storage.schema_version()
        missing = gateway.storage.missing_tables()
        body["database"] = {"ok": not missing, "schema_version": version, "expected": SCHEMA_VERSION}
        if missing:
            body["database"]["missing_tables"] = missing
        if version != SCHEMA_VERSION or missing:
            problems.append(f"database schema {version} (expected {SCHEMA_VERSION}); missing: {missing}")
    except Exception as exc:
        body["status"] = "down"
        body["database"] = {"ok": False, "error": str(exc)}
    if body["status"] != "down":
        books = books_view(gateway.storage)
        body["books"] = {"ok": not books["off"], **books}
        problems.extend(f"books of {c['symbol']} on {c['account']} disagree with the exchange: {c['detail']}"
                        for c in books["off"])  # fmt: skip
    models = gateway.signals.status()
    if not models.ok:
        problems.extend(models.problems)
    if body["status"] != "down" and not body["database"].get("missing_tables"):
        gaps = gateway.continuity.problems()
        problems.extend(notice.text for notice in gaps)
        body["feeds"] = {"open_gaps": len(gaps)}
    if problems and body["status"] == "ok":
        body["status"] = "degraded"
    body["problems"] = problems
    body["model"] = models.to_dict()
    body["model"]["drift"] = gateway.drift.report()
    return jsonify(body), 200 if body["status"] != "down" else 503
