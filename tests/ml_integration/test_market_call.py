"""The market call: signal thresholds, leverage properties, ATR stops, and the two helpers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.indicators import atr
from ml_integration.candles import read_candle_file
from ml_integration.market_call import (
    HIGH_VOLATILITY,
    LEVERAGE_CEILING,
    SignalType,
    leverage_for,
    predict_market,
    realized_volatility,
)
from tests.conftest import property_settings, shared_candle_file

PROPERTY = property_settings(200)

unit = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
vol = st.floats(min_value=0.0, max_value=5.0, allow_nan=False)
cap = st.floats(min_value=1.0, max_value=50.0, allow_nan=False)


def call(p: float, **kw: float):
    args = {"confidence": 0.5, "price": 100.0, "atr": 1.0, "volatility": 0.5, "max_leverage": 3.0}
    args.update(kw)
    return predict_market(direction_probability=p, **args)


@pytest.mark.parametrize(
    ("p", "expected", "direction"),
    [
        (1.0, SignalType.STRONG_BUY, "long"),
        (0.70, SignalType.STRONG_BUY, "long"),
        (0.6999, SignalType.BUY, "long"),
        (0.55, SignalType.BUY, "long"),
        (0.5499, SignalType.HOLD, "flat"),
        (0.5, SignalType.HOLD, "flat"),
        (0.4501, SignalType.HOLD, "flat"),
        (0.45, SignalType.SELL, "short"),
        (0.3001, SignalType.SELL, "short"),
        (0.30, SignalType.STRONG_SELL, "short"),
        (0.0, SignalType.STRONG_SELL, "short"),
    ],
)
def test_signal_thresholds(p: float, expected: SignalType, direction: str) -> None:
    result = call(p)
    assert result.signal_type == expected
    assert result.direction == direction


def test_hold_has_no_position_and_no_stops() -> None:
    result = call(0.5, confidence=1.0)
    assert (result.leverage, result.stop_loss, result.take_profit, result.risk_reward) == (
        1.0,
        None,
        None,
        None,
    )
    assert "HOLD" in result.reason


def test_long_and_short_stops_from_atr() -> None:
    long = call(0.8, price=100.0, atr=2.0)
    assert long.stop_loss == pytest.approx(95.0)
    assert long.take_profit == pytest.approx(107.0)
    assert long.risk_reward == pytest.approx(1.4)
    short = call(0.2, price=100.0, atr=2.0)
    assert short.stop_loss == pytest.approx(105.0)
    assert short.take_profit == pytest.approx(93.0)
    assert short.risk_reward == pytest.approx(1.4)
    custom = call(0.8, price=100.0, atr=2.0, stop_atr=1.0, take_profit_atr=3.0)
    assert (custom.stop_loss, custom.take_profit, custom.risk_reward) == pytest.approx((98.0, 106.0, 3.0))


def test_a_short_target_below_zero_is_dropped_not_invented() -> None:
    result = call(0.1, price=10.0, atr=3.0)
    assert result.stop_loss == pytest.approx(17.5)
    assert result.take_profit is None and result.risk_reward is None
    assert "at or below zero" in result.reason


def test_leverage_formula_values() -> None:
    # 1 + (3 - 1) * 0.8 * (1 - 0.3 / 1.5) = 2.28
    assert leverage_for(confidence=0.8, volatility=0.3, max_leverage=3.0) == pytest.approx(2.28)
    assert leverage_for(confidence=1.0, volatility=0.0, max_leverage=3.0) == pytest.approx(3.0)
    assert leverage_for(confidence=0.0, volatility=0.0, max_leverage=3.0) == 1.0
    assert leverage_for(confidence=1.0, volatility=HIGH_VOLATILITY, max_leverage=3.0) == 1.0
    assert leverage_for(confidence=1.0, volatility=0.0, max_leverage=25.0) == LEVERAGE_CEILING
    # A 10% stop at 10x would lose the whole margin: cut to 0.5 / 0.1 = 5x.
    assert leverage_for(confidence=1.0, volatility=0.0, max_leverage=10.0, stop_fraction=0.1) == 5.0


@PROPERTY
@given(c1=unit, c2=unit, v=vol, m=cap, stop=st.floats(min_value=0.0, max_value=0.5))
def test_leverage_is_monotone_in_confidence(c1: float, c2: float, v: float, m: float, stop: float) -> None:
    low, high = sorted((c1, c2))
    kw = {"volatility": v, "max_leverage": m, "stop_fraction": stop}
    assert leverage_for(confidence=low, **kw) <= leverage_for(confidence=high, **kw)


@PROPERTY
@given(v1=vol, v2=vol, c=unit, m=cap, stop=st.floats(min_value=0.0, max_value=0.5))
def test_leverage_never_rises_with_volatility(v1: float, v2: float, c: float, m: float, stop: float) -> None:
    calm, wild = sorted((v1, v2))
    kw = {"confidence": c, "max_leverage": m, "stop_fraction": stop}
    assert leverage_for(volatility=wild, **kw) <= leverage_for(volatility=calm, **kw)


@PROPERTY
@given(
    p=unit,
    c=unit,
    v=vol,
    m=cap,
    price=st.floats(min_value=0.01, max_value=1e6),
    atr_fraction=st.floats(min_value=1e-5, max_value=0.39),
)
def test_market_call_invariants(
    p: float, c: float, v: float, m: float, price: float, atr_fraction: float
) -> None:
    a = price * atr_fraction
    result = predict_market(
        direction_probability=p, confidence=c, price=price, atr=a, volatility=v, max_leverage=m
    )
    assert 1.0 <= result.leverage <= min(m, LEVERAGE_CEILING) + 1e-12
    mirrored = predict_market(
        direction_probability=1.0 - p, confidence=c, price=price, atr=a, volatility=v, max_leverage=m
    )
    opposite = {"long": "short", "short": "long", "flat": "flat"}
    # 1 - p is not exact in floating point at the thresholds themselves; skip those points.
    if all(abs(p - t) > 1e-9 for t in (0.3, 0.45, 0.55, 0.7)):
        assert mirrored.direction == opposite[result.direction]
    if result.direction == "long":
        assert result.stop_loss is not None and result.stop_loss < price
        assert result.take_profit is not None and result.take_profit > price
    if result.direction == "short":
        assert result.stop_loss is not None and result.stop_loss > price
    if result.direction != "flat":
        assert result.stop_loss is not None
        # The stop never costs more than half the margin at the chosen leverage (unless 1x).
        loss_at_stop = result.leverage * abs(price - result.stop_loss) / price
        assert loss_at_stop <= 0.5 + 1e-9 or result.leverage == 1.0
        if result.take_profit is not None:
            assert result.risk_reward == pytest.approx(3.5 / 2.5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"p": 1.2}, "direction_probability must be at most 1"),
        ({"p": math.nan}, "direction_probability must be a finite number"),
        ({"confidence": -0.1}, "confidence must be at least 0"),
        ({"price": 0.0}, "price must be positive"),
        ({"atr": 0.0}, "atr must be positive"),
        ({"threshold": 0.5}, "thresholds must satisfy"),
        ({"threshold": 0.8}, "thresholds must satisfy"),
        ({"max_leverage": 0.5}, "max_leverage must be at least 1"),
        ({"atr": 50.0}, "larger than the price allows"),
    ],
)
def test_bad_inputs_are_named(kwargs: dict[str, float], message: str) -> None:
    p = kwargs.pop("p", 0.8)
    with pytest.raises(ValueError, match=message):
        call(p, **kwargs)


def _seeded_candles(n: int, seed: int = 7, freq: str = "1h") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.concatenate([[100.0], close[:-1]])
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.01, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.01, n))
    index = pd.date_range("2024-01-01", periods=n, freq=freq, tz="UTC")
    return pd.DataFrame(
        {"open": open_, "high": high, "low": low, "close": close, "volume": rng.uniform(1, 5, n)}, index=index
    )


def test_realized_volatility_is_annualised_per_bar_length() -> None:
    hourly = _seeded_candles(200)
    returns = np.diff(np.log(hourly["close"].to_numpy()[-25:]))
    expected = returns.std(ddof=1) * math.sqrt(365.25 * 24)
    assert realized_volatility(hourly, 24) == pytest.approx(expected)
    daily = hourly.copy()
    daily.index = pd.date_range("2024-01-01", periods=200, freq="1D", tz="UTC")
    assert realized_volatility(daily, 24) == pytest.approx(expected / math.sqrt(24))


def test_realized_volatility_ignores_a_gap_in_the_bar_length() -> None:
    df = _seeded_candles(30)
    gapped = df.copy()
    gapped.index = df.index.where(np.arange(30) < 20, df.index + pd.Timedelta(hours=33))
    assert realized_volatility(gapped, 24) == pytest.approx(realized_volatility(df, 24))


def test_helpers_refuse_short_or_broken_frames() -> None:
    df = _seeded_candles(30)
    with pytest.raises(ValueError, match="needs at least 25 candles, got 20"):
        realized_volatility(df.iloc[:20], 24)
    with pytest.raises(ValueError, match="missing volume"):
        realized_volatility(df.drop(columns="volume"), 24)
    with pytest.raises(ValueError, match="ascending time order"):
        realized_volatility(df.iloc[::-1], 24)
    broken = df.copy()
    broken.iloc[-1, 0] = np.nan
    with pytest.raises(ValueError, match="1 row\\(s\\) are not"):
        realized_volatility(broken, 24)
    with pytest.raises(ValueError, match="DatetimeIndex"):
        realized_volatility(df.reset_index(drop=True), 24)


@pytest.mark.shared_data
def test_on_real_btc_candles_the_call_is_sane() -> None:
    df = read_candle_file(shared_candle_file("BTC_USDT-1h.json")).iloc[-2000:]
    a = float(atr(*(df[c].to_numpy() for c in ("high", "low", "close")), 14)[-1])
    v = realized_volatility(df)
    price = float(df["close"].iloc[-1])
    assert 0 < a < 0.1 * price
    assert 0.01 < v < 5.0
    result = predict_market(
        direction_probability=0.72, confidence=0.6, price=price, atr=a, volatility=v, max_leverage=3.0
    )
    assert result.signal_type == SignalType.STRONG_BUY
    assert result.stop_loss == pytest.approx(price - 2.5 * a)
    assert 1.0 <= result.leverage <= 3.0
