"""The alert schema: the one definition of what a TradingView alert may say.

The pydantic model :class:`Alert` is the source of truth. The Pine alert-message template
(``pine/``), the field table for people (:mod:`pine.field_table`, ``tvgw schema --markdown``)
and the tests are generated from or checked against ``Alert.model_fields``; each field's
``json_schema_extra`` carries the TradingView placeholder that fills it.

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
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from common.errors import TvgwError
from common.timeframes import canonical_interval
from engine.exits import parse_level, parse_targets

__all__ = [
    "PLACEHOLDER_RE",
    "Action",
    "Alert",
    "FieldConflict",
    "MarketPosition",
    "canonical_fields",
    "whole_leverage",
]

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
    #: Not an order: the chart's "still here" at a bar close (the bundled scripts' optional
    #: ``alert()``), carrying its sequence number and the strategy's position. The gateway
    #: records it on the chart's feed (engine.continuity) and never trades on it.
    HEARTBEAT = "heartbeat"


#: Actions that only close: the ones a percent may be given with.
_CLOSES = frozenset({Action.CLOSE_LONG, Action.CLOSE_SHORT, Action.CLOSE_ALL})

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
    "heartbeat": Action.HEARTBEAT,
}


def _action_key(value: str) -> str:
    return value.strip().lower().replace("-", "_").replace(" ", "_")


class MarketPosition(StrEnum):
    LONG = "long"
    SHORT = "short"
    FLAT = "flat"


def whole_leverage(name: str, value: float | None) -> float | None:
    """Refuse (ValueError naming ``name``) a leverage that is not a whole number: exchanges take
    3, not 2.5, so an alert's or a strategy's leverage is refused here rather than by the
    exchange. One rule for the alert field and the strategy setting."""
    if value is not None and not float(value).is_integer():
        raise ValueError(f"{name} must be a whole number (1, 2, 3 ...), got {value:g}")
    return value


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
    close_percent: float | None = _f(
        None,
        'Share of the position a close acts on, in percent (also written "contracts": "50%" '
        'or action "close 50%"); the whole position without it',
        default=None,
        gt=0,
        le=100,
    )
    stop_loss: str | None = _f(
        None,
        'Protective stop: a price (29500), a percent of the entry ("2%") or an ATR multiple ("1.5atr")',
        default=None,
        max_length=32,
    )
    take_profit: str | None = _f(
        None,
        'Take-profit levels with their share of the position, e.g. "1%@50, 2%@50" (even split without @)',
        default=None,
        max_length=128,
    )
    trailing_stop: str | None = _f(
        None, 'Trailing stop distance: a price gap (150), "1%" or "2atr"', default=None, max_length=32
    )
    leverage: float | None = _f(
        None,
        "Perpetuals (BTCUSDT.P): leverage of the entry, a whole number within the strategy's max_leverage",
        default=None,
        ge=1,
        le=125,
    )
    margin_mode: Literal["isolated", "cross"] | None = _f(
        None, "Perpetuals: isolated or cross margin for the entry", default=None
    )
    sequence: int | None = _f(
        None,
        "The chart's sequence number of the message (the bundled scripts send the bar index): "
        "heartbeats are expected at every heartbeat_bars-th number, and order alerts are applied "
        "in the order of their bar time and sequence",
        default=None,
        ge=0,
        le=2**53,
    )
    market_position_size: float | None = _f(
        "{{strategy.market_position_size}}",
        "Size of the strategy's position after the order, without sign (its side is market_position)",
        default=None,
        ge=0,
    )
    prev_market_position_size: float | None = _f(
        "{{strategy.prev_market_position_size}}",
        "Size of the strategy's position before the order, without sign (side: prev_market_position)",
        default=None,
        ge=0,
    )
    heartbeat_bars: int | None = _f(
        None,
        "Heartbeats only: the chart sends one every this many bars (the gateway expects the next "
        "within that many bars plus its grace)",
        default=None,
        ge=1,
        le=100_000,
    )
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
            key = _action_key(value)
            if key in _ACTION_ALIASES:
                return _ACTION_ALIASES[key]
            raise ValueError(
                f"unknown action {value!r}; expected one of {', '.join(a.value for a in Action)}"
            )
        return value

    @model_validator(mode="after")
    def _percent_closes(self) -> Alert:
        if self.close_percent is not None and self.action not in _CLOSES:
            raise ValueError(
                "close_percent applies to a close (close_long, close_short, close_all), "
                f"not {self.action.value!r}"
            )
        return self

    @model_validator(mode="after")
    def _sizes_match_sides(self) -> Alert:
        """A size without its side, or a flat side with a size, contradicts itself: refused, so
        the intended position the gateway may act on (engine.continuity) is never a guess."""
        for side, size in (
            ("market_position", "market_position_size"),
            ("prev_market_position", "prev_market_position_size"),
        ):
            position, amount = getattr(self, side), getattr(self, size)
            if amount is None:
                continue
            if position is None:
                raise ValueError(f"field {size!r} needs {side!r} (long, short or flat) to say its side")
            if position == MarketPosition.FLAT and amount != 0:
                raise ValueError(f"field {size!r} is {amount:g} but {side!r} is flat")
        return self

    @field_validator("stop_loss", "trailing_stop", mode="before")
    @classmethod
    def _exit_level(cls, value: Any, info: ValidationInfo) -> Any:
        """Checked here, so a misspelt level is the sender's clear 400, never a silent no-stop.
        ``NaN`` (an undefined Pine series, also as ``NaN%``) or an empty value means "not given"."""
        if _no_level(value):
            return None
        return str(parse_level(str(info.field_name), value))

    @field_validator("take_profit", mode="before")
    @classmethod
    def _exit_targets(cls, value: Any) -> Any:
        if _no_level(value):
            return None
        targets = parse_targets("take_profit", value)
        return ", ".join(f"{t.level}@{t.share * 100:g}" for t in targets)

    @field_validator("leverage")
    @classmethod
    def _whole_leverage(cls, value: float | None) -> float | None:
        return whole_leverage("leverage", value)

    @field_validator("margin_mode", mode="before")
    @classmethod
    def _margin_mode(cls, value: Any) -> Any:
        """Spelt as the exchanges do too: ``CROSSED``/``ISOLATED``, any case."""
        if isinstance(value, str):
            value = value.strip().lower()
            return "cross" if value == "crossed" else value or None
        return value

    @field_validator("market_position", "prev_market_position", mode="before")
    @classmethod
    def _position(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("time", "timenow", mode="before")
    @classmethod
    def _timestamp(cls, value: Any) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return _epoch(value)
        if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
            return _epoch(int(value.strip()))
        return value

    @field_validator("time", "timenow")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        """Every instant in UTC, whatever offset it was written with: ``+02:00`` and ``Z``
        spellings of one instant are one value (and one idempotency key)."""
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        if not EARLIEST <= value <= LATEST:
            raise ValueError(
                f"{value.isoformat()} is outside {EARLIEST.year}-{LATEST.year}; "
                "send the time TradingView fills in ({{timenow}})"
            )
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

    def bar_row(self) -> list[float] | None:
        """The alert's bar as a candle-store row ``[open time ms, o, h, l, c, v]``, when the alert
        carries a complete bar and its time."""
        bar = self.bar
        if bar is None or self.time is None:
            return None
        ms = int(self.time.timestamp() * 1000)
        return [ms, bar["open"], bar["high"], bar["low"], bar["close"], bar["volume"]]

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

    @property
    def intended_position(self) -> float | None:
        """The strategy's signed position after this order (or at this heartbeat), from the
        unsigned ``market_position_size`` with its side, else :attr:`target_position`."""
        return (
            _signed(self.market_position, self.market_position_size)
            if (self.market_position_size is not None)
            else self.target_position
        )

    @property
    def previous_position(self) -> float | None:
        """The strategy's signed position before this order, when the alert says."""
        if self.prev_market_position == MarketPosition.FLAT:
            return 0.0
        return _signed(self.prev_market_position, self.prev_market_position_size)

    def record_fields(self) -> dict[str, Any]:
        """The alert's columns in the ``alerts`` table (``storage.alerts.claim_alert``): the one
        mapping, used by the webhook and the backtest's replay alike."""
        return {
            "strategy_id": self.strategy_id, "ticker": self.ticker, "exchange": self.exchange,
            "interval": self.interval, "action": self.action.value, "contracts": self.contracts,
            "price": self.price, "position_size": self.position_size,
            "market_position": self.market_position.value if self.market_position else None,
            "order_id": self.order_id, "alert_time": self.time.timestamp() if self.time else None,
            "timenow": self.timenow.timestamp() if self.timenow else None,
        }  # fmt: skip

    def idempotency_key(self, received_at: datetime, symbol: str) -> str:
        """The explicit ``id`` if sent, else a hash of what this alert means, not how it is spelled.

        ``symbol`` is the market the broker resolved the ticker to: the key guards against acting
        twice on the broker, so ``BINANCE:SOLUSDT``, ``SOLUSDT`` with ``exchange: BINANCE`` and
        ``SOL/USDT`` (one order on one market) are one alert. The instant is taken in UTC (so
        ``+02:00``, ``Z`` and epoch seconds or milliseconds of one instant match), the interval
        as its timeframe (``60`` is ``1h``; a 1h and a 4h strategy firing together are two
        alerts), the action after aliasing, the contracts as a number. Without ``timenow`` (or
        ``time``) the receive minute stands in, so a client retry within the same minute is a
        duplicate while the same short message an hour later is not.
        """
        if self.id:
            return f"id:{self.strategy_id or ''}:{self.id}"
        stamp = self.timenow or self.time
        when = (
            stamp.astimezone(UTC).isoformat(timespec="microseconds")
            if stamp
            else received_at.astimezone(UTC).strftime("recv:%Y-%m-%dT%H:%M")
        )
        parts = [
            self.strategy_id or "",
            symbol,
            canonical_interval(self.interval) or "",
            self.action.value,
            when,
            self.order_id or "",
            _num(self.contracts),
        ]
        if self.close_percent is not None:  # only then: every other alert keeps its old key
            parts.append(f"{_num(self.close_percent)}%")
        return "h:" + hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]

    def record(self) -> str:
        """The JSON stored with the alert (the passphrase is excluded)."""
        return self.model_dump_json(exclude={"passphrase"})


