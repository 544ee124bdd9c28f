"""Training targets and time-ordered, purged splits.

Label of bar t: the log return from the close of t to the close of t + horizon (the
*magnitude*, a signed fraction) and its sign (the *direction*, 1 = up, 0 = flat or down).
The last ``horizon`` rows have no label, nor does a row whose forward window straddles a gap of
more than ``max_missing_bars`` bars (its "5 bars ahead" would be some unknown longer time).

Splits keep time order. Between consecutive parts (train → calibration → test) ``gap`` rows
are dropped: a training label at row t looks ``horizon`` bars ahead, so without the gap the
last training labels would be computed from the same prices as the first test rows (purge /
embargo in López de Prado's terms). ``gap`` must be at least the horizon.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ml_integration.candles import epoch_seconds, infer_timeframe_seconds, missing_in_window

__all__ = [
    "LABEL_KINDS",
    "ClassLabels",
    "Labels",
    "TimeSplit",
    "class_labels",
    "lookahead_labels",
    "make_labels",
    "purged_folds",
    "purged_split",
    "three_class_labels",
    "triple_barrier_labels",
]


@dataclass(frozen=True)
class Labels:
    """Per-row targets; ``valid`` is False where there is no trustworthy label."""

    forward_return: np.ndarray
    direction: np.ndarray
    valid: np.ndarray
    horizon: int


def make_labels(
    ohlcv_df: pd.DataFrame, horizon: int, *, timeframe_sec: int | None = None, max_missing_bars: int = 0
) -> Labels:
    """Direction and magnitude ``horizon`` bars ahead for every row of a (validated) frame."""
    if horizon < 1:
        raise ValueError(f"horizon (target_periods) must be >= 1, got {horizon}")
    close = ohlcv_df["close"].to_numpy(dtype=float)
    stamps = epoch_seconds(ohlcv_df.index)
    tf = timeframe_sec or infer_timeframe_seconds(ohlcv_df.index)
    n = len(close)
    forward = np.full(n, np.nan)
    valid = np.zeros(n, dtype=bool)
    if n > horizon:
        forward[: n - horizon] = np.log(close[horizon:] / close[: n - horizon])
        missing_ahead = missing_in_window(stamps, horizon + 1, tf)[horizon:]
        valid[: n - horizon] = missing_ahead <= max_missing_bars
    forward[~valid] = np.nan
    direction = (np.nan_to_num(forward, nan=0.0) > 0).astype(np.int64)
    return Labels(forward_return=forward, direction=direction, valid=valid, horizon=horizon)


@dataclass(frozen=True)
class TimeSplit:
    """Positions (into the usable rows) of each part, in time order, with purge gaps between."""

    train: np.ndarray
    calibration: np.ndarray
    test: np.ndarray
    gap: int

    def describe(self) -> dict[str, int]:
        return {
            "train_rows": len(self.train),
            "calibration_rows": len(self.calibration),
            "test_rows": len(self.test),
            "purge_gap_rows": self.gap,
        }


def purged_split(
    n_rows: int, *, test_fraction: float, gap: int, calibration_fraction: float = 0.0
) -> TimeSplit:
    """Split ``n_rows`` time-ordered rows into train, calibration (optional) and test parts.

    The parts are contiguous and ordered; ``gap`` rows are dropped before the calibration part
    and before the test part.
    """
    if gap < 0:
        raise ValueError(f"gap must be >= 0, got {gap}")
    if (
        not 0 < test_fraction < 1
        or not 0 <= calibration_fraction < 1
        or test_fraction + calibration_fraction >= 1
    ):
        raise ValueError(
            f"fractions must be in (0, 1) and sum below 1: test={test_fraction}, "
            f"calibration={calibration_fraction}"
        )
    n_test = round(n_rows * test_fraction)
    n_cal = round(n_rows * calibration_fraction)
    gaps = gap * (2 if n_cal else 1)
    n_train = n_rows - n_test - n_cal - gaps
    if n_train < 1 or n_test < 1 or (calibration_fraction > 0 and n_cal < 1):
        raise ValueError(f"{n_rows} rows are too few to split with a purge gap of {gap}")
    train = np.arange(0, n_train)
    cal_start = n_train + (gap if n_cal else 0)
    calibration = np.arange(cal_start, cal_start + n_cal)
    test_start = (cal_start + n_cal if n_cal else n_train) + gap
    test = np.arange(test_start, n_rows)
    return TimeSplit(train=train, calibration=calibration, test=test, gap=gap)


def purged_folds(
    n_rows: int, *, n_folds: int, gap: int, min_train: int | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Expanding-window, time-ordered folds over ``n_rows`` rows: ``(train, test)`` positions.

    The rows after the first ``min_train`` (default: one fold's length) are cut into
    ``n_folds`` contiguous test blocks; each block is predicted by a model fit on every row
    before it, less ``gap`` purged rows. Every test row is thus predicted out of sample and in
    time order (the same rule the walk-forward backtest applies), which is what an out-of-fold
    calibrator, a stacking meta-learner or a tuning score needs. Never shuffled: a random
    k-fold on overlapping labels leaks the future into training.
    """
    if n_folds < 1:
        raise ValueError(f"n_folds must be >= 1, got {n_folds}")
    if gap < 0:
        raise ValueError(f"gap must be >= 0, got {gap}")
    fold = n_rows // (n_folds + 1)
    first = fold if min_train is None else int(min_train)
    test_rows = n_rows - first
    if first - gap < 1 or test_rows < n_folds:
        raise ValueError(
            f"{n_rows} rows are too few for {n_folds} folds after {first} training rows "
            f"with a purge gap of {gap}"
        )
    bounds = np.linspace(first, n_rows, n_folds + 1).round().astype(int)
    return [
        (np.arange(0, start - gap), np.arange(start, end))
        for start, end in itertools.pairwise(bounds)
    ]


