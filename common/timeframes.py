"""TradingView chart intervals ↔ ccxt timeframes."""

from __future__ import annotations

import re

__all__ = ["SECONDS_PER_YEAR", "canonical_interval", "from_tradingview", "seconds"]

#: A calendar year in seconds (crypto trades every hour of every day): annualises per-bar figures.
SECONDS_PER_YEAR = 365.25 * 24 * 3600

_UNITS = {"m": 60, "h": 3600, "d": 86_400, "w": 604_800}

#: A ccxt-style timeframe people also type into alerts (``15m``, ``1h``, ``4H``, ``1d``, ``1w``).
#: Lower-case ``m`` only: TradingView's ``1M`` is a month, never a minute.
_CCXT_STYLE = re.compile(r"^(\d+)(m|[hH]|[dD]|[wW])$")


def from_tradingview(interval: str | None, default: str) -> str:
    """``60`` → ``1h``, ``240`` → ``4h``, ``1D``/``D`` → ``1d``, ``15`` → ``15m``; the ccxt
    spellings (``1h``, ``15m``, ``120m`` → ``2h``) likewise; else ``default``."""
    if not interval:
        return default
    raw = interval.strip()
    ccxt_style = _CCXT_STYLE.match(raw)
    if ccxt_style is not None:
        number, unit = int(ccxt_style.group(1)), ccxt_style.group(2).lower()
        if number <= 0:
            return default
        if unit in ("m", "h"):
            return _minutes(number * (60 if unit == "h" else 1))
        return f"{number}{unit}"
    text = raw.upper()
    if text.isdigit():
        return _minutes(int(text)) if int(text) > 0 else default
    for suffix, unit in (("D", "d"), ("W", "w")):
        if text.endswith(suffix):
            count = text[:-1] or "1"
            if count.isdigit():
                return f"{int(count)}{unit}"
    if text.endswith("S"):
        return default  # seconds charts have no candle store timeframe
    return default


def _minutes(minutes: int) -> str:
    if minutes % 1440 == 0:
        return f"{minutes // 1440}d"
    if minutes % 60 == 0:
        return f"{minutes // 60}h"
    return f"{minutes}m"


def canonical_interval(interval: str | None) -> str | None:
    """One spelling per chart interval, for telling alerts apart: ``60``, ``1h`` and ``1H`` are
    ``1h``. Intervals with no candle timeframe (seconds ``15S``, months ``1M``) keep their own
    upper-cased spelling; no interval is None."""
    if interval is None or not interval.strip():
        return None
    return from_tradingview(interval, default=interval.strip().upper())


def seconds(timeframe: str) -> int:
    """Length of a ccxt timeframe in seconds (``1h`` → 3600)."""
    unit = timeframe[-1].lower()
    if unit not in _UNITS or not timeframe[:-1].isdigit():
        raise ValueError(f"unknown timeframe {timeframe!r}: expected like 5m, 1h, 4h, 1d")
    return int(timeframe[:-1]) * _UNITS[unit]
