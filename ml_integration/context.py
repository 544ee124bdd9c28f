"""Feature families beyond the 80+ single-timeframe set, for the model tournament to try:

* ``baseline``: the plain baseline forest's own columns (``ml_integration.baseline``), so the
  baseline is a candidate served the same way as every other model;
* ``htf`` (higher timeframe): 4-hour and daily returns, daily volatility and where the close
  sits against the last daily closes, resampled from the same hourly candles. Only *completed*
  higher-timeframe bars are read: the 4h bar 00:00-04:00 exists for the hourly row that opens at
  03:00 (its close is that row's close) and not before, so nothing at bar t reads a later bar;
* ``week``: the hour of the week as a 168-hour cycle, and the weekend (crypto trades all week,
  but liquidity does not);
* ``btc`` (for an alt): the market's relation to BTC from BTC's candles of the same timeframe
  (the *reference*, :func:`reference_symbol`): BTC's return over 1, 4 and 24 bars, the alt's
  4- and 24-bar return relative to BTC's, and the 72-bar beta and correlation of the alt's
  hourly returns to BTC's. BTC's bar with the same open time closes with the alt's bar, so
  nothing reads a later bar; BTC's one-bar holes are filled as the alt's are. Without the
  reference's candles the columns are NaN and the family is not a candidate.

Every column at bar t is a function of the ``LOOKBACK`` bars ending at t (the longest, the
7-day volatility, reads 7 × 24 + 23 bars), so serving's candle tail computes the same numbers
as a whole history, and holes are handled as ``features`` handles them (short ones filled,
windows over longer ones invalid). The tournament measures each family's out-of-sample
contribution (the default blend with and without it) and serves it only when it earns its place.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from common.indicators import rolling_corr, rolling_mean, rolling_std, safe_div, shift
from ml_integration.baseline import BASELINE_FEATURES, baseline_features
from ml_integration.candles import COLUMNS, FILL_GAP_BARS, fill_short_gaps, missing_in_window
from ml_integration.features import LOOKBACK, MODEL_FEATURES

__all__ = [
    "CONTEXT_FAMILIES",
    "EXTENDED_FEATURES",
    "EXTRA_FEATURES",
    "FAMILY_COLUMNS",
    "Reference",
    "extra_matrix",
    "reference_symbol",
]

_H4, _D1 = 4 * 3600, 86_400

HTF_FEATURES: tuple[str, ...] = (
    "htf_4h_ret_1", "htf_4h_ret_6", "htf_4h_since", "htf_1d_ret_1", "htf_1d_ret_3",
    "htf_1d_ret_7", "htf_1d_vol_7", "htf_1d_close_z_7", "htf_1d_since",
)  # fmt: skip
WEEK_FEATURES: tuple[str, ...] = ("week_hour_sin", "week_hour_cos", "weekend")
BTC_FEATURES: tuple[str, ...] = (
    "btc_ret_1", "btc_ret_4", "btc_ret_24", "btc_rel_ret_4", "btc_rel_ret_24", "btc_beta_72", "btc_corr_72",
)  # fmt: skip
_BTC_RETURNS, _BTC_RELATIVE, _BTC_WINDOW = (1, 4, 24), (4, 24), 72
BASELINE_COLUMNS: tuple[str, ...] = tuple(f"bl_{name}" for name in BASELINE_FEATURES)

#: The families the tournament adds to the default blend one at a time (``baseline`` is the
#: baseline forest's own set, not a context family).
CONTEXT_FAMILIES: dict[str, tuple[str, ...]] = {
    "htf": HTF_FEATURES,
    "week": WEEK_FEATURES,
    "btc": BTC_FEATURES,
}
#: Columns after ``MODEL_FEATURES`` in an extended feature row, in this order. New families are
#: appended: a model saved before them reads the same positions (``prediction`` accepts a saved
#: list that is a prefix of this one).
EXTRA_FEATURES: tuple[str, ...] = (*BASELINE_COLUMNS, *HTF_FEATURES, *WEEK_FEATURES, *BTC_FEATURES)
#: ``MODEL_FEATURES`` then ``EXTRA_FEATURES``: what a served direction model's columns index.
EXTENDED_FEATURES: tuple[str, ...] = (*MODEL_FEATURES, *EXTRA_FEATURES)
#: Positions in an extended row of each family's columns.
FAMILY_COLUMNS: dict[str, tuple[int, ...]] = {
    family: tuple(EXTENDED_FEATURES.index(name) for name in names)
    for family, names in {"baseline": BASELINE_COLUMNS, **CONTEXT_FAMILIES}.items()
}


class Reference(NamedTuple):
    """The reference market's candles the ``btc`` family reads: OHLCV rows and their open times
    (epoch seconds), of the same timeframe as the market's own."""

    values: np.ndarray
    stamps: np.ndarray

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> Reference:
        from ml_integration.candles import epoch_seconds

        return cls(frame[list(COLUMNS)].to_numpy(dtype=float), epoch_seconds(frame.index))


