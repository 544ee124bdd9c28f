"""The dashboard at ``/``: what the gateway did, live, for its owner, from a desk or a phone.

Login is the API token typed once into a form; the session is a signed cookie (HttpOnly,
SameSite=Strict) whose signing key is derived from the token, so every gunicorn worker accepts
it and rotating the token logs every session out. Forms that change state (login, logout) carry
a CSRF token bound to the session. The dashboard only reads: steering goes through the
token-protected API. Charts are Plotly, served from the installed ``plotly`` package (no CDN).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import secrets
import time
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

from flask import (
    Blueprint,
    Flask,
    Response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

from ml_integration.champions import ChampionRules, market_report
from storage import alerts as alert_store
from storage import analytics
from storage import candles as candle_store
from storage import orders as order_store
from storage import predictions as prediction_store
from storage import timeline as step_store
from storage.champions import list_roles
from storage.reconciliation import book_checks
from webhook import current_gateway
from webhook.api import MAX_ROW_ID, account_book
from webhook.api_json import api_response, query_int, with_synthetic
from webhook.errors import ApiError
from webhook.events import drift_now
from webhook.ml_api import model_views

__all__ = ["bp", "configure_sessions"]

#: Days of the per-strategy continuity summary the page shows.
DAILY_DAYS = 7

bp = Blueprint("dashboard", __name__, template_folder="templates", static_folder="static",
               static_url_path="/dashboard/static")  # fmt: skip

#: Content Security Policy: scripts and data from this gateway only; Plotly sets inline styles.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)


def configure_sessions(app: Flask, api_token: str | None, *, secure_cookie: bool) -> None:
    """Sign sessions with a key derived from the API token (never the token itself)."""
    if api_token:
        app.secret_key = hmac.new(api_token.encode(), b"tvgw dashboard session", hashlib.sha256).hexdigest()
    app.config.update(
        SESSION_COOKIE_NAME="tvgw_session", SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_SECURE=secure_cookie, PERMANENT_SESSION_LIFETIME=timedelta(hours=12),
    )  # fmt: skip


def _csrf_token() -> str:
    token = session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(24)
        session["csrf"] = token
    return token


def _check_csrf() -> None:
    given = request.form.get("csrf", "")
    expected = session.get("csrf")
    if not isinstance(expected, str) or not hmac.compare_digest(given.encode(), expected.encode()):
        raise ApiError(
            403, "csrf", "the form's CSRF token is missing or stale: reload the page and try again"
        )


def _logged_in() -> bool:
    return bool(session.get("operator")) and bool(current_gateway().settings.api_token)


def _page(template: str, status: int = 200, **context: Any) -> tuple[Response, int]:
    # Without a token there is no session key, so no session (and nothing a form could change).
    csrf = _csrf_token() if current_gateway().settings.api_token else ""
    response = Response(render_template(template, csrf=csrf, **context), status)
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"
    return response, status


@bp.get("/")
def index() -> Any:
    if not current_gateway().settings.api_token:
        return _page("login.html", 404, disabled=True, error=None)
    if not _logged_in():
        return _page("login.html", disabled=False, error=None)
    return _page("dashboard.html", broker=current_gateway().broker.name)


@bp.post("/login")
def login() -> Any:
    token = current_gateway().settings.api_token
    if not token:
        return _page("login.html", 404, disabled=True, error=None)
    _check_csrf()
    given = request.form.get("token", "")
    if not hmac.compare_digest(given.encode(), token.encode()):
        return _page(
            "login.html", 401, disabled=False, error="Wrong token. It is the value of TVGW_API_TOKEN."
        )
    session.clear()  # a fresh session (and CSRF token) after login: no fixation
    session["operator"] = True
    session.permanent = True
    return redirect(url_for("dashboard.index"), code=303)


@bp.post("/logout")
def logout() -> Any:
    _check_csrf()
    session.clear()
    return redirect(url_for("dashboard.index"), code=303)


def _session_required() -> None:
    if not _logged_in():
        raise ApiError(401, "unauthorized", "log in at / with the API token first")


@bp.get("/dashboard/data")
def data() -> Any:
    """Everything the page shows, in one read: alerts, models and their roles (why the champion
    is champion, the challenger's paired test), accuracy, equity, positions."""
    _session_required()
    gateway = current_gateway()
    drift = drift_now(gateway.storage, gateway.settings)
    book = account_book(gateway.broker)
    equity = analytics.equity_curve(gateway.storage, gateway.broker.name)
    if book["equity"] is not None:
        # The curve ends now, at the equity /api/positions shows (the one valuation: cash plus
        # positions at the shared marks), not at the last trade's snapshot.
        equity.append({"at": time.time(), "equity": book["equity"]})
    storage = gateway.storage
    positions = [
        {"account": desk.broker.name, **p}
        for desk in gateway.engine.desks()
        for p in with_synthetic(storage, order_store.list_positions(storage, desk.broker.name))
    ]
    since = time.time() - DAILY_DAYS * 86_400
    models, health = model_views(limit=50), gateway.signals.status()
    markets = {p["symbol"] for p in positions} | {m["symbol"] for m in models}
    markets |= {m.symbol for m in health.store}
    rules = ChampionRules.from_settings(gateway.settings)
    return api_response({
        "feeds": [status.to_dict() for status in gateway.continuity.statuses()],
        "daily": [dataclasses.asdict(d) for d in step_store.daily_summary(gateway.storage, since=since)],
        "alerts": [_alert_view(a) for a in alert_store.list_alerts(gateway.storage, limit=50)],
        "models": models, "model_health": health.to_dict(), "drift": drift,
        "champions": [market_report(gateway.storage, r, rules) for r in list_roles(gateway.storage)],
        "calibration": analytics.calibration_bins(gateway.storage),
        "accuracy": analytics.accuracy_by_day(gateway.storage, days=30),
        "equity": equity, "broker": gateway.broker.name, "equity_error": book.get("equity_error"),
        "positions": positions, "books": books_view(gateway.storage),
        # The markets shown whose prices are generated (one index seek each): the page says so.
        "synthetic_markets": sorted(m for m in markets if candle_store.is_synthetic_market(storage, m)),
    })  # fmt: skip


def books_view(storage: Any) -> dict[str, Any]:
    """The reconciler's verdict for the page and ``/healthz``: how many markets it compared,
    and those whose books disagree with the exchange (confirmed on two passes)."""
    checks = book_checks(storage)
    off = [{"account": c.broker, "symbol": c.symbol, "difference": c.difference, "detail": c.detail,
            "since": c.off_since} for c in checks if c.status == "off"]  # fmt: skip
    return {"checked": len(checks), "off": off}


def _alert_view(row: dict[str, Any]) -> dict[str, Any]:
    ml = row.get("ml_analysis") or {}
    decision = row.get("decision") or {}
    return {
        "id": row["id"], "received_at": row["received_at"], "strategy_id": row["strategy_id"],
        "symbol": row["symbol"] or row["ticker"], "action": row["action"], "status": row["status"],
        "decision": decision.get("action") or decision.get("status"),
        "grade": ml.get("quality_grade"), "probability": ml.get("direction_probability"),
        "ml_error": ml.get("error"), "reason": row["reason"], "error_code": row["error_code"],
    }  # fmt: skip


@bp.get(f"/dashboard/alerts/<int(max={MAX_ROW_ID}):alert_id>/timeline")
def alert_timeline(alert_id: int) -> Any:
    """One alert's timeline (what ``/api/alerts/<id>/timeline`` answers), for the page's view."""
    _session_required()
    found = step_store.alert_timeline(current_gateway().storage, alert_id)
    if found is None:
        raise ApiError(404, "not_found", f"no alert {alert_id}")
    return api_response(dataclasses.asdict(found))


@bp.get("/dashboard/predictions")
def prediction_feed() -> Any:
    """The live feed: predictions newer than ``after_id`` (the page polls every few seconds)."""
    _session_required()
    rows = prediction_store.list_predictions(
        current_gateway().storage, after_id=query_int("after_id", 0, low=0, high=MAX_ROW_ID), limit=50
    )
    return api_response(rows)


@bp.get("/dashboard/plotly.min.js")
def plotly_js() -> Any:
    """Plotly from the installed package (it ships the minified bundle): no CDN, no copy here."""
    response = Response(_plotly_bundle(), mimetype="text/javascript")
    response.cache_control.max_age = 86_400
    response.cache_control.public = True
    return response


@lru_cache(maxsize=1)
def _plotly_bundle() -> bytes:
    """Read once per worker (3.5 MB) and kept: every dashboard load asks for it."""
    import plotly

    return (Path(plotly.__file__).parent / "package_data" / "plotly.min.js").read_bytes()
