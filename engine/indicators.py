"""Causal indicator series over an OHLCV frame, shared by the predictor and the technical score.

Every series here is *causal*: its value at bar t is computed from bars up to and including t,
never later ones, so that a backtest over a long frame and a live call over a short one agree
(``tests/engine/test_technical.py`` checks this). There is no back-filling and no centred window.

The frame is the project's candle shape (see ``storage.candles.load_candles``): columns
``open, high, low, close, volume`` as floats, indexed by ascending UTC open time.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = [
    "OHLCV_COLUMNS",
    "average_true_range",
    "bollinger_bands",
    "ema",
    "macd_histogram",
    "require_ohlcv",
    "rsi",
    "stochastic_k",
    "true_range",
    "wilder_average",
]

OHLCV_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume")


def require_ohlcv(df: pd.DataFrame, *, min_rows: int, purpose: str) -> None:
    """Refuse a frame the indicators cannot read, saying what is wrong and what is needed.

    Checked: the five columns exist, there are at least ``min_rows`` rows, the index ascends,
    and the last ``min_rows`` rows hold finite numbers (a NaN would silently poison every
    rolling window it enters).
    """
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{purpose} needs a pandas DataFrame of candles, got {type(df).__name__}")
    missing = [c for c in OHLCV_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{purpose} needs columns {', '.join(OHLCV_COLUMNS)}; missing {', '.join(missing)}")
    if len(df) < min_rows:
        raise ValueError(f"{purpose} needs at least {min_rows} candles, got {len(df)}")
    if not df.index.is_monotonic_increasing:
        raise ValueError(f"{purpose} needs candles in ascending time order; sort the frame by its index")
    values = df[list(OHLCV_COLUMNS)].to_numpy(dtype=float)
    if not np.isfinite(values).all():
        bad = df.index[~np.isfinite(values).all(axis=1)]
        raise ValueError(
            f"{purpose} needs finite open/high/low/close/volume; {len(bad)} row(s) are not "
            f"(first at {bad[0]}); drop them with dropna() or refetch the candles"
        )


def wilder_average(values: pd.Series, period: int) -> pd.Series:
    """Wilder's smoothing (RMA): the first value is the simple mean of the first ``period``
    values, then ``avg_t = (avg_{t-1} * (period - 1) + x_t) / period``.

    This is the exact recursion of Wilder's RSI and ATR, expressed as an exponential mean with
    ``alpha = 1/period`` started from the seed, so it runs vectorised. Values before the seed
    are NaN.
    """
    if period < 1:
        raise ValueError(f"period must be at least 1, got {period}")
    out = pd.Series(np.nan, index=values.index, dtype=float)
    if len(values) < period:
        return out
    seeded = values.iloc[period - 1 :].astype(float).copy()
    seeded.iloc[0] = float(values.iloc[:period].mean())
    out.iloc[period - 1 :] = seeded.ewm(alpha=1.0 / period, adjust=False).mean().to_numpy()
    return out


def true_range(df: pd.DataFrame) -> pd.Series:
    """High minus low, widened to the previous close when the bar gapped away from it.

    The first bar has no previous close, so its true range is its high minus its low.
    """
    prev_close = df["close"].shift(1)
    ranges = pd.concat(
        [df["high"] - df["low"], (df["high"] - prev_close).abs(), (df["low"] - prev_close).abs()],
        axis=1,
    )
    return ranges.max(axis=1, skipna=True)


def average_true_range(df: pd.DataFrame, period: int = 14) -> pd.Series:
    """Wilder's ATR for every bar (Pine's ``ta.atr``): the Wilder average of :func:`true_range`."""
    return wilder_average(true_range(df), period)


def ema(values: pd.Series, span: int) -> pd.Series:
    """Exponential moving average started at the first value (``adjust=False``), as Pine's
    ``ta.ema`` and the MACD here compute it: alpha = 2 / (span + 1)."""
    return values.ewm(span=span, adjust=False).mean()


def rsi(close: pd.Series, period: int = 14) -> pd.Series:
    """Wilder's relative strength index, 0..100 (100 when there were no losses in the window)."""
    change = close.diff().iloc[1:]
    gain = wilder_average(change.clip(lower=0.0), period)
    loss = wilder_average((-change).clip(lower=0.0), period)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = 100.0 - 100.0 / (1.0 + gain / loss)
    # No losses at all: RSI is 100 by definition (and 50 if nothing moved either way).
    value = value.where(loss != 0.0, np.where(gain > 0.0, 100.0, 50.0))
    value = value.where(gain.notna())
    return value.reindex(close.index)


def bollinger_bands(close: pd.Series, period: int = 20, width: float = 2.0) -> tuple[pd.Series, pd.Series]:
    """(lower, upper) bands: the ``period``-bar mean -/+ ``width`` population standard deviations,
    as Bollinger defined them (ddof=0)."""
    mean = close.rolling(period).mean()
    std = close.rolling(period).std(ddof=0)
    return mean - width * std, mean + width * std


def macd_histogram(close: pd.Series, fast: int = 12, slow: int = 26, signal: int = 9) -> pd.Series:
    """MACD line minus its signal line; EMAs start at the frame's first close (adjust=False)."""
    macd = ema(close, fast) - ema(close, slow)
    return macd - ema(macd, signal)


def stochastic_k(df: pd.DataFrame, period: int = 14, smooth: int = 3) -> pd.Series:
    """Slow stochastic %K, 0..100: where the close sits in the ``period``-bar high-low range,
    averaged over ``smooth`` bars. A bar whose range is zero reads 50 (neither end)."""
    lowest = df["low"].rolling(period).min()
    highest = df["high"].rolling(period).max()
    span = highest - lowest
    with np.errstate(divide="ignore", invalid="ignore"):
        raw = 100.0 * (df["close"] - lowest) / span
    raw = raw.where(span != 0.0, 50.0).where(span.notna())
    return raw.rolling(smooth).mean()
