"""The alert schema: the one definition of what a TradingView alert may say.

The pydantic model :class:`Alert` is the source of truth. The Pine alert-message template
(``pine/``), the README table (``tvgw schema --markdown``) and the tests are generated from or
checked against ``Alert.model_fields``; each field's ``json_schema_extra`` carries the
TradingView placeholder that fills it.

Accepted shapes besides the canonical flat one (see :func:`_normalise`):

* ``symbol`` for ``ticker``;
* nested ``strategy {...}`` (``order_action`` / ``order: {action, contracts, price, id}``,
  ``position_size``, ``market_position``, ...) and ``bar {...}`` objects;
* numbers sent as strings (``"1800.8000000000002"``);
* the short "ML enhanced" message ``{"action", "symbol", "ml_confidence", "kelly_fraction",
  "sentiment_score"}``.

Unknown fields are kept in ``extras`` (and in the stored record); they are never fatal.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["PLACEHOLDER_RE", "Action", "Alert", "MarketPosition", "alert_field_table"]

#: A TradingView placeholder that was not substituted, such as ``{{plot("x")}}``.
PLACEHOLDER_RE = re.compile(r"\{\{[^{}]*\}\}")


class Action(StrEnum):
    """What the alert asks for. ``buy``/``sell`` are TradingView's ``strategy.order.action``."""

    BUY = "buy"
    SELL = "sell"
    CLOSE_LONG = "close_long"
    CLOSE_SHORT = "close_short"
    CLOSE_ALL = "close_all"
    REVERSE = "reverse"


_ACTION_ALIASES = {
    "buy": Action.BUY,
    "long": Action.BUY,
    "entry_long": Action.BUY,
    "sell": Action.SELL,
    "short": Action.SELL,
    "entry_short": Action.SELL,
    "close_long": Action.CLOSE_LONG,
    "exit_long": Action.CLOSE_LONG,
    "close_short": Action.CLOSE_SHORT,
    "exit_short": Action.CLOSE_SHORT,
    "close": Action.CLOSE_ALL,
    "close_all": Action.CLOSE_ALL,
    "exit": Action.CLOSE_ALL,
    "flat": Action.CLOSE_ALL,
    "reverse": Action.REVERSE,
}


class MarketPosition(StrEnum):
    LONG = "long"
    SHORT = "short"
    FLAT = "flat"


def _f(placeholder: str | None, description: str, **kw: Any) -> Any:
    """A field with its TradingView placeholder recorded for the template generator."""
    extra: dict[str, Any] = {"placeholder": placeholder} if placeholder else {}
    return Field(description=description, json_schema_extra=extra, **kw)


def _published_schema(schema: dict[str, Any]) -> None:
    """The JSON Schema users read says what the webhook does: unknown fields are accepted (and
    kept in the record), so ``additionalProperties`` is true; ``extras`` is where they land, not
    a field anyone sends. ``extra="forbid"`` below guards the model's own constructor only."""
    schema["additionalProperties"] = True
    schema.get("properties", {}).pop("extras", None)