# --- label kinds for the model zoo (``ml_integration.ensemble``) -------------------------------
#
# Every kind reads only the prices of its own label window (bars t+1 .. t+horizon), so a label
# never depends on bars beyond it, and a row whose window straddles a gap has no label (the
# ``valid`` rule of :func:`make_labels`). Classes: 1 up, -1 down, 0 neither (sideways / vertical
# barrier); ``lookahead`` is binary (1 / 0).

LABEL_KINDS: tuple[str, ...] = ("binary", "three_class", "lookahead", "triple_barrier")


@dataclass(frozen=True)
class ClassLabels:
    """Per-row classes of one label kind; ``valid`` is False where there is no label."""

    kind: str
    classes: np.ndarray
    valid: np.ndarray
    horizon: int

    def binary_target(self) -> tuple[np.ndarray, np.ndarray]:
        """``(y, usable)``: the 0/1 target a direction classifier learns and where it is defined.
        Binary kinds use every valid row; three-class and triple-barrier keep the decisive rows
        (up vs down) and leave out the sideways / vertical-barrier ones, so P(1) stays a
        P(up) the strategy can trade (p ≥ 0.5 is long)."""
        decisive_only = self.kind in ("three_class", "triple_barrier")
        usable = self.valid & (self.classes != 0) if decisive_only else self.valid
        return (self.classes == 1).astype(np.int64), usable


def _forward_windows(values: np.ndarray, horizon: int) -> np.ndarray:
    """(n, horizon): values[t+1 .. t+horizon] for each t (NaN beyond the end)."""
    padded = np.concatenate([values, np.full(horizon, np.nan)])
    return padded[np.arange(len(values))[:, None] + np.arange(1, horizon + 1)[None, :]]


def three_class_labels(close: np.ndarray, horizon: int, threshold: float) -> np.ndarray:
    """1 when the log return to ``horizon`` bars ahead exceeds ``threshold``, -1 below
    ``-threshold``, 0 (sideways) within it; 0 where there is no future close."""
    c = np.asarray(close, dtype=float)
    forward = _forward_windows(c, horizon)[:, -1]
    r = np.log(forward / c)
    return np.where(r > threshold, 1, np.where(r < -threshold, -1, 0)).astype(np.int64)


