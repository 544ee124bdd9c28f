"""TradingView chart intervals ↔ ccxt timeframes."""

from __future__ import annotations

__all__ = ["from_tradingview", "seconds"]

_UNITS = {"m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def from_tradingview(interval: str | None, default: str) -> str:
    """``60`` → ``1h``, ``240`` → ``4h``, ``1D``/``D`` → ``1d``, ``15`` → ``15m``; else ``default``."""
    if not interval:
        return default
    text = interval.strip().upper()
    if text.isdigit():
        minutes = int(text)
        if minutes % 1440 == 0:
            return f"{minutes // 1440}d"
        if minutes % 60 == 0:
            return f"{minutes // 60}h"
        return f"{minutes}m"
    for suffix, unit in (("D", "d"), ("W", "w")):
        if text.endswith(suffix):
            count = text[:-1] or "1"
            if count.isdigit():
                return f"{int(count)}{unit}"
    if text.endswith("S"):
        return default  # seconds charts have no candle store timeframe
    return default


def seconds(timeframe: str) -> int:
    """Length of a ccxt timeframe in seconds (``1h`` → 3600)."""
    unit = timeframe[-1].lower()
    if unit not in _UNITS or not timeframe[:-1].isdigit():
        raise ValueError(f"unknown timeframe {timeframe!r}: expected like 5m, 1h, 4h, 1d")
    return int(timeframe[:-1]) * _UNITS[unit]