class Alert(BaseModel):
    """One TradingView alert, validated. Past the webhook parser nothing sees a raw dict."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, allow_inf_nan=False, json_schema_extra=_published_schema
    )

    strategy_id: str | None = _f(
        None, "Which configured strategy sent it (default strategy if absent)", default=None, max_length=64
    )
    passphrase: str | None = _f(
        None,
        "The strategy's secret; checked in constant time, never stored",
        default=None,
        repr=False,
        exclude=True,
    )
    id: str | None = _f(None, "Explicit idempotency key; else one is derived", default=None, max_length=128)
    ticker: str = _f(
        "{{ticker}}",
        "TradingView symbol, e.g. BTCUSDT or BINANCE:BTCUSDT or BTCUSDT.P",
        min_length=1,
        max_length=64,
    )
    exchange: str | None = _f(
        "{{exchange}}", "TradingView exchange prefix, e.g. BINANCE", default=None, max_length=32
    )
    interval: str | None = _f(
        "{{interval}}", "Chart interval: 1, 5, 60, 240, 1D ...", default=None, max_length=8
    )
    action: Action = _f(
        "{{strategy.order.action}}",
        "buy, sell, close_long, close_short, close_all, reverse (aliases: long, short, close, exit)",
    )
    contracts: float | None = _f(
        "{{strategy.order.contracts}}", "Order size in base units", default=None, ge=0
    )
    price: float | None = _f("{{strategy.order.price}}", "Order price", default=None, gt=0)
    position_size: float | None = _f(
        "{{strategy.position_size}}", "Strategy position after the order (target-position mode)", default=None
    )
    market_position: MarketPosition | None = _f(
        "{{strategy.market_position}}", "long, short or flat after the order", default=None
    )
    prev_market_position: MarketPosition | None = _f(
        "{{strategy.prev_market_position}}", "long, short or flat before the order", default=None
    )
    order_id: str | None = _f("{{strategy.order.id}}", "The Pine order id", default=None, max_length=128)
    comment: str | None = _f(
        "{{strategy.order.comment}}", "The Pine order comment", default=None, max_length=512
    )
    time: datetime | None = _f("{{time}}", "Bar open time (UTC)", default=None)
    timenow: datetime | None = _f(
        "{{timenow}}", "When the alert fired (UTC); used for the max-lag check", default=None
    )
    open: float | None = _f("{{open}}", "Bar open", default=None, gt=0)
    high: float | None = _f("{{high}}", "Bar high", default=None, gt=0)
    low: float | None = _f("{{low}}", "Bar low", default=None, gt=0)
    close: float | None = _f("{{close}}", "Bar close", default=None, gt=0)
    volume: float | None = _f("{{volume}}", "Bar volume", default=None, ge=0)
    ml_confidence: float | None = _f(
        None, "Confidence the chart script computed (its own proxy)", default=None, ge=0, le=1
    )
    kelly_fraction: float | None = _f(
        None, "Kelly fraction the chart script computed", default=None, ge=-1, le=1
    )
    sentiment_score: float | None = _f(
        None, "Sentiment the chart script was given, -1..1", default=None, ge=-1, le=1
    )
    technical_score: float | None = _f(None, "Technical score 0..9 for hybrid mode", default=None, ge=0, le=9)
    extras: dict[str, Any] = Field(default_factory=dict, description="Unknown fields, kept verbatim")

    @model_validator(mode="before")
    @classmethod
    def _normalise(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise ValueError("the alert must be a JSON object")
        return _normalise(data)

    @field_validator("action", mode="before")
    @classmethod
    def _action(cls, value: Any) -> Any:
        if isinstance(value, str):
            key = value.strip().lower().replace("-", "_").replace(" ", "_")
            if key in _ACTION_ALIASES:
                return _ACTION_ALIASES[key]
            raise ValueError(
                f"unknown action {value!r}; expected one of {', '.join(a.value for a in Action)}"
            )
        return value

    @field_validator("market_position", "prev_market_position", mode="before")
    @classmethod
    def _position(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("time", "timenow", mode="before")
    @classmethod
    def _timestamp(cls, value: Any) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool):
            # Epoch seconds or milliseconds; 1e11 s is the year 5138, so larger means ms.
            seconds = value / 1000 if value > 1e11 else value
            return datetime.fromtimestamp(seconds, tz=UTC)
        if isinstance(value, str) and value.strip().isdigit():
            return cls._timestamp(int(value.strip()))
        return value

    @field_validator("time", "timenow")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value

    @field_validator("ticker")
    @classmethod
    def _ticker(cls, value: str) -> str:
        return value.strip().upper()

    @property
    def bar(self) -> dict[str, float] | None:
        """The bar's OHLCV when the alert carried all of it."""
        values = {"open": self.open, "high": self.high, "low": self.low, "close": self.close}
        if any(v is None for v in values.values()):
            return None
        return {**values, "volume": self.volume or 0.0}  # type: ignore[dict-item]

    @property
    def target_position(self) -> float | None:
        """Signed position the strategy holds after this order, when the alert says."""
        if self.market_position == MarketPosition.FLAT:
            return 0.0
        if self.position_size is None:
            return None
        size = abs(self.position_size)
        if self.market_position == MarketPosition.SHORT:
            return -size
        if self.market_position == MarketPosition.LONG:
            return size
        return self.position_size

    def idempotency_key(self, received_at: datetime) -> str:
        """The explicit ``id`` if sent, else a hash of what makes this alert this alert.

        Without ``timenow`` (or ``time``) the receive minute stands in, so a client retry within
        the same minute is a duplicate while the same short message an hour later is not.
        """
        if self.id:
            return f"id:{self.strategy_id or ''}:{self.id}"
        stamp = self.timenow or self.time
        when = stamp.isoformat() if stamp else received_at.strftime("recv:%Y-%m-%dT%H:%M")
        parts = [
            self.strategy_id or "",
            self.ticker,
            self.action.value,
            when,
            self.order_id or "",
            _num(self.contracts),
        ]
        return "h:" + hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]

    def record(self) -> str:
        """The JSON stored with the alert (the passphrase is excluded)."""
        return self.model_dump_json(exclude={"passphrase"})


def _num(value: float | None) -> str:
    return "" if value is None else repr(float(value))


# --- accepted shapes -----------------------------------------------------------------------

_ALIASES = {
    "symbol": "ticker",
    "strategy": "strategy_id",
    "strategy_name": "strategy_id",
    "alert_id": "id",
    "idempotency_key": "id",
    "side": "action",
    "qty": "contracts",
    "quantity": "contracts",
    "amount": "contracts",
    "size": "contracts",
    "timeframe": "interval",
    "secret": "passphrase",
}