def reference_symbol(symbol: str | None) -> str | None:
    """The market whose candles the ``btc`` family reads for ``symbol``: ``BTC/<quote>`` for an
    alt quoted in anything but BTC; None for BTC itself (no relation to itself) and for a pair
    quoted in BTC (its price already is the relation)."""
    if not symbol or "/" not in symbol:
        return None
    base, quote = symbol.upper().split("/", 1)
    quote = quote.split(":", 1)[0]
    return None if "BTC" in (base, quote) else f"BTC/{quote}"


def _completed(stamps: np.ndarray, step: int, period: int) -> np.ndarray:
    """For each row, the position of the last row that *closes* a ``period`` bar at or before it
    (the row whose close is that bar's close), or -1 before the first one."""
    closes_period = (stamps + step) % period == 0
    last = np.where(closes_period, np.arange(len(stamps)), -1)
    return np.maximum.accumulate(last)


def _period_returns(
    close: np.ndarray, stamps: np.ndarray, ends: np.ndarray, period: int, k: int
) -> np.ndarray:
    """Log return over the last ``k`` completed ``period`` bars, for each row (NaN when one of
    those bars is missing, or before there are k of them)."""
    boundary = np.unique(ends[ends >= 0])
    out_b = np.full(len(boundary), np.nan)
    if len(boundary) > k:
        span = stamps[boundary[k:]] - stamps[boundary[:-k]]
        ret = np.log(close[boundary[k:]] / close[boundary[:-k]])
        out_b[k:] = np.where(span == k * period, ret, np.nan)
    return _per_row(out_b, boundary, ends)


def _per_row(values_b: np.ndarray, boundary: np.ndarray, ends: np.ndarray) -> np.ndarray:
    out = np.full(len(ends), np.nan)
    ok = ends >= 0
    out[ok] = values_b[np.searchsorted(boundary, ends[ok])]
    return out


def _htf(values: np.ndarray, stamps: np.ndarray, step: int) -> dict[str, np.ndarray]:
    close = values[:, 3]
    h4, d1 = _completed(stamps, step, _H4), _completed(stamps, step, _D1)
    out = {
        "htf_4h_ret_1": _period_returns(close, stamps, h4, _H4, 1),
        "htf_4h_ret_6": _period_returns(close, stamps, h4, _H4, 6),
        "htf_1d_ret_1": _period_returns(close, stamps, d1, _D1, 1),
        "htf_1d_ret_3": _period_returns(close, stamps, d1, _D1, 3),
        "htf_1d_ret_7": _period_returns(close, stamps, d1, _D1, 7),
    }
    for name, ends in (("htf_4h_since", h4), ("htf_1d_since", d1)):
        since = np.full(len(close), np.nan)
        ok = ends >= 0
        since[ok] = np.log(close[ok] / close[ends[ok]])
        out[name] = since
    boundary = np.unique(d1[d1 >= 0])
    daily_close = close[boundary]
    daily_ret = np.log(daily_close / shift(daily_close, 1))
    contiguous = np.concatenate([[False], np.diff(stamps[boundary]) == _D1])[: len(boundary)]
    daily_ret = np.where(contiguous, daily_ret, np.nan)
    out["htf_1d_vol_7"] = _per_row(rolling_std(daily_ret, 7), boundary, d1)
    mean7 = _per_row(rolling_mean(daily_close, 7), boundary, d1)
    std7 = _per_row(rolling_std(daily_close, 7), boundary, d1)
    out["htf_1d_close_z_7"] = safe_div(close - mean7, std7)  # NaN where std7 is NaN
    return out


