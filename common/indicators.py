"""The one implementation of every indicator: the ML features (:mod:`ml_integration.features`)
and the hybrid mode's technical score (:mod:`ml_integration.technical`) both compute RSI, ATR,
Bollinger bands, MACD and the stochastic here, so the two never disagree about what an RSI is.

Every series is *causal*: its value at bar t is computed from bars up to and including t, never
later ones (no back-filling, no centred window). Exponential averages are *finite-window*: the
usual exponential weights truncated after ``min(4 / alpha, MAX_WINDOW)`` bars and renormalised,
so a value does not depend on where the data starts: a backtest over five years and a live call
over the last few hundred bars agree. (Wilder's RSI and ATR are such averages with alpha =
1/period; truncating 14-bar Wilder smoothing at 56 bars leaves out 1.6% of its weight.)

Inputs and outputs are float arrays of one length; values without a full window are NaN.
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

__all__ = [
    "MAX_WINDOW",
    "OHLCV_COLUMNS",
    "atr",
    "bollinger_bands",
    "ema",
    "macd",
    "pad",
    "require_ohlcv",
    "rolling_corr",
    "rolling_max",
    "rolling_mean",
    "rolling_min",
    "rolling_moments",
    "rolling_std",
    "rolling_sum",
    "rsi",
    "safe_div",
    "shift",
    "stochastic_k",
    "true_range",
    "windows",
]

#: The longest window any indicator reads (the features' 200-bar SMA); EMAs are cut here too.
MAX_WINDOW = 200

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


def pad(values: np.ndarray, n: int) -> np.ndarray:
    """``values`` placed at the end of an ``n``-long array of NaN (the rows without a full window)."""
    out = np.full(n, np.nan)
    if len(values):
        out[n - len(values) :] = values
    return out


def windows(x: np.ndarray, w: int) -> np.ndarray:
    """Read-only (n - w + 1, w) view of trailing windows. Built with the ndarray constructor
    rather than ``sliding_window_view`` because serving calls this ~80 times per signal and the
    generic helper's overhead dominated the latency."""
    if len(x) < w:
        return np.empty((0, w))
    if not x.flags.c_contiguous or x.dtype != np.float64:
        return sliding_window_view(x, w)
    view = np.ndarray((len(x) - w + 1, w), dtype=np.float64, buffer=x, strides=(8, 8))
    view.flags.writeable = False
    return view


def rolling_mean(x: np.ndarray, w: int) -> np.ndarray:
    # sum / w rather than .mean(): the ufunc reduce skips numpy's Python-level wrapper
    return pad(windows(x, w).sum(axis=1) / w, len(x))


def rolling_sum(x: np.ndarray, w: int) -> np.ndarray:
    return pad(windows(x, w).sum(axis=1), len(x))


def rolling_std(x: np.ndarray, w: int) -> np.ndarray:
    """Population standard deviation (ddof 0) of each trailing window."""
    win = windows(x, w)
    dev = win - (win.sum(axis=1) / w)[:, None]
    return pad(np.sqrt((dev * dev).sum(axis=1) / w), len(x))


def rolling_max(x: np.ndarray, w: int) -> np.ndarray:
    return pad(windows(x, w).max(axis=1), len(x))


def rolling_min(x: np.ndarray, w: int) -> np.ndarray:
    return pad(windows(x, w).min(axis=1), len(x))


def shift(x: np.ndarray, k: int) -> np.ndarray:
    out = np.full(len(x), np.nan)
    if k < len(x):
        out[k:] = x[: len(x) - k]
    return out


def safe_div(a: np.ndarray, b: np.ndarray, fill: float = 0.0) -> np.ndarray:
    """a / b, with ``fill`` where b is 0 (a flat window); NaN where b is NaN. The division is
    skipped where b is 0, so no warning is raised and no inf is produced."""
    return np.divide(a, b, out=np.full(len(a), fill), where=b != 0)


