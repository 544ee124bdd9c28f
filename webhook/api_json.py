"""The one place API rows become the JSON an operator reads: times as ISO 8601 UTC, amounts
and prices rounded, and query parameters checked with an error that says what to change."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from flask import Response, jsonify, request

from storage import Storage
from storage.candles import is_synthetic_market
from webhook.errors import ApiError

__all__ = [
    "AMOUNT_DECIMALS",
    "api_response",
    "iso",
    "json_body",
    "query_bool",
    "query_choice",
    "query_float",
    "query_int",
    "query_limit",
    "query_text",
    "to_api",
    "with_synthetic",
]

#: Columns that hold UTC epoch seconds in SQLite (storage/schema.py); the API shows them as ISO.
TIME_KEYS = frozenset({
    "received_at", "updated_at", "alert_time", "timenow", "created_at", "opened_at", "started_at",
    "finished_at", "resolved_at", "timestamp", "candle_time", "target_time", "retired_at", "at",
    "saved_at", "since", "off_since",
})  # fmt: skip
#: Quantities and prices. The paper book has no exchange market to ask for its precision, so
#: they are cut to 8 decimals (a satoshi), the finest precision crypto markets quote.
AMOUNT_KEYS = frozenset({
    "amount", "filled", "contracts", "position_size", "price", "average", "avg_price", "fee",
    "stop_loss", "take_profit", "equity", "realized_pnl", "unrealized_pnl", "pnl", "cash",
    "current_position", "target_position", "price_at_prediction", "entry_price", "mark",
})  # fmt: skip
AMOUNT_DECIMALS = 8


def iso(epoch: float | None) -> str | None:
    """``1700000000.5`` → ``"2023-11-14T22:13:20.500000Z"`` (None stays None)."""
    if epoch is None or not math.isfinite(epoch):
        return None
    try:
        return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")
    except (OverflowError, OSError, ValueError):
        return None


def to_api(value: Any, key: str | None = None) -> Any:
    """``value`` with every time column as ISO text and every amount rounded, at any depth."""
    if isinstance(value, Mapping):
        return {k: to_api(v, k) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_api(v) for v in value]
    if isinstance(value, bool) or not isinstance(value, int | float) or key is None:
        return value
    if key in TIME_KEYS:
        return iso(float(value))
    if key in AMOUNT_KEYS and isinstance(value, float) and math.isfinite(value):
        return round(value, AMOUNT_DECIMALS)
    return value


def api_response(value: Any, status: int = 200) -> tuple[Response, int]:
    return jsonify(to_api(value)), status


# --- query parameters and bodies -------------------------------------------------------------------


def query_int(name: str, default: int | None, *, low: int, high: int) -> int | None:
    """A whole number from the query string within [low, high], or a 400 naming it."""
    raw = request.args.get(name)
    if raw is None:
        return default
    # ASCII digits only: str.isdigit() also accepts "²", which int() then refuses.
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 19) or not low <= int(raw) <= high:
        raise ApiError(
            400, f"invalid_{name}", f"{name} must be a whole number from {low} to {high}, got {raw!r}",
            where=name,
        )  # fmt: skip
    return int(raw)


def query_limit(default: int = 50) -> int:
    """A listing's ``?limit=``: how many rows, 1 to 1000 (``default`` when absent), or a 400."""
    return query_int("limit", default, low=1, high=1000) or default


def query_float(name: str, default: float | None, *, low: float, high: float) -> float | None:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not low <= value <= high:  # also false for NaN
        raise ApiError(
            400,
            f"invalid_{name}",
            f"{name} must be a number from {low:g} to {high:g}, got {raw!r}",
            where=name,
        )
    return value


def query_bool(name: str) -> bool | None:
    raw = request.args.get(name)
    if raw is None:
        return None
    lowered = raw.strip().lower()
    if lowered in {"true", "1", "yes"}:
        return True
    if lowered in {"false", "0", "no"}:
        return False
    raise ApiError(400, f"invalid_{name}", f"{name} must be true or false, got {raw!r}", where=name)


_TEXT = re.compile(r"^[A-Za-z0-9/_:.\-]{1,64}$")


def query_text(name: str) -> str | None:
    """A symbol, timeframe, version or id: letters, digits and ``/_:.-``, at most 64 characters."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    if not _TEXT.match(raw):
        raise ApiError(
            400, f"invalid_{name}", f"{name} must be 1-64 letters, digits or /_:.- characters", where=name
        )
    return raw


def query_choice(name: str, choices: tuple[str, ...]) -> str | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    if raw not in choices:
        raise ApiError(
            400, f"invalid_{name}", f"{name} must be one of {list(choices)}, got {raw!r}", where=name
        )
    return raw


def json_body() -> dict[str, Any]:
    """The request's JSON object, or a 400 that says a JSON object was expected."""
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise ApiError(
            400, "invalid_body", "send a JSON object (Content-Type: application/json) as the request body"
        )
    return data


def with_synthetic(storage: Storage, positions: Sequence[Any]) -> list[dict[str, Any]]:
    """Position rows as the API, the dashboard and ``tvgw positions`` show them, each saying
    whether its market's prices are synthetic (the offline quickstart's generated candles): its
    mark, and so the equity it adds, is then no market's price."""
    return [{**p.__dict__, "synthetic": is_synthetic_market(storage, p.symbol)} for p in positions]