#: Instants an alert can mean: TradingView's history starts after 1970 and no bar opens after
#: 2100. Outside this, a number is a mistake (or an attack), not a time.
EARLIEST = datetime(1970, 1, 2, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)


def _epoch(value: float) -> datetime:
    """Epoch seconds or milliseconds as a UTC instant; 1e11 s is the year 5138, so larger means
    ms. Out of range or not finite: a ValueError that names the number's size, not a crash."""
    if not math.isfinite(value):
        raise ValueError(f"{value} is not a time")
    seconds = value / 1000 if abs(value) > 1e11 else value
    if not EARLIEST.timestamp() <= seconds <= LATEST.timestamp():
        raise ValueError(
            f"epoch {value:.6g} is outside {EARLIEST.year}-{LATEST.year} "
            "(expected seconds or milliseconds since 1970)"
        )
    return datetime.fromtimestamp(seconds, tz=UTC)


def _signed(side: MarketPosition | None, size: float | None) -> float | None:
    if side == MarketPosition.FLAT:
        return 0.0
    if side is None or size is None:
        return None
    return -abs(size) if side == MarketPosition.SHORT else abs(size)


def _num(value: float | None) -> str:
    return "" if value is None else repr(float(value) + 0.0)  # + 0.0: -0.0 is 0.0


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
    "market_position_size": "market_position_size",
    "prev_market_position_size": "prev_market_position_size",
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