def lookahead_labels(close: np.ndarray, horizon: int, threshold: float) -> np.ndarray:
    """1 when some close of the next ``horizon`` bars is at least ``threshold`` (a fraction)
    above this close (a long entered here could have taken that profit), else 0."""
    c = np.asarray(close, dtype=float)
    best = np.nanmax(np.where(np.isnan(w := _forward_windows(c, horizon)), -np.inf, w), axis=1)
    return (best >= c * (1.0 + threshold)).astype(np.int64)


def triple_barrier_labels(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, horizon: int, width: np.ndarray | float
) -> np.ndarray:
    """López de Prado's triple barrier: from close(t), an upper barrier at close·(1 + width)
    and a lower one at close·(1 − width) (``width`` a fraction, per row or one value; ATR / close
    times a multiple for ATR barriers), and a vertical barrier ``horizon`` bars later. The label
    is the first barrier touched by the highs and lows of bars t+1 .. t+horizon: 1 upper, -1
    lower, 0 vertical (neither). A bar that reaches both barriers cannot say which came first
    inside it: 0, like the vertical barrier."""
    c = np.asarray(close, dtype=float)
    w = np.broadcast_to(np.asarray(width, dtype=float), c.shape)
    up_hit = _forward_windows(np.asarray(high, dtype=float), horizon) >= (c * (1 + w))[:, None]
    down_hit = _forward_windows(np.asarray(low, dtype=float), horizon) <= (c * (1 - w))[:, None]
    never = horizon  # index past the window
    first_up = np.where(up_hit.any(axis=1), up_hit.argmax(axis=1), never)
    first_down = np.where(down_hit.any(axis=1), down_hit.argmax(axis=1), never)
    return np.where(first_up < first_down, 1, np.where(first_down < first_up, -1, 0)).astype(np.int64)


def class_labels(
    ohlcv_df: pd.DataFrame,
    kind: str,
    horizon: int,
    *,
    threshold: float = 0.005,
    atr: np.ndarray | None = None,
    barrier_atr: float | None = None,
    timeframe_sec: int | None = None,
    max_missing_bars: int = 0,
) -> ClassLabels:
    """Labels of ``kind`` (one of :data:`LABEL_KINDS`) ``horizon`` bars ahead.

    ``threshold``: the sideways band (three-class), the profit (lookahead) or the barrier width
    (triple barrier), as a fraction of the close. ``barrier_atr`` with ``atr`` (ATR(14) in price
    units per row) sets the triple barrier at that many ATRs instead."""
    if kind not in LABEL_KINDS:
        raise ValueError(f"unknown label kind {kind!r}; known: {', '.join(LABEL_KINDS)}")
    if threshold < 0:
        raise ValueError(f"label threshold must be >= 0, got {threshold}")
    base = make_labels(ohlcv_df, horizon, timeframe_sec=timeframe_sec, max_missing_bars=max_missing_bars)
    close = ohlcv_df["close"].to_numpy(dtype=float)
    if kind == "binary":
        classes = base.direction
    elif kind == "three_class":
        classes = three_class_labels(close, horizon, threshold)
    elif kind == "lookahead":
        classes = lookahead_labels(close, horizon, threshold)
    else:
        width: np.ndarray | float = threshold
        if barrier_atr is not None:
            if atr is None:
                raise ValueError("ATR barriers need the ATR of every row")
            width = barrier_atr * np.asarray(atr, dtype=float) / close
        classes = triple_barrier_labels(
            ohlcv_df["high"].to_numpy(dtype=float),
            ohlcv_df["low"].to_numpy(dtype=float),
            close,
            horizon,
            width,
        )
    valid = base.valid & np.isfinite(np.broadcast_to(close, base.valid.shape))
    return ClassLabels(kind=kind, classes=np.where(valid, classes, 0), valid=valid, horizon=horizon)