_STRATEGY_KEYS = {
    "order_action": "action",
    "order_contracts": "contracts",
    "order_price": "price",
    "order_id": "order_id",
    "order_comment": "comment",
    "position_size": "position_size",
    "market_position": "market_position",
    "prev_market_position": "prev_market_position",
    "id": "strategy_id",
}
_ORDER_KEYS = {
    "action": "action",
    "contracts": "contracts",
    "price": "price",
    "id": "order_id",
    "comment": "comment",
}
_BAR_KEYS = {
    "time": "time",
    "open": "open",
    "high": "high",
    "low": "low",
    "close": "close",
    "volume": "volume",
}


@functools.cache
def _known_fields() -> frozenset[str]:
    return frozenset(Alert.model_fields) - {"extras"}


def _normalise(data: dict[str, Any]) -> dict[str, Any]:
    """Map the shapes people paste into TradingView onto the canonical flat fields."""
    known = _known_fields()
    if data.keys() <= known:  # already canonical (what the bundled Pine script sends)
        return _checked(dict(data), {})
    out: dict[str, Any] = {}
    extras: dict[str, Any] = dict(data.get("extras") or {}) if isinstance(data.get("extras"), dict) else {}

    def put(key: str, value: Any) -> None:
        if key not in out or out[key] in (None, ""):
            out[key] = value

    for key, value in data.items():
        if key == "extras":
            continue
        lowered = key.strip().lower() if isinstance(key, str) else key
        if lowered == "strategy" and isinstance(value, dict):
            for skey, svalue in value.items():
                if skey == "order" and isinstance(svalue, dict):
                    for okey, ovalue in svalue.items():
                        if okey in _ORDER_KEYS:
                            put(_ORDER_KEYS[okey], ovalue)
                        else:
                            extras[f"strategy.order.{okey}"] = ovalue
                elif skey in _STRATEGY_KEYS:
                    put(_STRATEGY_KEYS[skey], svalue)
                else:
                    extras[f"strategy.{skey}"] = svalue
        elif lowered == "bar" and isinstance(value, dict):
            for bkey, bvalue in value.items():
                if bkey in _BAR_KEYS:
                    put(_BAR_KEYS[bkey], bvalue)
                else:
                    extras[f"bar.{bkey}"] = bvalue
        elif lowered in known:
            put(lowered, value)
        elif lowered in _ALIASES:
            put(_ALIASES[lowered], value)
        else:
            extras[key] = value
    return _checked(out, extras)


def _checked(out: dict[str, Any], extras: dict[str, Any]) -> dict[str, Any]:
    """Unfilled placeholders, numbers sent as strings, and NaN, field by field."""
    for key, value in list(out.items()):
        if not isinstance(value, str | float):
            continue
        if isinstance(value, str) and "{{" in value and PLACEHOLDER_RE.search(value) and key != "comment":
            raise ValueError(
                f"field {key!r} holds the unfilled TradingView placeholder {value!r}: "
                "check its spelling in the alert message"
            )
        if key in _NUMERIC and isinstance(value, str):
            out[key] = _number(key, value)
        if key in _NUMERIC and isinstance(value, float) and not math.isfinite(value):
            if key in _ABSENT_WHEN_NAN:
                # TradingView prints NaN for a series with no value (volume on an index).
                out[key] = None
            else:
                raise ValueError(f"field {key!r} is {value!r}, not a finite number")
    out["extras"] = extras
    return out


_NUMERIC = {
    "contracts",
    "price",
    "position_size",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "ml_confidence",
    "kelly_fraction",
    "sentiment_score",
    "technical_score",
}


#: Bar fields a chart may leave undefined; NaN there means "not given", not an error.
_ABSENT_WHEN_NAN = {"volume", "open", "high", "low", "close"}


def _number(key: str, raw: str) -> float | None:
    text = raw.strip()
    if text == "" or text.upper() in {"NAN", "NA", "NONE", "NULL"}:
        # TradingView prints NaN for an undefined series value: treat as absent.
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"field {key!r} must be a number, got {raw!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"field {key!r} must be a finite number, got {raw!r}")
    return value


def alert_field_table() -> list[dict[str, str]]:
    """Rows (field, type, placeholder, description) for the README and ``tvgw schema``."""
    rows = []
    for name, info in Alert.model_fields.items():
        if name == "extras":
            continue
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        annotation = str(info.annotation).replace("typing.", "").replace("engine.alert.", "")
        annotation = re.sub(r"<(?:class|enum) '([\w.]+)'>", r"\1", annotation).replace("datetime.", "")
        annotation = annotation.replace(" | ", " or ")
        rows.append(
            {
                "field": name,
                "type": annotation,
                "required": "yes" if info.is_required() else "no",
                "placeholder": str(extra.get("placeholder") or ""),
                "description": info.description or "",
            }
        )
    return rows