class FieldConflict(TvgwError, ValueError):
    """Two spellings of one field in the same alert say different things.

    Refused rather than resolved: picking one silently could act for the wrong strategy or
    trade the wrong size. ``fields`` are the spellings as sent (``strategy``, ``strategy.id``)."""

    def __init__(self, canonical: str, fields: tuple[str, str], shown: tuple[Any, Any] | None):
        self.canonical = canonical
        self.fields = fields
        values = f" ({shown[0]!r} vs {shown[1]!r})" if shown is not None else ""
        super().__init__(
            f"fields {fields[0]!r} and {fields[1]!r} both give {canonical!r} but differ{values}: send it once"
        )


def _normalise(data: dict[str, Any]) -> dict[str, Any]:
    """Map the shapes people paste into TradingView onto the canonical flat fields."""
    return _checked(*canonical_fields(data))


def canonical_fields(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(canonical fields, unknown fields) of a raw alert: aliases, any key case, nesting.

    The one place that knows how a field may be spelled. Raises :class:`FieldConflict` when
    two spellings of a field carry different values (an empty value conflicts with nothing).
    """
    known = _known_fields()
    if data.keys() <= known:  # already canonical (what the bundled Pine script sends)
        return dict(data), {}
    extras: dict[str, Any] = dict(data.get("extras") or {}) if isinstance(data.get("extras"), dict) else {}
    fields = _Fields()
    for key, value in data.items():
        if key == "extras":
            continue
        lowered = key.strip().lower() if isinstance(key, str) else key
        if lowered == "strategy" and isinstance(value, dict):
            _nested(fields, extras, "strategy", value, _STRATEGY_KEYS)
        elif lowered == "bar" and isinstance(value, dict):
            _nested(fields, extras, "bar", value, _BAR_KEYS)
        elif lowered in known:
            fields.put(lowered, value, key)
        elif lowered in _ALIASES:
            fields.put(_ALIASES[lowered], value, key)
        else:
            extras[key] = value
    return fields.values, extras


def _nested(
    fields: _Fields, extras: dict[str, Any], prefix: str, obj: dict[str, Any], names: dict[str, str]
) -> None:
    """A nested ``strategy {...}`` (with its ``order {...}``) or ``bar {...}`` object."""
    for key, value in obj.items():
        lowered = key.strip().lower() if isinstance(key, str) else key
        if prefix == "strategy" and lowered == "order" and isinstance(value, dict):
            _nested(fields, extras, "strategy.order", value, _ORDER_KEYS)
        elif lowered in names:
            fields.put(names[lowered], value, f"{prefix}.{key}")
        else:
            extras[f"{prefix}.{key}"] = value


class _Fields:
    """Canonical values with the spelling each came from, refusing disagreeing spellings."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.sources: dict[str, str] = {}

    def put(self, canonical: str, value: Any, source: str) -> None:
        if _empty(value):
            self.values.setdefault(canonical, value)
            self.sources.setdefault(canonical, source)
            return
        current = self.values.get(canonical)
        if canonical in self.values and not _empty(current):
            if not _same(canonical, current, value):
                # A secret is never echoed, not even in an error that is stored with the alert.
                shown = None if canonical == "passphrase" else (current, value)
                raise FieldConflict(canonical, (self.sources[canonical], source), shown)
            return
        self.values[canonical] = value
        self.sources[canonical] = source


#: Fields whose values are compared without regard to case or surrounding space.
_CASELESS = frozenset({"ticker", "exchange", "interval", "market_position", "prev_market_position"})


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _same(canonical: str, a: Any, b: Any) -> bool:
    """Whether two spellings of ``canonical`` mean the same value (``"0.5"`` is ``0.5``)."""
    if a == b:
        return True
    if canonical in _NUMERIC:
        try:
            return float(a) == float(b)
        except (TypeError, ValueError):
            return False
    if not (isinstance(a, str) and isinstance(b, str)):
        return False
    if canonical == "action":
        mapped = _ACTION_ALIASES.get(_action_key(a))
        return mapped is not None and mapped == _ACTION_ALIASES.get(_action_key(b))
    if canonical in _CASELESS:
        return a.strip().lower() == b.strip().lower()
    return a.strip() == b.strip()


def _checked(out: dict[str, Any], extras: dict[str, Any]) -> dict[str, Any]:
    """Unfilled placeholders, numbers sent as strings, and NaN, field by field."""
    _percent_spellings(out)
    for key, value in list(out.items()):
        if not isinstance(value, str | float):
            continue
        if isinstance(value, str) and "{{" in value and PLACEHOLDER_RE.search(value) and key != "comment":
            raise ValueError(
                f"field {key!r} holds the unfilled TradingView placeholder {value!r}: "
                "check its spelling in the alert message"
            )
        if key in _NUMERIC:
            out[key] = _number(key, value)
    out["extras"] = extras
    return out


_PERCENT_RE = re.compile(r"^\s*(?P<num>[0-9]*\.?[0-9]+)\s*%\s*$")
_ACTION_PERCENT_RE = re.compile(r"^\s*(?P<action>[a-z_ -]+?)\s+(?P<num>[0-9]*\.?[0-9]+)\s*%\s*$", re.I)


def _percent_spellings(out: dict[str, Any]) -> None:
    """``"contracts": "50%"`` and ``"action": "close 50%"`` as ``close_percent`` (refused when
    they disagree with each other or with an explicit ``close_percent``)."""
    found: list[tuple[str, float]] = []
    contracts, action = out.get("contracts"), out.get("action")
    if isinstance(contracts, str) and (m := _PERCENT_RE.match(contracts)):
        found.append(("contracts", float(m["num"])))
        del out["contracts"]
    if isinstance(action, str) and (m := _ACTION_PERCENT_RE.match(action)):
        found.append(("action", float(m["num"])))
        out["action"] = m["action"]
    if out.get("close_percent") not in (None, ""):
        try:
            found.append(("close_percent", float(out["close_percent"])))
        except (TypeError, ValueError):
            return  # the field's own validation says what is wrong
    if len({value for _, value in found}) > 1:
        names = " and ".join(f"{name!r} ({value:g}%)" for name, value in found)
        raise ValueError(f"{names} give different close percents: send one")
    if found:
        out["close_percent"] = found[0][1]


_NUMERIC = {
    "close_percent",
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
    "sequence",
    "market_position_size",
    "prev_market_position_size",
    "heartbeat_bars",
}


#: Bar fields a chart may leave undefined; NaN there means "not given", not an error.
_ABSENT_WHEN_NAN = {"volume", "open", "high", "low", "close"}
#: Text that stands for "no value" in a number field (TradingView prints ``NaN`` for an
#: undefined series; people write null in many ways).
_EMPTY = {"", "NA", "N/A", "NONE", "NULL"}


def _no_level(value: Any) -> bool:
    """Whether an exit field says "no exit": absent, empty, ``NaN`` or a null spelling."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return True
    if not isinstance(value, str):
        return False
    text = value.strip().upper().removesuffix("%").removesuffix("ATR").strip()
    return text in _EMPTY | {"NAN"}


def _number(key: str, value: str | float) -> float | None:
    """A number field's value, the same whether it came as a JSON number or as text: ``"NaN"``
    and ``NaN`` (or ``"Infinity"`` and ``1e999``) are one value and get one verdict. NaN means
    "not given" in a bar field and is refused elsewhere; infinity is refused everywhere."""
    if isinstance(value, str):
        text = value.strip()
        if text.upper() in _EMPTY:
            return None
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"field {key!r} must be a number, got {value!r}") from None
    if math.isnan(value) and key in _ABSENT_WHEN_NAN:
        return None
    if not math.isfinite(value):
        raise ValueError(f"field {key!r} is {value!r}, not a finite number")
    return value
