"""The one indicator implementation (``common.indicators``), shared by the ML features
and the hybrid technical score: Wilder's smoothing cut to a finite window, causal, and the same
whatever the history's length."""

from __future__ import annotations

import math

import numpy as np
import pytest

from common.indicators import MAX_WINDOW, atr, ema, rsi, true_range

rng = np.random.default_rng(7)


def walk(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    high = close * (1 + np.abs(rng.normal(0, 0.004, n)))
    low = close * (1 - np.abs(rng.normal(0, 0.004, n)))
    return high, low, close


def finite_ema_loop(x: list[float], alpha: float) -> float:
    """The definition, written out: the last ``min(4/alpha, MAX_WINDOW)`` values with weights
    alpha·(1-alpha)^age, renormalised to sum to one."""
    window = int(min(MAX_WINDOW, max(2, round(4.0 / alpha))))
    tail = x[-window:]
    weights = [alpha * (1 - alpha) ** (len(tail) - 1 - i) for i in range(len(tail))]
    return sum(w * v for w, v in zip(weights, tail, strict=True)) / sum(weights)


def wilder_loop(x: list[float], period: int) -> float:
    """Wilder's recursion seeded with the simple mean of the first ``period`` values."""
    value = sum(x[:period]) / period
    for v in x[period:]:
        value = (value * (period - 1) + v) / period
    return value


def test_ema_is_the_finite_window_definition() -> None:
    _, _, close = walk(150)
    for alpha in (1 / 14, 2 / 13, 0.5):
        assert ema(close, alpha=alpha)[-1] == pytest.approx(finite_ema_loop(list(close), alpha), rel=1e-12)


def test_true_range_sees_gaps_through_the_previous_close() -> None:
    high, low, close = np.array([11.0, 11, 21]), np.array([9.0, 9, 19]), np.array([10.0, 10, 20])
    tr = true_range(high, low, close)
    assert math.isnan(tr[0]) and tr[1] == 2 and tr[2] == 11  # the gap up from 10 to a high of 21


def test_atr_and_rsi_track_wilders_recursion_once_warm() -> None:
    high, low, close = walk(400)
    tr = list(true_range(high, low, close)[1:])
    assert atr(high, low, close, 14)[-1] == pytest.approx(wilder_loop(tr, 14), rel=0.02)
    change = np.diff(close)
    gain, loss = wilder_loop(list(np.maximum(change, 0)), 14), wilder_loop(list(np.maximum(-change, 0)), 14)
    assert rsi(close, 14)[-1] == pytest.approx(100 * gain / (gain + loss), abs=1.0)


def test_values_do_not_depend_on_where_the_history_starts() -> None:
    """What lets serving compute a 320-candle window and a backtest five years, and agree."""
    high, low, close = walk(1000)
    tail = slice(-MAX_WINDOW - 5, None)
    assert rsi(close, 14)[-1] == pytest.approx(rsi(close[tail], 14)[-1], rel=1e-12)
    assert atr(high, low, close, 14)[-1] == pytest.approx(
        atr(high[tail], low[tail], close[tail], 14)[-1], rel=1e-12
    )


def test_no_value_before_a_full_window_and_no_look_ahead() -> None:
    _, _, close = walk(120)
    values = rsi(close, 14)
    window = 4 * 14  # the finite Wilder window: the first change is bar 1
    assert np.isnan(values[:window]).all() and not np.isnan(values[window + 1 :]).any()
    changed = close.copy()
    changed[90:] *= 1.5  # rewrite the future
    assert np.array_equal(rsi(changed, 14)[:90], values[:90], equal_nan=True)