def _week(stamps: np.ndarray) -> dict[str, np.ndarray]:
    hour_of_week = ((stamps // 3600) + 3 * 24) % 168  # 1970-01-01 was a Thursday: Monday 00:00 = 0
    angle = 2.0 * np.pi * hour_of_week / 168.0
    weekday = hour_of_week // 24
    return {"week_hour_sin": np.sin(angle), "week_hour_cos": np.cos(angle), "weekend": (weekday >= 5) * 1.0}


def _btc(
    values: np.ndarray, stamps: np.ndarray, step: int, reference: Reference | None
) -> dict[str, np.ndarray]:
    """The ``btc`` family on the market's (filled) time grid; all NaN without a reference."""
    if reference is None or len(reference.stamps) == 0:
        return {name: np.full(len(stamps), np.nan) for name in BTC_FEATURES}
    ref_values, ref_stamps, _ = fill_short_gaps(reference.values, reference.stamps, step, FILL_GAP_BARS)
    at = np.minimum(np.searchsorted(ref_stamps, stamps), len(ref_stamps) - 1)
    log_btc = np.where(ref_stamps[at] == stamps, np.log(ref_values[at, 3]), np.nan)
    log_alt = np.log(values[:, 3])
    out = {f"btc_ret_{k}": log_btc - shift(log_btc, k) for k in _BTC_RETURNS}
    for k in _BTC_RELATIVE:
        out[f"btc_rel_ret_{k}"] = (log_alt - shift(log_alt, k)) - out[f"btc_ret_{k}"]
    alt_ret, btc_ret = log_alt - shift(log_alt, 1), out["btc_ret_1"]
    w = _BTC_WINDOW
    mean_alt, mean_btc = rolling_mean(alt_ret, w), rolling_mean(btc_ret, w)
    covariance = rolling_mean(alt_ret * btc_ret, w) - mean_alt * mean_btc
    variance = rolling_mean(btc_ret * btc_ret, w) - mean_btc * mean_btc
    out["btc_beta_72"] = safe_div(covariance, variance)  # NaN where a window is incomplete
    out["btc_corr_72"] = rolling_corr(alt_ret, btc_ret, w)
    return out


def _baseline(values: np.ndarray, stamps: np.ndarray) -> dict[str, np.ndarray]:
    index = pd.DatetimeIndex(pd.to_datetime(stamps, unit="s", utc=True))
    frame = pd.DataFrame(values, index=index, columns=list(COLUMNS))
    table = baseline_features(frame).to_numpy()
    return {f"bl_{name}": table[:, j] for j, name in enumerate(BASELINE_FEATURES)}


def extra_matrix(
    values: np.ndarray, stamps_sec: np.ndarray, timeframe_sec: int, *, max_missing_bars: int = 0,
    fill_bars: int = FILL_GAP_BARS, reference: Reference | None = None,
) -> np.ndarray:  # fmt: skip
    """The :data:`EXTRA_FEATURES` columns for every row of ``values`` (open, high, low, close,
    volume), with the gap policy of ``features.compute_feature_matrix``: short holes filled,
    rows whose ``LOOKBACK`` window misses more bars all-NaN. ``reference``: the candles the
    ``btc`` family reads (None: those columns are NaN)."""
    filled, stamps, positions = fill_short_gaps(values, stamps_sec, timeframe_sec, fill_bars)
    columns = {**_baseline(filled, stamps), **_htf(filled, stamps, timeframe_sec), **_week(stamps),
               **_btc(filled, stamps, timeframe_sec, reference)}  # fmt: skip
    matrix = np.column_stack([columns[name] for name in EXTRA_FEATURES])
    matrix[: LOOKBACK - 1] = np.nan
    missing = missing_in_window(stamps, LOOKBACK, timeframe_sec)
    matrix[~(missing <= max_missing_bars)] = np.nan
    return matrix[positions]
