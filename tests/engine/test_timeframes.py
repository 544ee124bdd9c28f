"""Chart intervals: one timeframe per interval, whichever way the alert spells it."""

from __future__ import annotations

import pytest

from common.timeframes import canonical_interval, from_tradingview, seconds


@pytest.mark.parametrize(
    ("spellings", "timeframe"),
    [
        (["1", "1m"], "1m"),
        (["15", "15m"], "15m"),
        (["60", "1h", "1H", "60m", " 60 "], "1h"),
        (["240", "4h", "4H", "240m"], "4h"),
        (["1440", "1D", "D", "1d", "24h"], "1d"),
        (["1W", "W", "1w"], "1w"),
    ],
)
def test_every_spelling_of_an_interval_is_one_timeframe(spellings: list[str], timeframe: str) -> None:
    for spelling in spellings:
        assert from_tradingview(spelling, "default") == timeframe, spelling
        assert canonical_interval(spelling) == timeframe, spelling


def test_intervals_without_a_candle_timeframe_keep_their_own_spelling() -> None:
    # TradingView's 1M is a month, not a minute; seconds charts have no candle store.
    assert from_tradingview("1M", "1h") == "1h" and canonical_interval("1M") == "1M"
    assert canonical_interval("1m") == "1m" != canonical_interval("1M")
    assert from_tradingview("15S", "1h") == "1h" and canonical_interval("15s") == "15S"
    assert from_tradingview("0", "1h") == "1h" and from_tradingview("0h", "1h") == "1h"
    assert canonical_interval(None) is None and canonical_interval(" ") is None
    assert from_tradingview(None, "4h") == "4h"


def test_seconds() -> None:
    assert seconds("4h") == 14_400
    with pytest.raises(ValueError, match="unknown timeframe"):
        seconds("4x")