@functools.lru_cache(maxsize=64)
def _ema_weights(alpha: float, window: int) -> np.ndarray:
    weights = alpha * (1.0 - alpha) ** np.arange(window)[::-1]  # oldest first
    return weights / weights.sum()


def ema(x: np.ndarray, span: float | None = None, *, alpha: float | None = None) -> np.ndarray:
    """Finite-window EMA (see the module docstring): ``span`` gives α = 2/(span+1)."""
    a = alpha if alpha is not None else 2.0 / (float(span or 1) + 1.0)
    window = int(min(MAX_WINDOW, max(2, round(4.0 / a))))
    return pad(windows(x, window) @ _ema_weights(a, window), len(x))


def rolling_moments(x: np.ndarray, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Rolling skewness and excess kurtosis (population moments; 0 for a flat window)."""
    win = windows(x, w)
    dev = win - (win.sum(axis=1) / w)[:, None]
    sq = dev * dev
    m2 = sq.sum(axis=1) / w
    skew = safe_div((sq * dev).sum(axis=1) / w, m2 * np.sqrt(m2))
    kurt = safe_div((sq * sq).sum(axis=1) / w, m2 * m2, fill=3.0) - 3.0
    return pad(skew, len(x)), pad(kurt, len(x))


def rolling_corr(x: np.ndarray, y: np.ndarray, w: int) -> np.ndarray:
    wx, wy = windows(x, w), windows(y, w)
    dx = wx - (wx.sum(axis=1) / w)[:, None]
    dy = wy - (wy.sum(axis=1) / w)[:, None]
    denom = np.sqrt((dx**2).sum(axis=1) * (dy**2).sum(axis=1))
    return pad(safe_div((dx * dy).sum(axis=1), denom), len(x))




# --- indicators -----------------------------------------------------------------------------
def true_range(high: np.ndarray, low: np.ndarray, close: np.ndarray) -> np.ndarray:
    """High minus low, widened to the previous close when the bar gapped away from it (NaN on
    the first bar, which has no previous close)."""
    prev = shift(close, 1)
    out = np.fmax(high - low, np.fmax(np.abs(high - prev), np.abs(low - prev)))
    out[:1] = np.nan
    return out


def atr(high: np.ndarray, low: np.ndarray, close: np.ndarray, period: int = 14) -> np.ndarray:
    """Wilder's average true range (finite-window, alpha = 1/period), in price units."""
    return ema(true_range(high, low, close), alpha=1.0 / period)


def rsi(close: np.ndarray, period: int = 14) -> np.ndarray:
    """Wilder's relative strength index, 0..100 (50 when nothing moved in the window)."""
    change = close - shift(close, 1)
    gain, loss = np.where(change > 0, change, 0.0), np.where(change < 0, -change, 0.0)
    gain[:1] = loss[:1] = np.nan
    g, lo = ema(gain, alpha=1.0 / period), ema(loss, alpha=1.0 / period)
    return 100.0 * safe_div(g, g + lo, fill=0.5)


def bollinger_bands(close: np.ndarray, period: int = 20, width: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper): the ``period``-bar mean -/+ ``width`` population standard deviations, as
    Bollinger defined them (ddof 0)."""
    mid, sd = rolling_mean(close, period), rolling_std(close, period)
    return mid - width * sd, mid + width * sd


def macd(close: np.ndarray, fast: int = 12, slow: int = 26, signal: int = 9) -> tuple[np.ndarray, np.ndarray]:
    """(MACD line, signal line); the histogram is their difference."""
    line = ema(close, fast) - ema(close, slow)
    return line, ema(line, signal)


def stochastic_k(high: np.ndarray, low: np.ndarray, close: np.ndarray, period: int = 14) -> np.ndarray:
    """Fast stochastic %K, 0..100: where the close sits in the ``period``-bar high-low range
    (50 when the range is zero). The slow %K is its 3-bar mean."""
    hh, ll = rolling_max(high, period), rolling_min(low, period)
    return 100.0 * safe_div(close - ll, hh - ll, fill=0.5)
