"""Protective exits: what an entry's stop, take-profit levels and trailing stop are, where
each came from, and when a bar crosses one.

An exit level is written as a price (``29500``), a percent of the entry price (``"2%"``) or a
multiple of the market's ATR (``"1.5atr"``). Take-profit levels may be several, each with its
share of the position: ``"1%@50, 2%@50"`` (shares in percent; without them the position is
split evenly). Each of the three comes from the first source that gives it, in this order:
the alert, the ML signal (its ATR stop and target), the strategy's settings.

This module only decides (pure functions on numbers); the engine fills what they say through
its one door, and ``storage.exits`` keeps the armed exits.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from common import indicators

__all__ = [
    "ATR_BARS",
    "ATR_PERIOD",
    "Bar",
    "ExitPlan",
    "Level",
    "Target",
    "atr",
    "check_level",
    "parse_level",
    "parse_targets",
]

#: Wilder's period of the ATR an ``"1.5atr"`` level is measured with (the ML signal's too).
ATR_PERIOD = 14
#: Bars that ATR needs: its finite window (4 x period) and the bar before it.
ATR_BARS = round(4 * ATR_PERIOD) + 1

Unit = Literal["price", "percent", "atr"]
Source = Literal["alert", "ml", "strategy"]

_LEVEL_RE = re.compile(r"^\s*(?P<num>[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*(?P<unit>%|atr)?\s*$", re.I)


@dataclass(frozen=True)
class Level:
    """One exit distance or price as written, before an entry price gives it a place."""

    value: float
    unit: Unit

    def price(self, entry: float, side: str, *, profit: bool, atr_value: float | None) -> float:
        """The trigger price for an entry on ``side`` at ``entry``: below a long's entry for a
        stop, above it for a target (mirrored for a short). Raises ValueError when an ATR level
        has no ATR to measure with."""
        if self.unit == "price":
            return self.value
        if self.unit == "percent":
            distance = entry * self.value / 100
        else:
            if atr_value is None:
                raise ValueError(
                    f"{self.value:g}atr needs the market's ATR: the candle store holds fewer than "
                    f"{ATR_BARS} bars of it (fill it with `tvgw data fetch`)"
                )
            distance = atr_value * self.value
        up = (side == "buy") == profit
        return entry + distance if up else entry - distance

    def distance(self, entry: float, atr_value: float | None) -> float:
        """The level as a distance from ``entry`` (a trailing stop's gap): a plain number is the
        gap itself in price units, as TradingView's ``trail_offset`` is a distance, not a price."""
        if self.unit == "price":
            return self.value
        return abs(self.price(entry, "buy", profit=True, atr_value=atr_value) - entry)

    def __str__(self) -> str:
        suffix = {"price": "", "percent": "%", "atr": "atr"}[self.unit]
        return f"{self.value:g}{suffix}"


def parse_level(field: str, value: Any) -> Level:
    """``29500``, ``"2%"`` or ``"1.5atr"`` as a :class:`Level`; a ValueError that names the field
    and shows the accepted spellings otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"field {field!r} must be a price, a percent or an ATR multiple, got {value!r}")
    if isinstance(value, int | float):
        text = repr(float(value))
    elif isinstance(value, str):
        text = value
    else:
        raise ValueError(f"field {field!r} must be a price, a percent or an ATR multiple, got {value!r}")
    match = _LEVEL_RE.match(text)
    number = float(match["num"]) if match else math.nan
    if match is None or not math.isfinite(number) or number <= 0:
        raise ValueError(
            f"field {field!r} is {value!r}: write a price (29500), a percent of the entry "
            '("2%") or an ATR multiple ("1.5atr"), greater than 0'
        )
    unit = (match["unit"] or "").lower()
    return Level(number, "percent" if unit == "%" else "atr" if unit == "atr" else "price")


@dataclass(frozen=True)
class Target:
    """A take-profit level and the share of the entry it closes (0..1)."""

    level: Level
    share: float


def parse_targets(field: str, value: Any) -> tuple[Target, ...]:
    """``"1%@50, 2%@50"`` (or a list of such items, or one level) as targets whose shares add up
    to at most 1; levels without a share split what the others leave evenly."""
    items = value if isinstance(value, list) else str(value).split(",") if isinstance(value, str) else [value]
    if not items or len(items) > 5:
        raise ValueError(f"field {field!r} must hold 1 to 5 take-profit levels, got {len(items)}")
    levels: list[tuple[Level, float | None]] = []
    for item in items:
        text, _, share = str(item).partition("@") if isinstance(item, str) else (item, "", "")
        percent = None
        if share.strip():
            try:
                percent = float(share.strip().rstrip("%"))
            except ValueError:
                percent = math.nan
            if not (math.isfinite(percent) and 0 < percent <= 100):
                raise ValueError(f"field {field!r}: share {share.strip()!r} must be a percent in (0, 100]")
        levels.append((parse_level(field, text), None if percent is None else percent / 100))
    given = sum(s for _, s in levels if s is not None)
    if given > 1 + 1e-9:
        raise ValueError(f"field {field!r}: the shares add up to {given * 100:g}%, more than 100%")
    blanks = sum(1 for _, s in levels if s is None)
    rest = (1 - given) / blanks if blanks else 0.0
    return tuple(Target(level, rest if s is None else s) for level, s in levels)


@dataclass(frozen=True)
class Bar:
    """One bar the gateway saw: its open time (ms) and its range. ``open`` is None for a bar
    checked again after it grew: only its new extremes count, and no gap can be read."""

    ms: int
    open: float | None
    high: float
    low: float

    def beyond(self, seen_high: float | None, seen_low: float | None) -> Bar:
        """This bar as far as it is news after its range ``seen_high``..``seen_low`` was judged:
        an extreme not passed again is no extreme (infinitely far)."""
        if seen_high is None or seen_low is None:
            return self
        high = self.high if self.high > seen_high else -math.inf
        low = self.low if self.low < seen_low else math.inf
        return Bar(self.ms, None, high, low)


def atr(bars: Sequence[Sequence[float]], period: int = ATR_PERIOD) -> float | None:
    """The ATR at the last of ``bars`` (rows ``[ms, o, h, l, c, ...]``, ascending): the one
    implementation (:func:`common.indicators.atr`, the ML signal's too), or None with fewer
    than :data:`ATR_BARS` bars."""
    if len(bars) < ATR_BARS:
        return None
    table = np.asarray([bar[:5] for bar in bars], dtype=float)
    value = float(indicators.atr(table[:, 2], table[:, 3], table[:, 4], period)[-1])
    return value if np.isfinite(value) else None


@dataclass(frozen=True)
class ExitPlan:
    """The absolute exits of one entry and where each came from (said in the answer)."""

    side: str  # the entry's side; the exits close it
    entry: float
    stop: float | None = None
    targets: tuple[tuple[float, float], ...] = ()  # (price, share), nearest first
    trail: float | None = None  # the trailing stop's distance
    sources: dict[str, str] | None = None
    break_even: bool = False  # move the stop to the entry once the first target filled

    @property
    def empty(self) -> bool:
        return self.stop is None and not self.targets and self.trail is None

    def to_dict(self) -> dict[str, Any]:
        """The plan as the answer shows it (and as it is kept with its entry order: with the
        entry's side and price, :meth:`from_dict` reads it back)."""
        return {
            "stop_loss": self.stop,
            "take_profit": [{"price": p, "share": s} for p, s in self.targets],
            "trailing_stop": self.trail,
            "source": dict(self.sources or {}),
            "break_even": self.break_even,
        }

    @classmethod
    def from_dict(cls, side: str, entry: float, data: dict[str, Any]) -> ExitPlan:
        """The plan :meth:`to_dict` wrote, for an entry on ``side`` at ``entry``."""
        return cls(
            side=side, entry=entry, stop=data.get("stop_loss"),
            targets=tuple((float(t["price"]), float(t["share"])) for t in data.get("take_profit") or ()),
            trail=data.get("trailing_stop"), sources=dict(data.get("source") or {}),
            break_even=bool(data.get("break_even")),
        )  # fmt: skip


def check_level(side: str, trigger: float, bar: Bar, *, profit: bool) -> float | None:
    """The fill price when ``bar`` crosses an exit of a position entered on ``side``, else None.

    A stop fills at its trigger, or at the bar's open when the bar opened beyond it (a gap
    fills at the gap); a target likewise at its trigger or the better open."""
    long = side == "buy"
    opened = bar.open if bar.open is not None else math.nan  # NaN compares False: no gap
    if profit:
        crossed = bar.high >= trigger if long else bar.low <= trigger
        better_open = opened >= trigger if long else opened <= trigger
    else:
        crossed = bar.low <= trigger if long else bar.high >= trigger
        better_open = opened <= trigger if long else opened >= trigger
    if not crossed:
        return None
    return opened if better_open else trigger
