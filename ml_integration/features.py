"""Technical features computed from candles, in numpy, without looking ahead.

Every feature at bar t is a function of the ``LOOKBACK`` bars ending at t and of nothing else:

* rolling statistics use trailing windows only (``sliding_window_view``), never centred ones;
* exponential averages (EMA, Wilder's RSI/ATR smoothing) are *finite-window* EMAs: the usual
  exponential weights, truncated after ``min(4 × span, LOOKBACK)`` bars and renormalised. A
  textbook EMA remembers the whole series, so its value would depend on where the data
  starts; the finite version gives identical numbers whether computed over five years or over
  the last ``LOOKBACK`` bars, which is what lets serving compute only the tail it needs;
* OBV and the accumulation/distribution line, which are cumulative in the textbook, are
  expressed as their change over a trailing window normalised by the window's volume.

Gap policy: a hole of at most ``candles.FILL_GAP_BARS`` bars (one missing hour) is filled with
a flat bar at the previous close, volume 0, before the features are computed (serving says so
in the signal). A row whose ``LOOKBACK``-bar window is then still missing more than
``max_missing_bars`` bars (default 0: any larger hole) is *invalid*:
:meth:`FeatureEngineering.create_features` returns NaN for
all of its features, training drops it, and serving returns a hold naming the gap. A window
that straddles an exchange outage would otherwise mix prices from either side of a hole of
unknown length as if they were neighbours. Rows inside the first ``LOOKBACK - 1`` bars are
invalid for the same reason (no full window).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from common.indicators import MAX_WINDOW, atr, bollinger_bands, macd, rsi, stochastic_k
from common.indicators import ema as _ema
from common.indicators import pad as _pad
from common.indicators import rolling_corr as _corr
from common.indicators import rolling_max as _max
from common.indicators import rolling_mean as _mean
from common.indicators import rolling_min as _min
from common.indicators import rolling_moments as _moments
from common.indicators import rolling_std as _std
from common.indicators import rolling_sum as _sum
from common.indicators import safe_div as _div
from common.indicators import shift as _shift
from common.indicators import windows as _win
from ml_integration.candles import (
    FILL_GAP_BARS,
    epoch_seconds,
    fill_short_gaps,
    infer_timeframe_seconds,
    missing_in_window,
    validate_candles,
)

__all__ = [
    "DUPLICATE_FEATURES",
    "FEATURE_FAMILIES",
    "FEATURE_NAMES",
    "LOOKBACK",
    "MODEL_COLUMNS",
    "MODEL_FEATURES",
    "FeatureEngineering",
    "compute_feature_matrix",
]

#: Bars each feature row needs (the longest window: the 200-bar SMA).
LOOKBACK = MAX_WINDOW

_LN2 = float(np.log(2.0))


# --- feature families -----------------------------------------------------------------------------
Arrays = dict[str, np.ndarray]


def _returns(o: np.ndarray, h: np.ndarray, low: np.ndarray, c: np.ndarray, v: np.ndarray) -> Arrays:
    logc = np.log(c)
    out = {f"log_ret_{k}": logc - _shift(logc, k) for k in (1, 2, 3, 5, 10, 20, 50)}
    return out


def _oscillators(o: np.ndarray, h: np.ndarray, low: np.ndarray, c: np.ndarray, v: np.ndarray) -> Arrays:
    out: Arrays = {}
    for n in (7, 14, 21):
        out[f"rsi_{n}"] = rsi(c, n)
    line, signal = macd(c, 12, 26, 9)
    out["macd"] = line / c
    out["macd_signal"] = signal / c
    out["macd_hist"] = (line - signal) / c
    for n in (20, 50):
        lower, upper = bollinger_bands(c, n, 2.0)
        out[f"bb_pctb_{n}"] = _div(c - lower, upper - lower, fill=0.5)
    out["bb_width_20"] = 4 * _std(c, 20) / _mean(c, 20)
    for n in (14, 28):
        out[f"atr_{n}"] = atr(h, low, c, n) / c
    for n in (14, 28):
        hh, ll = _max(h, n), _min(low, n)
        out[f"williams_r_{n}"] = -100.0 * _div(hh - c, hh - ll, fill=0.5)
    tp = (h + low + c) / 3.0
    tp_win = _win(tp, 20)
    mad = _pad(np.abs(tp_win - (tp_win.sum(axis=1) / 20)[:, None]).sum(axis=1) / 20, len(c))
    out["cci_20"] = _div(tp - _mean(tp, 20), 0.015 * mad)
    stoch_k = stochastic_k(h, low, c, 14)
    out["stoch_k_14"] = stoch_k
    out["stoch_d_3"] = _mean(stoch_k, 3)
    return out


def _trend(o: np.ndarray, h: np.ndarray, low: np.ndarray, c: np.ndarray, v: np.ndarray) -> Arrays:
    out: Arrays = {}
    sma = {n: _mean(c, n) for n in (5, 10, 20, 50, 100, 200)}
    ema = {n: _ema(c, n) for n in (5, 10, 12, 20, 26, 50, 100)}
    for n, avg in sma.items():
        out[f"close_sma_{n}"] = c / avg - 1.0
    for n in (5, 10, 20, 50, 100):
        out[f"close_ema_{n}"] = c / ema[n] - 1.0
    out["sma_5_20"] = sma[5] / sma[20] - 1.0
    out["sma_20_50"] = sma[20] / sma[50] - 1.0
    out["sma_50_200"] = sma[50] / sma[200] - 1.0
    out["ema_12_26"] = ema[12] / ema[26] - 1.0
    above = np.where(np.isnan(sma[50]), np.nan, np.sign(sma[20] - sma[50]))
    out["sma_20_above_50"] = above
    out["sma_20_50_cross"] = above - _shift(above, 1)
    return out


def _volume(o: np.ndarray, h: np.ndarray, low: np.ndarray, c: np.ndarray, v: np.ndarray) -> Arrays:
    out: Arrays = {}
    for n in (5, 20, 50):
        out[f"volume_ratio_{n}"] = _div(v, _mean(v, n), fill=1.0)
    logv = np.log1p(v)
    out["volume_z_20"] = _div(logv - _mean(logv, 20), _std(logv, 20))
    direction = np.sign(c - _shift(c, 1))
    vol_sum_20 = _sum(v, 20)
    out["obv_20"] = _div(_sum(direction * v, 20), vol_sum_20)
    flow = _div((c - low) - (h - c), h - low)
    out["ad_20"] = _div(_sum(flow * v, 20), vol_sum_20)
    tp = (h + low + c) / 3.0
    money = tp * v
    tp_change = tp - _shift(tp, 1)
    pos = _sum(np.where(tp_change > 0, money, 0.0) * np.where(np.isnan(tp_change), np.nan, 1.0), 14)
    neg = _sum(np.where(tp_change < 0, money, 0.0) * np.where(np.isnan(tp_change), np.nan, 1.0), 14)
    out["mfi_14"] = 100.0 * _div(pos, pos + neg, fill=0.5)
    for n in (24, 72):
        vwap = _div(_sum(money, n), _sum(v, n), fill=np.nan)
        vwap = np.where(np.isnan(vwap) & ~np.isnan(_mean(tp, n)), _mean(tp, n), vwap)
        out[f"close_vwap_{n}"] = c / vwap - 1.0
    abs_ret = np.abs(np.log(c) - _shift(np.log(c), 1))
    out["volume_absret_corr_20"] = _corr(abs_ret, logv, 20)
    return out


def _calendar(stamps_sec: np.ndarray) -> Arrays:
    """Bar open time (known at t) as cycles, so 23h and 0h are neighbours."""
    moments = stamps_sec.astype("datetime64[s]")
    hour = (stamps_sec // 3600) % 24
    weekday = ((stamps_sec // 86400) + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    month_start = moments.astype("datetime64[M]")
    day = (moments.astype("datetime64[D]") - month_start.astype("datetime64[D]")).astype(np.int64)
    month = month_start.astype(np.int64) % 12
    out: Arrays = {}
    for name, value, period in (
        ("hour", hour, 24),
        ("weekday", weekday, 7),
        ("day", day, 31),
        ("month", month, 12),
    ):
        angle = 2.0 * np.pi * value.astype(float) / period
        out[f"{name}_sin"], out[f"{name}_cos"] = np.sin(angle), np.cos(angle)
    return out


def _lags_and_stats(o: np.ndarray, h: np.ndarray, low: np.ndarray, c: np.ndarray, v: np.ndarray) -> Arrays:
    out: Arrays = {}
    logc = np.log(c)
    ret = logc - _shift(logc, 1)
    for k in range(1, 6):
        out[f"log_ret_1_lag_{k}"] = _shift(ret, k)
    vol_ratio = _div(v, _mean(v, 20), fill=1.0)
    for k in range(1, 4):
        out[f"volume_ratio_20_lag_{k}"] = _shift(vol_ratio, k)
    for n in (5, 10, 20, 50):
        out[f"ret_std_{n}"] = _std(ret, n)
    for n in (20, 50):
        out[f"ret_skew_{n}"], out[f"ret_kurt_{n}"] = _moments(ret, n)
        out[f"close_z_{n}"] = _div(c - _mean(c, n), _std(c, n))
    return out


def _volatility(o: np.ndarray, h: np.ndarray, low: np.ndarray, c: np.ndarray, v: np.ndarray) -> Arrays:
    out: Arrays = {}
    hl = np.log(h / low) ** 2
    co = np.log(c / o) ** 2
    rs = np.log(h / c) * np.log(h / o) + np.log(low / c) * np.log(low / o)
    for n in (20, 50):
        out[f"parkinson_{n}"] = np.sqrt(_mean(hl, n) / (4.0 * _LN2))
        out[f"garman_klass_{n}"] = np.sqrt(np.fmax(_mean(0.5 * hl - (2.0 * _LN2 - 1.0) * co, n), 0.0))
    out["rogers_satchell_20"] = np.sqrt(np.fmax(_mean(rs, 20), 0.0))
    ret = np.log(c) - _shift(np.log(c), 1)
    std20 = _std(ret, 20)
    out["vol_of_vol_50"] = _div(_std(std20, 50), _mean(std20, 50))
    out["vol_ratio_5_50"] = _div(_std(ret, 5), _std(ret, 50), fill=1.0)
    rng = h - low
    out["body_range"] = _div(c - o, rng)
    out["upper_wick"] = _div(h - np.fmax(o, c), rng)
    out["lower_wick"] = _div(np.fmin(o, c) - low, rng)
    out["range_close"] = rng / c
    hh20, ll20 = _max(h, 20), _min(low, 20)
    out["range_position_20"] = _div(c - ll20, hh20 - ll20, fill=0.5)
    out["close_high_50"] = c / _max(h, 50) - 1.0
    out["close_low_50"] = c / _min(low, 50) - 1.0
    return out


_FAMILIES: tuple[tuple[str, Callable[..., Arrays]], ...] = (
    ("returns", _returns),
    ("oscillators", _oscillators),
    ("trend", _trend),
    ("volume", _volume),
    ("lags_and_stats", _lags_and_stats),
    ("volatility", _volatility),
)


def _compute(values: np.ndarray, stamps_sec: np.ndarray) -> tuple[list[str], list[str], np.ndarray]:
    o, h, low, c, v = (np.ascontiguousarray(values[:, i]) for i in range(5))
    names: list[str] = []
    families: list[str] = []
    columns: list[np.ndarray] = []
    for family, func in _FAMILIES:
        for name, column in func(o, h, low, c, v).items():
            names.append(name)
            families.append(family)
            columns.append(column)
    for name, column in _calendar(stamps_sec).items():
        names.append(name)
        families.append("calendar")
        columns.append(column)
    matrix = np.column_stack(columns)
    matrix[: LOOKBACK - 1] = np.nan  # no full window yet: the same rows are invalid everywhere
    return names, families, matrix


def compute_feature_matrix(
    values: np.ndarray, stamps_sec: np.ndarray, timeframe_sec: int, *, max_missing_bars: int = 0,
    fill_bars: int = FILL_GAP_BARS,
) -> np.ndarray:  # fmt: skip
    """Features for every row of ``values`` (columns open, high, low, close, volume), in
    :data:`FEATURE_NAMES` order. Holes of at most ``fill_bars`` bars are filled first
    (``candles.fill_short_gaps``); rows without a full window free of other holes are all-NaN."""
    filled, stamps, positions = fill_short_gaps(values, stamps_sec, timeframe_sec, fill_bars)
    _, _, matrix = _compute(filled, stamps)
    missing = missing_in_window(stamps, LOOKBACK, timeframe_sec)
    matrix[~(missing <= max_missing_bars)] = np.nan
    return matrix[positions]


def _names() -> tuple[list[str], dict[str, str]]:
    rng = np.random.default_rng(0)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.01, LOOKBACK)))
    values = np.column_stack([close, close * 1.01, close * 0.99, close, np.full(LOOKBACK, 10.0)])
    names, families, _ = _compute(values, np.arange(LOOKBACK, dtype=np.int64) * 3600)
    return names, dict(zip(names, families, strict=True))


FEATURE_NAMES, FEATURE_FAMILIES = _names()

#: Features that are exact affine copies of another (to float rounding): ``williams_r_14`` =
#: ``stoch_k_14`` − 100 and ``bb_pctb_n`` = ``close_z_n`` / 4 + 0.5. They stay in the set (the
#: families are the seed's), but the models do not read them: a twin splits a forest's splits and
#: importances between two names and adds nothing.
DUPLICATE_FEATURES = ("williams_r_14", "bb_pctb_20", "bb_pctb_50")
#: What the models read, in :data:`FEATURE_NAMES` order.
MODEL_FEATURES = [name for name in FEATURE_NAMES if name not in DUPLICATE_FEATURES]
#: Their columns in a :func:`compute_feature_matrix` row.
MODEL_COLUMNS = np.array([FEATURE_NAMES.index(name) for name in MODEL_FEATURES])


class FeatureEngineering:
    """Builds the feature table the models learn from (see the module docstring for the
    no-look-ahead guarantee and the gap policy)."""

    def __init__(self, *, max_missing_bars: int = 0, timeframe_sec: int | None = None):
        if max_missing_bars < 0:
            raise ValueError(f"max_missing_bars must be >= 0, got {max_missing_bars}")
        self.max_missing_bars = max_missing_bars
        self.timeframe_sec = timeframe_sec

    def _timeframe(self, df: pd.DataFrame) -> int:
        return self.timeframe_sec or infer_timeframe_seconds(df.index)

    def create_features(self, ohlcv_df: pd.DataFrame) -> pd.DataFrame:
        """One row per candle, one column per feature; rows without a full gap-free window are
        NaN (drop them with ``dropna()``). Raises :class:`CandleDataError` for bad candles or
        fewer than ``LOOKBACK`` rows."""
        df = validate_candles(ohlcv_df, min_rows=LOOKBACK)
        stamps = epoch_seconds(df.index)
        matrix = compute_feature_matrix(
            df.to_numpy(), stamps, self._timeframe(df), max_missing_bars=self.max_missing_bars
        )
        return pd.DataFrame(matrix, index=df.index, columns=FEATURE_NAMES)
