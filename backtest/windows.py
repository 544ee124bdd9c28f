"""The walk-forward plan: train on a window, trade the next, roll.

::

    |-- warm-up --|------ train ------|-- embargo --|---- test k ----|
                                                     |-- train k+1 ... rolls by one test window

* The training frame handed to a model *ends* at ``train_end``: its last ``horizon`` rows have
  no label (``ml_integration.labels`` leaves them NaN), so no label reads a price at or after
  ``train_end``: that is the purge.
* ``embargo`` bars (at least the horizon) separate ``train_end`` from the first traded bar, so
  the model of a window never sees a bar of the window it trades, nor the bars just before it
  whose features overlap the test's.
* The warm-up bars before ``train_start`` only feed the first feature windows (200 bars);
  they carry no label of their own.

Times are bar *open* times; every interval is half-open ``[start, end)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from backtest.errors import BacktestInputError

__all__ = ["Window", "parse_duration", "plan_windows"]


@dataclass(frozen=True)
class Window:
    """One walk-forward step (all times are bar open times, intervals half-open)."""

    number: int
    data_start: pd.Timestamp  # warm-up begins
    train_start: pd.Timestamp
    train_end: pd.Timestamp  # exclusive: the last bar a model of this window sees is before it
    test_start: pd.Timestamp
    test_end: pd.Timestamp  # exclusive

    def to_dict(self) -> dict[str, str | int]:
        return {
            "number": self.number,
            "train_start": self.train_start.isoformat(),
            "train_end": self.train_end.isoformat(),
            "test_start": self.test_start.isoformat(),
            "test_end": self.test_end.isoformat(),
        }


def parse_duration(text: str, what: str) -> pd.Timedelta:
    """``180d``, ``4w``, ``36h`` → a Timedelta; a clear error for anything else."""
    units = {"d": "D", "w": "W", "h": "h"}
    raw = text.strip().lower()
    if len(raw) < 2 or raw[-1] not in units or not raw[:-1].isdigit() or int(raw[:-1]) <= 0:
        raise BacktestInputError(
            f"{what} {text!r}: give a positive whole number of days, weeks or hours, like 180d"
        )
    return pd.Timedelta(int(raw[:-1]), unit=units[raw[-1]])


def plan_windows(
    index: pd.DatetimeIndex,
    *,
    step_s: int,
    train: pd.Timedelta,
    test: pd.Timedelta,
    embargo_bars: int,
    warmup_bars: int,
    min_train_bars: int,
    start: pd.Timestamp | None = None,
    end: pd.Timestamp | None = None,
) -> list[Window]:
    """The windows over ``index`` trading ``[start, end)`` (default: from the first bar that has
    warm-up, a training window and the embargo before it, to the last bar). Raises
    :class:`BacktestInputError` saying what to change when they do not fit the data."""
    bar = pd.Timedelta(seconds=step_s)
    embargo = embargo_bars * bar
    warmup = warmup_bars * bar
    if train < min_train_bars * bar:
        raise BacktestInputError(
            f"--train-window {_days(train)} holds at most {int(train / bar)} bars; the models need at least "
            f"{min_train_bars} ({_days(min_train_bars * bar)}): lengthen --train-window"
        )
    if test < bar:
        raise BacktestInputError(f"--test-window {_days(test)} is shorter than one bar")
    first, last_end = index[0], index[-1] + bar
    earliest = first + warmup + train + embargo
    if earliest + test > last_end:
        raise BacktestInputError(
            f"too few rows: {len(index)} candles ({first} .. {index[-1]}) but warm-up ({warmup_bars} bars), "
            f"--train-window {_days(train)}, the embargo ({embargo_bars} bars) and one --test-window "
            f"{_days(test)} need {_days(warmup + train + embargo + test)}: give more history, or shorten "
            "--train-window or --test-window"
        )
    start = earliest if start is None else start
    end = last_end if end is None else min(end, last_end)
    if start < earliest:
        raise BacktestInputError(
            f"trading from {start} needs candles from {start - embargo - train - warmup} (warm-up "
            f"{warmup_bars} bars + --train-window {_days(train)} + embargo {embargo_bars} bars), "
            f"but the data starts at {first}: move --start to {earliest} or later, shorten "
            "--train-window, or give more history"
        )
    if end - start < test:
        raise BacktestInputError(
            f"the traded period {start} .. {end} ({_days(end - start)}) is shorter than one --test-window "
            f"({_days(test)}): move --start earlier or --end later, shorten --test-window, or give more data"
        )
    windows: list[Window] = []
    test_start = start
    while test_start < end:
        train_end = test_start - embargo
        train_start = train_end - train
        rows = int(((index >= train_start) & (index < train_end)).sum())
        if rows < min_train_bars:
            raise BacktestInputError(
                f"window {len(windows) + 1}: only {rows} candles between {train_start} and {train_end} "
                f"(need {min_train_bars}); the data has holes there: move --start past them"
            )
        windows.append(
            Window(len(windows) + 1, train_start - warmup, train_start, train_end, test_start,
                   min(test_start + test, end))
        )  # fmt: skip
        test_start += test
    return windows


def _days(delta: pd.Timedelta) -> str:
    days = delta / pd.Timedelta(days=1)
    return f"{days:g}d"
