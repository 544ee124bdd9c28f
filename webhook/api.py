"""Read-only JSON API over what the gateway recorded. Bearer token: ``TVGW_API_TOKEN``."""

from __future__ import annotations

import dataclasses
import hmac
import math
import re
import time
from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import Blueprint, request

from engine.brokers.base import Broker
from engine.exceptions import BrokerError
from settings import B64TOKEN
from storage import alerts as alert_store
from storage import orders as order_store
from storage import timeline as step_store
from webhook import current_gateway
from webhook.api_json import api_response, query_limit, with_synthetic
from webhook.errors import ApiError

bp = Blueprint("api", __name__, url_prefix="/api")


#: RFC 6750 section 2.1: ``Bearer`` (any case), one or more spaces, one b64token, nothing else.
_BEARER = re.compile(rf"[Bb][Ee][Aa][Rr][Ee][Rr] +({B64TOKEN})")
_REALM = 'Bearer realm="tvgw"'


def token_required(view: Callable[..., Any]) -> Callable[..., Any]:
    """Refuse unless ``Authorization: Bearer <TVGW_API_TOKEN>``; the API is off without a token."""

    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        token = current_gateway().settings.api_token
        if not token:
            raise ApiError(404, "api_disabled", "the API is disabled: set TVGW_API_TOKEN to enable it")
        check_bearer(request.headers.get("Authorization"), token)
        return view(*args, **kwargs)

    return wrapped


def check_bearer(header: str | None, token: str) -> None:
    """Accept only ``Authorization: Bearer <token>`` (RFC 6750); else 401 with the challenge.

    A bare token, another scheme or trailing words are refused even when the token inside is
    right: a proxy or a log that treats the header by its scheme must see what we accept.
    """
    if not header:
        raise ApiError(
            401, "unauthorized", "missing bearer token: send Authorization: Bearer <TVGW_API_TOKEN>",
            headers={"WWW-Authenticate": _REALM},
        )  # fmt: skip
    match = _BEARER.fullmatch(header)
    if match is None:
        raise ApiError(
            401, "unauthorized", "malformed Authorization header: expected exactly 'Bearer <token>'",
            headers={"WWW-Authenticate": _REALM},
        )  # fmt: skip
    if not hmac.compare_digest(match.group(1).encode(), token.encode()):
        raise ApiError(
            401, "unauthorized", "wrong bearer token",
            headers={"WWW-Authenticate": f'{_REALM}, error="invalid_token"'},
        )  # fmt: skip


#: The largest row id SQLite can hold; a larger one in a URL is a row that cannot exist (404).
MAX_ROW_ID = 2**63 - 1


def _days(default: str = "30") -> float:
    raw = request.args.get("days", default)
    try:
        days = float(raw)
    except ValueError:
        days = math.nan
    if not 0 < days <= 3650:  # also false for NaN
        raise ApiError(
            400, "invalid_days", f"days must be a number above 0 and at most 3650, got {raw!r}", where="days"
        )
    return days


@bp.get("/alerts")
@token_required
def alerts() -> Any:
    return api_response(
        alert_store.list_alerts(
            current_gateway().storage, limit=query_limit(), status=request.args.get("status")
        )
    )


@bp.get(f"/alerts/<int(max={MAX_ROW_ID}):alert_id>")
@token_required
def alert(alert_id: int) -> Any:
    gateway = current_gateway()
    row = alert_store.get_alert_row(gateway.storage, alert_id)
    if row is None:
        raise ApiError(404, "not_found", f"no alert {alert_id}")
    return api_response({**row, "orders": order_store.list_orders(gateway.storage, alert_id=alert_id)})


@bp.get(f"/alerts/<int(max={MAX_ROW_ID}):alert_id>/timeline")
@token_required
def alert_timeline(alert_id: int) -> Any:
    """Every step of one alert with its time: fired, received, decided, ordered, each fill, each
    exit (and any repair), the latency of each step and the fills' slippage."""
    found = step_store.alert_timeline(current_gateway().storage, alert_id)
    if found is None:
        raise ApiError(404, "not_found", f"no alert {alert_id}")
    return api_response(dataclasses.asdict(found))


@bp.get("/feeds")
@token_required
def feeds() -> Any:
    """Each chart feed: its newest heartbeat, what it owes next, and its unsettled gaps."""
    return api_response([status.to_dict() for status in current_gateway().continuity.statuses()])


@bp.get("/feeds/daily")
@token_required
def feeds_daily() -> Any:
    """Per strategy and day: alerts expected, received, missed, repaired; median latencies."""
    since = time.time() - _days(default="7") * 86_400
    rows = step_store.daily_summary(
        current_gateway().storage, since=since, strategy_id=request.args.get("strategy_id")
    )
    return api_response([dataclasses.asdict(r) for r in rows])


@bp.get("/orders")
@token_required
def orders() -> Any:
    return api_response(order_store.list_orders(current_gateway().storage, limit=query_limit()))


@bp.get("/positions")
@token_required
def positions() -> Any:
    """The default account's book at the top (as before accounts existed), and every account's
    book under ``accounts``, in the order the gateway knows them. Each book is read once: the
    top is the first of them (the default account), not a second read of the same exchange."""
    books = [account_book(desk.broker) for desk in current_gateway().engine.desks()]
    default = books[0]
    top = {"broker": default["account"], **{k: v for k, v in default.items() if k != "account"}}
    return api_response({**top, "accounts": books})


def account_book(broker: Broker) -> dict[str, Any]:
    """One account's open positions and equity. An exchange that cannot be read says why in
    ``equity_error`` instead of failing the whole answer: the other accounts' books still show."""
    storage = current_gateway().storage
    book: dict[str, Any] = {
        "account": broker.name,
        "positions": with_synthetic(storage, order_store.list_positions(storage, broker.name)),
    }
    try:
        book["equity"] = broker.equity()
    except BrokerError as exc:
        book["equity"], book["equity_error"] = None, str(exc)
    return book


@bp.get("/accuracy")
@token_required
def accuracy() -> Any:
    """``evaluate_recent_performance`` as JSON: ``?symbol=BTC/USDT&days=30``."""
    from ml_integration.tracking import evaluate_recent_performance

    return api_response(
        evaluate_recent_performance(current_gateway().storage, request.args.get("symbol"), _days())
    )
