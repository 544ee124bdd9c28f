"""OHLCV frames: the one shape the library accepts, its validation, gaps, and file reading.

A candle frame is a pandas DataFrame indexed by a UTC ``DatetimeIndex`` of bar *open* times,
with float columns ``open, high, low, close, volume`` in ascending time order.

Validation fails loudly (:class:`CandleDataError` naming the problem and the row) instead of
letting a NaN, a zero price, an inverted bar or an out-of-order timestamp turn into a
plausible-looking prediction.

Gaps: exchanges have outages, so real history skips bars (the shared BTC/USDT 1h file has 27
holes, the largest 34 h). :func:`find_gaps` lists them; :func:`missing_in_window` counts the
bars missing inside any trailing window, which is what ``features`` and ``labels`` use to
refuse windows that straddle a hole (see the policy in ``features``). A hole of at most
``FILL_GAP_BARS`` bars (one missing hour, which Binance has) is filled instead
(:func:`fill_short_gaps`): one flat bar at the previous close, volume 0, so a single lost bar no
longer switches the model off for the 200-bar window that contains it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ml_integration.exceptions import CandleDataError

__all__ = [
    "COLUMNS",
    "FILL_GAP_BARS",
    "Gap",
    "check_candle_values",
    "epoch_seconds",
    "fill_short_gaps",
    "filled_bar_times",
    "find_gaps",
    "frame_from_rows",
    "frame_to_rows",
    "infer_timeframe_seconds",
    "missing_in_window",
    "read_candle_file",
    "timeframe_seconds",
    "validate_candles",
]

COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume")

_TICKS_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
_UNIT_SECONDS = {"m": 60, "h": 3600, "d": 86400, "w": 604800}


def timeframe_seconds(timeframe: str) -> int:
    """``"1h"`` → 3600. Accepts the ccxt spellings ``<n>m``, ``<n>h``, ``<n>d``, ``<n>w``."""
    text = timeframe.strip()
    unit = text[-1:].lower()
    if unit not in _UNIT_SECONDS or not text[:-1].isdigit() or int(text[:-1]) <= 0:
        raise ValueError(f"timeframe {timeframe!r} is not like '15m', '1h', '4h' or '1d'")
    return int(text[:-1]) * _UNIT_SECONDS[unit]


def epoch_seconds(index: pd.DatetimeIndex) -> np.ndarray:
    """Bar times as int64 UTC epoch seconds, whatever the index's resolution (pandas 3 keeps
    the unit it was built with, so ``asi8`` alone may be seconds, micro- or nanoseconds)."""
    per_second = _TICKS_PER_SECOND.get(str(getattr(index, "unit", "ns")))
    if per_second is None:
        return index.as_unit("s").asi8.astype(np.int64)
    return index.asi8 // per_second


def infer_timeframe_seconds(index: pd.DatetimeIndex) -> int:
    """The bar spacing of a frame: the most common difference between neighbouring bars
    (gaps are rare, so the mode is the timeframe)."""
    if len(index) < 2:
        raise CandleDataError("need at least 2 candles to infer the timeframe")
    diffs = np.diff(epoch_seconds(index))
    values, counts = np.unique(diffs, return_counts=True)
    return int(values[np.argmax(counts)])


def frame_from_rows(rows: list[list[float]] | np.ndarray) -> pd.DataFrame:
    """``[[ms, open, high, low, close, volume], ...]`` (freqtrade/ccxt order) → a candle frame."""
    data = np.asarray(rows, dtype=float)
    if data.ndim != 2 or data.shape[1] != 6:
        raise CandleDataError(
            f"expected rows of [ms, open, high, low, close, volume], got shape {data.shape}"
        )
    index = pd.DatetimeIndex(pd.to_datetime(data[:, 0].astype(np.int64), unit="ms", utc=True), name="time")
    return pd.DataFrame(data[:, 1:], index=index, columns=list(COLUMNS))


def frame_to_rows(frame: pd.DataFrame) -> list[list[float]]:
    """The inverse of :func:`frame_from_rows`: rows ``[ms, open, high, low, close, volume]``."""
    stamps = frame.index.as_unit("ms").asi8
    values = frame[list(COLUMNS)].to_numpy().tolist()
    return [[int(ms), *row] for ms, row in zip(stamps, values, strict=True)]


def read_candle_file(path: str | Path) -> pd.DataFrame:
    """Read a freqtrade JSON candle file (``[[ms, o, h, l, c, v], ...]``) or a CSV file.

    A CSV needs a header with ``open, high, low, close, volume`` and a time column named
    ``time``, ``timestamp``, ``date`` or ``ts_ms`` (epoch milliseconds or ISO dates). The
    result is validated with :func:`validate_candles`.
    """
    file = Path(path)
    if not file.exists():
        raise FileNotFoundError(f"candle file {file} does not exist")
    if file.suffix.lower() == ".json":
        with file.open() as handle:
            rows = json.load(handle)
        return validate_candles(frame_from_rows(rows))
    if file.suffix.lower() != ".csv":
        raise ValueError(f"{file}: unknown candle file type (expected .json or .csv)")
    raw = pd.read_csv(file)
    raw.columns = [str(c).strip().lower() for c in raw.columns]
    time_col = next((c for c in ("time", "timestamp", "date", "ts_ms") if c in raw.columns), None)
    missing = [c for c in COLUMNS if c not in raw.columns]
    if time_col is None or missing:
        raise CandleDataError(
            f"{file}: CSV needs a time column (time/timestamp/date/ts_ms) and columns {list(COLUMNS)}; "
            f"missing {missing or ['time column']}"
        )
    times = raw[time_col]
    if pd.api.types.is_numeric_dtype(times):
        index = pd.to_datetime(times.astype("int64"), unit="ms", utc=True)
    else:
        index = pd.to_datetime(times, utc=True)
    frame = pd.DataFrame(raw[list(COLUMNS)].to_numpy(dtype=float), columns=list(COLUMNS))
    frame.index = pd.DatetimeIndex(index, name="time")
    return validate_candles(frame)


def validate_candles(df: pd.DataFrame, *, min_rows: int = 1) -> pd.DataFrame:
    """Check a candle frame and return it with float columns in canonical order.

    Raises :class:`CandleDataError` naming the first offending row for: a missing column or a
    non-UTC/non-datetime index, fewer than ``min_rows`` rows, NaN or infinite values,
    non-positive prices, negative volume, high below low (or below open/close, or low above
    them), and unsorted or duplicated timestamps.
    """
    if not isinstance(df, pd.DataFrame):
        raise CandleDataError(f"expected a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise CandleDataError(f"missing columns {missing} (need {list(COLUMNS)})")
    if not isinstance(df.index, pd.DatetimeIndex):
        raise CandleDataError("the index must be a DatetimeIndex of bar open times (UTC)")
    if df.index.tz is None or str(df.index.tz) not in {"UTC", "utc"}:
        raise CandleDataError(f"the index must be timezone-aware UTC, got tz={df.index.tz}")
    if len(df) < min_rows:
        raise CandleDataError(f"too few rows: {len(df)} candles, need at least {min_rows}")
    canonical = list(df.columns) == list(COLUMNS)
    values = df.to_numpy(dtype=float) if canonical else df[list(COLUMNS)].to_numpy(dtype=float)
    check_candle_values(values, df.index)
    if canonical and all(df.dtypes == np.float64):
        return df
    return pd.DataFrame(values, index=df.index, columns=list(COLUMNS))


def check_candle_values(values: np.ndarray, index: pd.DatetimeIndex) -> None:
    """The row checks of :func:`validate_candles` on an (n, 5) array, for the serving path,
    which already holds the numbers and should not pay for pandas column selection."""
    _check_values(values, index)
    _check_order(index)


def _first_bad(mask: np.ndarray) -> int | None:
    rows = np.flatnonzero(mask)
    return int(rows[0]) if rows.size else None


def _check_values(values: np.ndarray, index: pd.DatetimeIndex) -> None:
    o, h, low, c, v = values.T
    checks: list[tuple[Any, str]] = [
        (~np.isfinite(values).all(axis=1), "NaN or infinite value"),
        ((values[:, :4] <= 0).any(axis=1), "non-positive price"),
        (v < 0, "negative volume"),
        (h < low, "high below low"),
        ((h < np.maximum(o, c)) | (low > np.minimum(o, c)), "open/close outside the high-low range"),
    ]
    for mask, problem in checks:
        row = _first_bad(mask)
        if row is not None:
            raise CandleDataError(problem, row, index[row])


def _check_order(index: pd.DatetimeIndex) -> None:
    steps = np.diff(index.asi8)
    row = _first_bad(steps == 0)
    if row is not None:
        raise CandleDataError("duplicated timestamp", row + 1, index[row + 1])
    row = _first_bad(steps < 0)
    if row is not None:
        raise CandleDataError("timestamps not sorted ascending", row + 1, index[row + 1])


@dataclass(frozen=True)
class Gap:
    """Bars missing between two consecutive candles: ``after`` is the last bar before the
    hole, ``before`` the first bar after it."""

    after: pd.Timestamp
    before: pd.Timestamp
    missing_bars: int


def find_gaps(index: pd.DatetimeIndex, timeframe_sec: int) -> list[Gap]:
    """Every hole in ``index`` (bars expected every ``timeframe_sec`` seconds)."""
    stamps = epoch_seconds(index)
    missing = np.diff(stamps) // timeframe_sec - 1
    rows = np.flatnonzero(missing > 0)
    return [Gap(index[i], index[i + 1], int(missing[i])) for i in rows]


def missing_in_window(stamps_sec: np.ndarray, window: int, timeframe_sec: int) -> np.ndarray:
    """For each row t, how many bars are missing among the ``window`` bars ending at t
    (float, NaN for the first ``window - 1`` rows, which have no full window)."""
    out = np.full(len(stamps_sec), np.nan)
    if window <= 1:
        out[:] = 0.0
        return out
    if len(stamps_sec) >= window:
        span = (stamps_sec[window - 1 :] - stamps_sec[: len(stamps_sec) - window + 1]) // timeframe_sec
        out[window - 1 :] = span - (window - 1)
    return out


#: Holes of at most this many bars are filled with flat bars (features, serving, the backtest).
FILL_GAP_BARS = 1


def fill_short_gaps(
    values: np.ndarray, stamps_sec: np.ndarray, timeframe_sec: int, max_bars: int = FILL_GAP_BARS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``values`` (columns open, high, low, close, volume) with every hole of at most
    ``max_bars`` missing bars filled by flat bars at the previous close with volume 0; returns
    ``(values, stamps, positions)`` where ``positions[i]`` is row i's place in the filled arrays.

    A filled bar is built from the bar before it only, so no feature at or before a real bar can
    read a later one; larger holes are left as they are (the windows over them stay invalid)."""
    n = len(stamps_sec)
    if n < 2 or max_bars < 1:
        return values, stamps_sec, np.arange(n)
    missing = np.diff(stamps_sec) // timeframe_sec - 1
    fill = np.where((missing > 0) & (missing <= max_bars), missing, 0).astype(np.int64)
    if not fill.any():
        return values, stamps_sec, np.arange(n)
    positions = np.arange(n) + np.concatenate([[0], np.cumsum(fill)])
    out = np.empty((n + int(fill.sum()), values.shape[1]))
    stamps = np.empty(len(out), dtype=np.int64)
    out[positions], stamps[positions] = values, stamps_sec
    for row in np.flatnonzero(fill):
        close = values[row, 3]
        for k in range(1, int(fill[row]) + 1):
            out[positions[row] + k] = (close, close, close, close, 0.0)
            stamps[positions[row] + k] = stamps_sec[row] + k * timeframe_sec
    return out, stamps, positions


def filled_bar_times(stamps_sec: np.ndarray, timeframe_sec: int, max_bars: int = FILL_GAP_BARS) -> list[int]:
    """Open times (epoch seconds) of the bars :func:`fill_short_gaps` would fill in ``stamps_sec``."""
    missing = np.diff(stamps_sec) // timeframe_sec - 1
    rows = np.flatnonzero((missing > 0) & (missing <= max_bars))
    return [int(stamps_sec[r] + k * timeframe_sec) for r in rows for k in range(1, int(missing[r]) + 1)]
